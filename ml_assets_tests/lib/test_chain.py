"""The chain's pure rules on hand-built events: what a replay proves, how tables disagree with it, keys and anchors."""

from __future__ import annotations

import datetime as dt

from lib.chain import (
    ATTESTED,
    GENESIS,
    anchor_problems,
    check_chain,
    event_hash,
    event_mac,
    facts_text,
    replay,
    table_problems,
)

AT = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _chain(*steps: tuple[str, str | None, dict | None], key: str | None = None) -> list[dict]:
    events, prev = [], GENESIS
    for seq, (action, version, facts) in enumerate(steps, start=1):
        row = {"seq": seq, "at": AT, "action": action, "version": version, "previous_champion": None, "actor": "t", "reason": "r"}
        row.update(run_id=None, prev_hash=prev, facts=None if facts is None else facts_text(facts))
        row["hash"] = event_hash(row)
        row["mac"] = event_mac(key, row["hash"]) if key else None
        events.append(row)
        prev = row["hash"]
    return events


def _registered(version: str, n: int) -> list[tuple[str, str | None, dict | None]]:
    return [
        ("registered", version, {"kind": "lgbm", "artifact_sha256": f"{n:064x}", "reference_sha256": None}),
        ("exported", version, {"onnx_sha256": f"{n + 100:064x}"}),
        ("parity_passed", version, {"onnx_sha256": f"{n + 100:064x}"}),
    ]


def _row(version: str, n: int, status: str) -> dict:
    return {
        "version": version,
        "kind": "lgbm",
        "status": status,
        "artifact_sha256": f"{n:064x}",
        "reference_sha256": None,
        "onnx_sha256": f"{n + 100:064x}",
        "parity_passed": True,
    }


def test_a_replay_gives_the_champion_status_digests_keys_and_erasures() -> None:
    events = _chain(
        *_registered("a", 1),
        *_registered("b", 2),
        ("promoted", "a", {}),
        ("promoted", "b", {}),
        ("apikey_created", None, {"key_id": "k1", "name": "p", "scopes": ["predict"], "salt": "s", "digest": "d"}),
        ("apikey_revoked", None, {"key_ids": ["k1"]}),
        ("erased", None, {"id_hash": "h" * 64}),
        ("exported", "a", {"onnx_sha256": "f" * 64}),  # re-exported: parity unknown again
    )
    state = replay(events)
    assert state.champion == "b" and state.versions["a"].status == "archived" and state.versions["b"].status == "champion"
    assert state.versions["a"].onnx_sha256 == "f" * 64 and state.versions["a"].parity_passed is None
    assert state.keys["k1"].revoked and state.erased == {"h" * 64} and state.attested
    assert (state.link.seq, state.link.hash) == (events[-1]["seq"], events[-1]["hash"])
    # Replaying in two parts gives the same state (the service reads only new events).
    assert replay(events[5:], replay(events[:5])) == state


def test_tables_are_compared_with_the_replay() -> None:
    state = replay(_chain(*_registered("a", 1), *_registered("b", 2), ("promoted", "a", {})))
    good = [_row("a", 1, "champion"), _row("b", 2, "candidate")]
    assert table_problems(state, good, [], set()) == []
    switched = [_row("a", 1, "archived"), _row("b", 2, "champion")]
    problems = table_problems(state, switched, [], set())
    assert "the champion is ['b'] in model_versions, a in the chain" in problems and len(problems) == 3
    inserted = [*good, _row("c", 3, "candidate")]
    assert table_problems(state, inserted, [], set()) == ["model_versions row c is not in the chain: inserted behind its back"]


def test_an_older_chain_is_unchecked_until_attested_then_checked() -> None:
    legacy = _chain(("registered", "a", None), ("promoted", "a", None))
    assert not replay(legacy).attested and table_problems(replay(legacy), [_row("x", 9, "champion")], [], set()) == []
    snapshot = {"champion": "a", "versions": {"a": {k: v for k, v in _row("a", 1, "champion").items() if k != "version"}}}
    attested = replay(_chain(("registered", "a", None), ("promoted", "a", None), (ATTESTED, None, {**snapshot, "keys": {}, "erased": []})))
    assert attested.attested and attested.champion == "a" and table_problems(attested, [_row("a", 1, "champion")], [], set()) == []


def test_under_a_key_an_event_without_its_mac_is_found() -> None:
    key = "k3y"
    events = _chain(*_registered("a", 1), key=key)
    assert check_chain(events, (3, events[-1]["hash"]), key) == []
    forged = _chain(*_registered("a", 1), ("promoted", "a", {}), key=None)
    forged[:3] = events  # the genuine keyed events, then one appended without the key
    forged[3]["prev_hash"] = events[-1]["hash"]
    forged[3]["hash"] = event_hash(forged[3])
    head = (4, forged[3]["hash"])
    assert check_chain(forged, head) == []  # well hashed: the unkeyed chain cannot tell
    assert [p.problem for p in check_chain(forged, head, key)] == [
        "the event carries no MAC in a keyed chain: appended without the chain key (forged?)"
    ]


def test_anchor_problems_name_a_cut_tail_a_rewrite_and_unanchored_events() -> None:
    events = _chain(*_registered("a", 1))
    anchors = [{"seq": e["seq"], "hash": e["hash"]} for e in events]
    assert anchor_problems(events, anchors) == []
    assert anchor_problems(events[:2], anchors) == ["event 3 was anchored outside the database but is not in the chain: the tail was cut"]
    rewritten = [*events[:2], {**events[2], "hash": "0" * 64}]
    assert anchor_problems(rewritten, anchors)[0].startswith("event 3: its hash differs from the anchor")
    assert anchor_problems(events, anchors[:1])[0].startswith("events 2..3 have no anchor outside the database")
