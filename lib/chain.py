"""The registry's hash chain and what it proves: event hashes, the optional key, and the state replayed from the events.

Pure rules; `resources/registry/` stores and reads what these compute.

Every event carries the sha256 of the one before it, so a rewritten, removed
or reordered event breaks the chain. Since the facts that matter travel in the
events themselves (`facts`: a version's artifact digests, its parity verdict,
an API key's digest and scopes, an erased id's hash), the registry's tables can
be replayed from the chain (`replay`) and compared with it (`table_problems`):
a champion switched, a digest swapped or a key inserted in a table, behind the
chain's back, disagrees with the replay. With a key (`event_mac`, HMAC-SHA256 of
each event's hash under a secret) an event appended by someone without the key
is found too, not just one that breaks the chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

# The hash a chain starts from: 64 zeros, so the first event's `prev_hash` is well defined.
GENESIS = "0" * 64

# The fields of an event that its hash covers, in this order; `at` to whole seconds (MariaDB's
# DATETIME keeps no fractions by default, and a hash must survive the round trip through any database).
# `facts` is covered when present; events from before it existed keep their hashes.
CHAINED = ("seq", "at", "action", "version", "previous_champion", "actor", "reason", "run_id", "prev_hash")

# Changes of champion, by a person (promoted, rolled_back) or by the rollout policy.
CHAMPION_CHANGES = ("promoted", "rolled_back", "auto_rolled_back", "auto_promoted")
# The event that adopts the tables of a registry whose older events carry no facts (written once, on upgrade).
ATTESTED = "tables_attested"
# The first event under a chain key, written when a key is set on a chain that has none yet.
KEYED = "chain_keyed"

CANDIDATE, CHAMPION, ARCHIVED = "candidate", "champion", "archived"


def event_at(moment: dt.datetime | None = None) -> dt.datetime:
    """An event's time as stored and hashed: UTC, whole seconds."""
    moment = moment or dt.datetime.now(dt.UTC)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(microsecond=0)


def event_hash(event: Mapping[str, Any]) -> str:
    """sha256 over the event's chained fields (canonical JSON), `prev_hash` and `facts` included: changing, removing or
    reordering any earlier event changes every hash after it."""
    body = {k: event.get(k) for k in CHAINED}
    if event.get("facts") is not None:
        body["facts"] = event["facts"]
    body["at"] = event_at(body["at"]).isoformat() if isinstance(body["at"], dt.datetime) else body["at"]
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def event_mac(key: str, hash_: str) -> str:
    """HMAC-SHA256 of an event's hash under the chain key: only a holder of the key can append an event that verifies."""
    return hmac.new(key.encode(), b"churn-chain\x00" + hash_.encode(), hashlib.sha256).hexdigest()


def facts_text(facts: Mapping[str, Any] | None) -> str | None:
    """Facts as stored and hashed: canonical JSON, so the same facts give the same text in every database."""
    return None if facts is None else json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class ChainProblem:
    seq: int | None
    problem: str


@dataclass(frozen=True)
class Link:
    """Where a chain (or the part of it already checked) ends: the last seq, its hash, whether it was keyed."""

    seq: int = 0
    hash: str = GENESIS
    keyed: bool = False


def check_chain(
    events: Iterable[Mapping[str, Any]], head: tuple[int, str] | None, key: str | None = None, start: Link | None = None
) -> list[ChainProblem]:
    """Every way the stored events (in `seq` order, after `start`) disagree with an unbroken chain ending at `head`.

    A rewritten row breaks its own hash; a deleted row leaves a gap in `seq` and
    a `prev_hash` that names nothing; a truncated tail disagrees with the head.
    Under a key, every event from the first keyed one on must carry its MAC: an
    event appended without the key (a forged one, with the head moved to it) has
    none or a wrong one.
    """
    problems: list[ChainProblem] = []
    start = start or Link()
    expected_prev, expected_seq, keyed = start.hash, start.seq + 1, start.keyed
    for event in events:
        seq = event["seq"]
        if seq != expected_seq:
            problems.append(ChainProblem(seq, f"sequence jumps from {expected_seq - 1} to {seq}: events were removed"))
        if event["prev_hash"] != expected_prev:
            problems.append(ChainProblem(seq, "prev_hash does not match the hash of the event before it"))
        if event_hash(event) != event["hash"]:
            problems.append(ChainProblem(seq, "the event's fields do not match its hash: it was rewritten"))
        if key is not None:
            mac = event.get("mac")
            if mac and not hmac.compare_digest(mac, event_mac(key, event["hash"])):
                problems.append(ChainProblem(seq, "the event's MAC does not match the chain key: forged, or the key was changed"))
            elif not mac and keyed:
                problems.append(ChainProblem(seq, "the event carries no MAC in a keyed chain: appended without the chain key (forged?)"))
            keyed = keyed or bool(mac)
        expected_prev, expected_seq = event["hash"], seq + 1
    last = (expected_seq - 1, expected_prev)
    if head is not None and head != last and not (head[0] == 0 and last[0] == 0):
        problems.append(ChainProblem(head[0], f"the chain head says event {head[0]} ends the chain; the table ends at {last[0]}"))
    return problems


# --- the state the chain proves -------------------------------------------------------------


@dataclass(frozen=True)
class VersionFacts:
    kind: str | None
    status: str
    artifact_sha256: str | None = None
    reference_sha256: str | None = None
    onnx_sha256: str | None = None
    parity_passed: bool | None = None


@dataclass(frozen=True)
class KeyFacts:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    salt: str
    digest: str
    revoked: bool = False


@dataclass
class ChainState:
    """The registry as the events say it is: the champion, each version's digests and status, the keys, erased ids."""

    link: Link = field(default_factory=Link)
    champion: str | None = None
    versions: dict[str, VersionFacts] = field(default_factory=dict)
    keys: dict[str, KeyFacts] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)
    # Whether the tables can be checked against this state: true for a chain that carried facts from its first event
    # (every chain this release starts), false after events of an older release until their tables were attested.
    attested: bool = True
    facts_seen: bool = False

    def copy(self) -> ChainState:
        return replace(self, versions=dict(self.versions), keys=dict(self.keys), erased=set(self.erased))


def _facts(event: Mapping[str, Any]) -> dict[str, Any]:
    text = event.get("facts")
    return json.loads(text) if text else {}


def replay(events: Iterable[Mapping[str, Any]], state: ChainState | None = None) -> ChainState:
    """Apply events (chain order, already checked) to `state` (a copy is returned): what the chain proves now."""
    out = state.copy() if state else ChainState()
    for event in events:
        _apply(out, event["action"], event.get("version"), _facts(event), event.get("facts") is not None)
        out.link = Link(event["seq"], event["hash"], out.link.keyed or bool(event.get("mac")))
    return out


def _apply(out: ChainState, action: str, version: str | None, facts: dict[str, Any], has_facts: bool) -> None:
    if not has_facts and not out.facts_seen:
        out.attested = False
    out.facts_seen = out.facts_seen or has_facts
    if action == ATTESTED:
        out.attested = True
        out.champion = facts.get("champion")
        out.versions = {v: VersionFacts(**f) for v, f in facts.get("versions", {}).items()}
        out.keys = {k: KeyFacts(**{**f, "scopes": tuple(f["scopes"])}) for k, f in facts.get("keys", {}).items()}
        out.erased |= set(facts.get("erased", []))
    elif action == "registered" and version:
        out.versions[version] = VersionFacts(
            kind=facts.get("kind"),
            status=CANDIDATE,
            artifact_sha256=facts.get("artifact_sha256"),
            reference_sha256=facts.get("reference_sha256"),
        )
    elif action == "exported" and version in out.versions:
        out.versions[version] = replace(out.versions[version], onnx_sha256=facts.get("onnx_sha256"), parity_passed=None)
    elif action in ("parity_passed", "parity_failed") and version in out.versions:
        if facts.get("onnx_sha256") in (None, out.versions[version].onnx_sha256):
            out.versions[version] = replace(out.versions[version], parity_passed=action == "parity_passed")
    elif action in CHAMPION_CHANGES and version:
        if out.champion and out.champion != version and out.champion in out.versions:
            out.versions[out.champion] = replace(out.versions[out.champion], status=ARCHIVED)
        if version in out.versions:
            out.versions[version] = replace(out.versions[version], status=CHAMPION)
        out.champion = version
    elif action == "apikey_created" and facts:
        out.keys[facts["key_id"]] = KeyFacts(facts["key_id"], facts["name"], tuple(facts["scopes"]), facts["salt"], facts["digest"])
    elif action == "apikey_revoked":
        for key_id in facts.get("key_ids", []):
            if key_id in out.keys:
                out.keys[key_id] = replace(out.keys[key_id], revoked=True)
    elif action == "erased" and facts.get("id_hash"):
        out.erased.add(facts["id_hash"])


def attestation(
    champion: str | None, versions: Iterable[Mapping[str, Any]], keys: Iterable[Mapping[str, Any]], erased: Iterable[str]
) -> dict[str, Any]:
    """The facts of a `tables_attested` event: the tables as they are at the upgrade, from then on under the chain."""
    return {
        "champion": champion,
        "versions": {r["version"]: asdict_version(r) for r in versions},
        "keys": {
            k["key_id"]: {
                "key_id": k["key_id"],
                "name": k["name"],
                "scopes": sorted(k["scopes"].split(",")),
                "salt": k["salt"],
                "digest": k["digest"],
                "revoked": k["revoked_at"] is not None,
            }
            for k in keys
        },
        "erased": sorted(erased),
    }


def asdict_version(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "kind": row["kind"],
        "status": row["status"],
        "artifact_sha256": row["artifact_sha256"],
        "reference_sha256": row["reference_sha256"],
        "onnx_sha256": row["onnx_sha256"],
        "parity_passed": None if row["parity_passed"] is None else bool(row["parity_passed"]),
    }


# --- tables against the chain ---------------------------------------------------------------


def version_problems(state: ChainState, row: Mapping[str, Any] | None, version: str) -> list[str]:
    """How one model_versions row disagrees with what the chain proves of that version (empty: it agrees)."""
    proved = state.versions.get(version)
    if row is None:
        return [f"model_versions has no row for {version}, which the chain registered"] if proved else []
    if proved is None:
        return [f"model_versions row {version} is not in the chain: inserted behind its back"]
    stored = asdict_version(row)
    return [
        f"model_versions row {version}: {name} is {stored[name]!r} in the table, {getattr(proved, name)!r} in the chain"
        for name in ("status", "artifact_sha256", "reference_sha256", "onnx_sha256", "parity_passed")
        if stored[name] != getattr(proved, name)
    ]


def key_problems(state: ChainState, row: Mapping[str, Any]) -> list[str]:
    """How one api_keys row disagrees with the chain (an active row the chain never created or has revoked)."""
    key_id, proved = row["key_id"], state.keys.get(row["key_id"])
    if proved is None:
        return [f"api_keys row {key_id} ({row['name']}) is not in the chain: inserted behind its back"]
    problems = [
        f"api_keys row {key_id}: {name} differs from the chain"
        for name, stored in (("name", row["name"]), ("salt", row["salt"]), ("digest", row["digest"]))
        if stored != getattr(proved, name)
    ]
    if tuple(sorted(row["scopes"].split(","))) != tuple(sorted(proved.scopes)):
        problems.append(f"api_keys row {key_id}: scopes {row['scopes']} in the table, {','.join(proved.scopes)} in the chain")
    if proved.revoked and row["revoked_at"] is None:
        problems.append(f"api_keys row {key_id}: active in the table, revoked in the chain")
    return problems


def table_problems(
    state: ChainState, versions: Iterable[Mapping[str, Any]], keys: Iterable[Mapping[str, Any]], erased: set[str]
) -> list[str]:
    """Every disagreement between the registry's tables and the chain's replay (empty before the chain carries facts)."""
    if not state.attested:
        return []
    rows = {r["version"]: r for r in versions}
    problems = [p for v in sorted(set(rows) | set(state.versions)) for p in version_problems(state, rows.get(v), v)]
    table_champions = sorted(v for v, r in rows.items() if r["status"] == CHAMPION)
    if table_champions != ([state.champion] if state.champion else []):
        problems.append(f"the champion is {table_champions or 'none'} in model_versions, {state.champion or 'none'} in the chain")
    key_rows = list(keys)
    problems += [p for k in key_rows for p in key_problems(state, k)]
    missing = {k for k, f in state.keys.items() if not f.revoked} - {k["key_id"] for k in key_rows}
    problems += [f"api_keys has no row for key {k}, which the chain created" for k in sorted(missing)]
    if lost := state.erased - erased:
        problems.append(f"erased_customers lacks {len(lost)} erased id hash(es) the chain recorded (they are still refused)")
    return list(dict.fromkeys(problems))


def anchor_problems(events: Sequence[Mapping[str, Any]], anchors: Sequence[Mapping[str, Any]]) -> list[str]:
    """How the chain disagrees with the anchors kept outside the database: an anchored event missing or different
    (the tail was cut, or rewritten with new hashes), or events after the newest anchor (appended without going
    through the registry, or by a process that could not reach the anchor)."""
    by_seq = {e["seq"]: e for e in events}
    problems = []
    for anchor in anchors:
        event = by_seq.get(anchor["seq"])
        if anchor.get("unreadable"):
            problems.append(f"anchor {anchor['seq']} cannot be read")
        elif event is None:
            problems.append(f"event {anchor['seq']} was anchored outside the database but is not in the chain: the tail was cut")
        elif event["hash"] != anchor["hash"]:
            problems.append(f"event {anchor['seq']}: its hash differs from the anchor kept outside the database: the chain was rewritten")
    newest = max((a["seq"] for a in anchors), default=0)
    unanchored = [e["seq"] for e in events if e["seq"] > newest]
    if unanchored:
        problems.append(
            f"events {unanchored[0]}..{unanchored[-1]} have no anchor outside the database: appended behind the registry's back, "
            "or the anchor could not be written (the registry's log says so)"
        )
    return problems
