"""Tamper evidence and keys in the registry, on SQLite and PostgreSQL: the event hash chain, append-only triggers,
`churn registry verify`, API keys stored as salted digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from lib.chain import GENESIS, check_chain, event_hash
from lib.governance import key_matches, parse_token
from ml_assets_tests.conftest import drop_event_guards, register_stored, register_version
from resources import ArtifactStore, ModelRegistry, RegistryError


@pytest.fixture
def registry(any_registry: ModelRegistry) -> ModelRegistry:
    return any_registry


def _history(registry: ModelRegistry) -> None:
    register_version(registry, "lgbm-000000000001")
    register_version(registry, "torch-000000000002", kind="torch")
    registry.promote("lgbm-000000000001", actor="pipeline", reason="first", run_id="r1")
    registry.promote("torch-000000000002", actor="pipeline", reason="better", run_id="r2")


def test_every_event_is_chained_to_the_one_before(registry: ModelRegistry) -> None:
    _history(registry)
    events, head = registry.chain()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(events, events[1:], strict=False))
    assert all(event_hash(e) == e["hash"] for e in events)
    assert head == (events[-1]["seq"], events[-1]["hash"])
    assert check_chain(events, head) == []


def test_the_database_refuses_to_change_or_remove_an_event(registry: ModelRegistry) -> None:
    _history(registry)
    events = registry._t.events
    for statement in (events.update().values(actor="mallory"), events.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), registry.engine.begin() as conn:
            conn.execute(statement)
    assert registry.chain()[0][1]["actor"] == "pipeline"


@pytest.mark.parametrize("tamper", ["rewrite", "delete", "truncate_tail"])
def test_verify_finds_a_rewritten_removed_or_truncated_event(registry: ModelRegistry, tamper: str) -> None:
    _history(registry)
    drop_event_guards(registry)
    events, head = registry.chain()
    t = registry._t.events
    with registry.engine.begin() as conn:
        if tamper == "rewrite":
            # A decision's reason quietly rewritten.
            conn.execute(t.update().where(t.c.seq == events[-1]["seq"]).values(reason="looks fine"))
        elif tamper == "delete":
            conn.execute(t.delete().where(t.c.seq == 3))
        else:
            conn.execute(t.delete().where(t.c.seq == events[-1]["seq"]))
    problems = check_chain(*registry.chain())
    assert problems, tamper
    expected = {"rewrite": "rewritten", "delete": "removed", "truncate_tail": "chain head"}[tamper]
    assert any(expected in p.problem for p in problems), problems


def test_verify_checks_every_artifact_against_its_registered_sha256(tmp_path: Path) -> None:
    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'registry.sqlite'}")
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    register_stored(registry, store, "lgbm-00000000000f", onnx=b"onnx graph")
    assert registry.verify(store) == []
    Path(registry.get("lgbm-00000000000f").onnx_uri).write_bytes(b"swapped graph")
    problems = registry.verify(store)
    assert len(problems) == 1 and "lgbm-00000000000f onnx artifact" in problems[0]


def test_an_old_events_table_is_chained_on_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE registry_events (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, action VARCHAR(32) NOT NULL, "
                "version VARCHAR(64), previous_champion VARCHAR(64), actor VARCHAR(128) NOT NULL, reason TEXT NOT NULL, run_id VARCHAR(64))"
            )
        )
        for i in range(3):
            conn.execute(
                sa.text(
                    "INSERT INTO registry_events (at, action, actor, reason) VALUES ('2025-01-0' || :d || ' 10:00:00', 'kept', 'p', 'r')"
                ),
                {"d": i + 1},
            )
    registry = ModelRegistry(url=url)
    events, head = registry.chain()
    # The three old events chained, then one event that brings the tables (as they are now) under the chain.
    assert [e["seq"] for e in events] == [1, 2, 3, 4] and check_chain(events, head) == []
    assert events[3]["action"] == "tables_attested" and [e["facts"] for e in events[:3]] == [None] * 3
    registry.keep(None, reason="after the upgrade", run_id=None)
    assert check_chain(*registry.chain()) == [] and registry.table_problems() == []
    assert ModelRegistry(url=url).chain()[0][-1]["action"] == "kept", "attested once, not at every start"


def test_api_keys_are_stored_as_salted_digests_only(registry: ModelRegistry) -> None:
    token = registry.create_api_key("partner-a", ["predict"], actor="test")
    key_id, secret = parse_token(token)
    (row,) = registry.api_keys()
    assert row["key_id"] == key_id and row["scopes"] == "predict" and key_matches(row["salt"], row["digest"], secret)
    # Nothing stored is the secret or its plain hash.
    with registry.engine.connect() as conn:
        dump = repr(conn.execute(sa.select(registry._t.api_keys)).all()) + repr(registry.events(50))
    assert secret not in dump and hashlib.sha256(secret.encode()).hexdigest() not in dump
    with pytest.raises(RegistryError, match="active key"):
        registry.create_api_key("partner-a", ["predict"], actor="test")
    with pytest.raises(ValueError, match="scope"):
        registry.create_api_key("partner-b", ["admin"], actor="test")
    assert registry.revoke_api_key("partner-a", actor="test") == 1 and registry.api_keys() == []
    assert [e["action"] for e in registry.events(2)] == ["apikey_revoked", "apikey_created"]
    assert check_chain(*registry.chain()) == []


def test_the_prediction_record_appends_expires_and_forgets_one_customer(registry: ModelRegistry) -> None:
    import datetime as dt

    from lib.governance import id_hash

    now = dt.datetime.now(dt.UTC)
    rows = [
        {"at": at, "request_id": f"r{i}", "key_name": "k", "customer_id": c, "status": 200, "churn_probability": 0.25, "model_version": "v"}
        for i, (at, c) in enumerate([(now, "A1"), (now, "B2"), (now - dt.timedelta(days=500), "B2")])
    ]
    registry.record_predictions(rows)
    assert len(registry.predictions()) == 3
    assert registry.expire_predictions(now - dt.timedelta(days=400)) == 1
    with pytest.raises(RegistryError, match="reason"):
        registry.record_erasure("A1", actor="test", reason=" ", removed={})
    digest = registry.record_erasure("A1", actor="test", reason="request 7", removed={"lake_rows": 3})
    assert digest == id_hash("A1") and registry.erased_hashes() == {digest}
    assert [p["customer_id"] for p in registry.predictions()] == ["B2"]
    event = registry.events(1)[0]
    assert event["action"] == "erased" and digest in event["reason"] and "prediction_log 1" in event["reason"]
    assert "A1" not in event["reason"].replace(digest, "")
    assert check_chain(*registry.chain()) == []


def test_a_keyed_erasure_hash_cannot_be_tested_without_the_key_and_old_plain_ones_still_count(tmp_path: Path) -> None:
    import polars as pl

    from lib.governance import id_hash

    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    plain = ModelRegistry(url=url)
    plain.record_erasure("1001", actor="test", reason="before the key was set", removed={})
    keyed = ModelRegistry(url=url, erasure_key="k3y-from-the-environment")
    digest = keyed.record_erasure("1002", actor="test", reason="after", removed={})
    assert digest == id_hash("1002", "k3y-from-the-environment") != id_hash("1002")
    assert keyed.erasure_scheme == "hmac-sha256" and f"hmac-sha256:{digest}" in keyed.events(1)[0]["reason"]
    # Trying every short id against the stored hashes finds nothing without the key.
    assert not {id_hash(str(n)) for n in range(900, 1100)} & {digest}
    frame = pl.DataFrame({"customer_id": ["1001", "1002", "1003", " 1002 "]})
    assert keyed.erased_rows(frame).to_list() == [True, True, False, True]
    assert plain.erased_rows(frame).to_list() == [True, False, False, False]  # without the key the keyed one is unknown


def test_a_local_erasure_key_is_generated_by_the_first_erasure_and_used_from_then_on(tmp_path: Path) -> None:
    """Without CHURN_ERASURE_KEY (local runs) no plain hash is kept: the first erasure makes an owner-only key file."""
    import os

    from lib.governance import id_hash

    key_file = tmp_path / "secrets" / "erasure.key"
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    registry = ModelRegistry(url=url, erasure_key_file=str(key_file))
    assert registry.is_erased(["1002"]) == [False] and not key_file.exists()  # reading never makes a key
    digest = registry.record_erasure("1002", actor="test", reason="asked", removed={})
    key = key_file.read_text().strip()
    assert os.stat(key_file).st_mode & 0o777 == 0o600 and len(key) == 64
    assert digest == id_hash("1002", key) != id_hash("1002") and registry.erasure_scheme == "hmac-sha256"
    # Another process of the same deployment finds the same key; an erasure recorded plain before a key is still refused.
    other = ModelRegistry(url=url, erasure_key_file=str(key_file))
    ModelRegistry(url=url).record_erasure("7", actor="test", reason="before the key", removed={})
    assert other.is_erased(["1002", "7", "1003"]) == [True, True, False]
