"""What the registry's hash chain proves, on SQLite, PostgreSQL and MariaDB: tables changed behind its back are refused
and found by verify; under the chain key a forged event with a moved head is found; the outside anchor finds a cut tail."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from lib.chain import GENESIS, event_hash, facts_text
from ml_assets_tests.conftest import drop_event_guards, insert_key_behind_the_chain, register_version
from resources import ModelRegistry
from resources.registry import ChainMismatch
from resources.registry.chain import ChainKeyMissing

KEY = "chain-key-of-the-test-deployment"


@pytest.fixture
def registry(any_registry: ModelRegistry) -> ModelRegistry:
    return any_registry


def _with(registry: ModelRegistry, **fields: object) -> ModelRegistry:
    """The same database through a registry resource with other settings (a key, an anchor)."""
    return ModelRegistry(url=registry.url, db_schema=registry.db_schema, **fields)


def _history(registry: ModelRegistry) -> None:
    register_version(registry, "lgbm-000000000001")
    register_version(registry, "torch-000000000002", kind="torch")
    registry.promote("lgbm-000000000001", actor="pipeline", reason="first", run_id="r1")


def _forge(registry: ModelRegistry, action: str, version: str | None, facts: dict | None = None) -> None:
    """What someone who can write the database but has no key can do: append a well-hashed event and move the head."""
    t = registry._t
    with registry.engine.begin() as conn:
        seq, prev = conn.execute(sa.select(t.head.c.seq, t.head.c.hash)).one()
        row = {
            "seq": seq + 1,
            "at": __import__("datetime").datetime(2025, 1, 1, tzinfo=__import__("datetime").UTC),
            "action": action,
            "version": version,
            "previous_champion": None,
            "actor": "pipeline",
            "reason": "looks routine",
            "run_id": None,
            "prev_hash": prev,
            "facts": facts_text(facts or {}),
        }
        row["hash"] = event_hash(row)
        conn.execute(t.events.insert().values(**row))
        conn.execute(t.head.update().values(seq=seq + 1, hash=row["hash"]))


def test_a_fresh_registry_agrees_with_its_chain(registry: ModelRegistry) -> None:
    _history(registry)
    registry.create_api_key("partner", ["predict"], actor="test")
    assert registry.table_problems() == [] and registry.verify(None) == []
    assert registry.trusted_champion().version == "lgbm-000000000001"
    good, problems = registry.trusted_api_keys()
    assert [k["name"] for k in good] == ["partner"] and problems == []


def test_a_champion_switched_in_the_table_is_refused_and_found(registry: ModelRegistry) -> None:
    _history(registry)
    versions = registry._t.versions
    with registry.engine.begin() as conn:
        conn.execute(versions.update().where(versions.c.version == "lgbm-000000000001").values(status="archived"))
        conn.execute(versions.update().where(versions.c.version == "torch-000000000002").values(status="champion"))
    assert registry.champion().version == "torch-000000000002"  # what a reader of the table alone would serve
    with pytest.raises(ChainMismatch, match="torch-000000000002 in model_versions, lgbm-000000000001 in the chain"):
        registry.trusted_champion()
    problems = registry.verify(None)
    assert any("status is 'champion' in the table, 'candidate' in the chain" in p for p in problems), problems


def test_a_swapped_artifact_digest_is_refused(registry: ModelRegistry) -> None:
    """Pointing the champion at another ONNX file (and its sha256) passes the artifact check; the chain does not agree."""
    _history(registry)
    versions = registry._t.versions
    with registry.engine.begin() as conn:
        conn.execute(versions.update().where(versions.c.version == "lgbm-000000000001").values(onnx_sha256="f" * 64))
    with pytest.raises(ChainMismatch, match="onnx_sha256"):
        registry.trusted_champion()
    assert any("onnx_sha256" in p for p in registry.table_problems())


def test_a_key_inserted_in_the_table_is_not_trusted(registry: ModelRegistry) -> None:

    _history(registry)
    registry.create_api_key("partner", ["predict"], actor="test")
    forged = insert_key_behind_the_chain(registry)
    good, problems = registry.trusted_api_keys()
    assert [k["name"] for k in good] == ["partner"]
    assert problems == [f"api_keys row {forged.key_id} (mallory) is not in the chain: inserted behind its back"]
    assert problems[0] in registry.verify(None)
    # A revoked key brought back to life in the table is refused the same way.
    registry.revoke_api_key("partner", actor="test")
    keys = registry._t.api_keys
    with registry.engine.begin() as conn:
        conn.execute(keys.update().where(keys.c.name == "partner").values(revoked_at=None))
    good, problems = registry.trusted_api_keys()
    assert good == [] and any("active in the table, revoked in the chain" in p for p in problems)


def test_an_erasure_deleted_from_its_table_is_still_refused(registry: ModelRegistry) -> None:
    _history(registry)
    registry.record_erasure("C00000042", actor="test", reason="asked", removed={})
    with registry.engine.begin() as conn:
        conn.execute(registry._t.erased.delete())
    assert registry.is_erased(["C00000042", "C00000043"]) == [True, False]
    assert any("erased_customers lacks 1" in p for p in registry.verify(None))


def test_under_the_chain_key_a_forged_event_with_a_moved_head_is_found(registry: ModelRegistry) -> None:
    _history(registry)
    keyed = _with(registry, chain_key=KEY)
    assert keyed.verify(None) == []  # the older events predate the key: one chain_keyed event starts the keyed part
    assert keyed.chain()[0][-1]["action"] == "chain_keyed" and keyed.chain()[0][-1]["mac"]
    keyed.promote("torch-000000000002", actor="pipeline", reason="better", run_id="r2")
    assert keyed.verify(None) == []
    # The forger promotes lgbm back with a perfectly hashed event and moves the head: the unkeyed chain cannot tell.
    _forge(registry, "promoted", "lgbm-000000000001")
    with registry.engine.begin() as conn:
        versions = registry._t.versions
        conn.execute(versions.update().values(status="archived"))
        conn.execute(versions.update().where(versions.c.version == "lgbm-000000000001").values(status="champion"))
    assert ModelRegistry(url=registry.url, db_schema=registry.db_schema).verify(None) == []
    problems = _with(registry, chain_key=KEY).verify(None)
    assert any("carries no MAC in a keyed chain" in p for p in problems), problems
    with pytest.raises(ChainMismatch, match="no MAC"):
        _with(registry, chain_key=KEY).trusted_champion()
    # And a process of the deployment that lacks the key is refused rather than writing an unkeyed event.
    with pytest.raises(ChainKeyMissing, match="CHURN_CHAIN_KEY"):
        _with(registry).keep(None, reason="no key", run_id=None)
    # A wrong key is told apart from a missing MAC.
    assert any("does not match the chain key" in p for p in _with(registry, chain_key="another key").verify(None))


def test_the_outside_anchor_finds_a_cut_tail(registry: ModelRegistry, tmp_path: Path) -> None:
    anchored = _with(registry, chain_anchor=str(tmp_path / "anchor"))
    _history(anchored)
    anchored.promote("torch-000000000002", actor="pipeline", reason="better", run_id="r2")
    events, head = anchored.chain()
    assert anchored.verify(None) == [] and len(list((tmp_path / "anchor").iterdir())) == len(events)
    # Cut the last promotion and move the head back to the genuine event before it: hashes and key cannot tell.
    drop_event_guards(registry)
    t = registry._t
    with registry.engine.begin() as conn:
        conn.execute(t.events.delete().where(t.events.c.seq == head[0]))
        conn.execute(t.head.update().values(seq=events[-2]["seq"], hash=events[-2]["hash"]))
        conn.execute(t.versions.update().values(status="candidate"))
        conn.execute(t.versions.update().where(t.versions.c.version == "lgbm-000000000001").values(status="champion"))
    assert ModelRegistry(url=registry.url, db_schema=registry.db_schema).verify(None) == []
    problems = _with(registry, chain_anchor=str(tmp_path / "anchor")).verify(None)
    assert problems == [f"event {head[0]} was anchored outside the database but is not in the chain: the tail was cut"], problems
    # An event appended behind the registry's back in the cut event's place differs from its anchor; one more has none.
    _forge(registry, "kept", None)
    _forge(registry, "kept", None)
    problems = _with(registry, chain_anchor=str(tmp_path / "anchor")).verify(None)
    assert f"event {head[0]}: its hash differs from the anchor kept outside the database: the chain was rewritten" in problems
    assert any(f"events {head[0] + 1}..{head[0] + 1} have no anchor outside the database" in p for p in problems), problems


def test_the_first_event_of_a_new_chain_starts_at_genesis(registry: ModelRegistry) -> None:
    register_version(registry, "lgbm-000000000001")
    first = registry.chain()[0][0]
    assert first["prev_hash"] == GENESIS and first["facts"] and '"artifact_sha256"' in first["facts"]


def test_an_older_registry_is_attested_once_then_checked(registry: ModelRegistry) -> None:
    """A registry an older release wrote (events without hashes or facts, 300 versions: an attestation over 64 kB, past
    MariaDB's TEXT) is chained and attested on first use; from then on the tables are checked against the chain."""
    import datetime as dt

    from resources.registry.tables import build_tables

    if registry.url.startswith("sqlite:///"):
        Path(registry.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(registry.url)
    md = sa.MetaData(schema=registry.db_schema)
    old_events = sa.Table(
        "registry_events",
        md,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("previous_champion", sa.String(64)),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    versions = build_tables(registry.db_schema).versions
    old_events.create(engine)
    versions.create(engine)
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        for i in range(300):
            version = f"lgbm-{i:012d}"
            conn.execute(
                versions.insert().values(
                    version=version,
                    kind="lgbm",
                    status="champion" if i == 299 else "archived" if i % 7 == 0 else "candidate",
                    created_at=now,
                    run_id=f"r{i}",
                    code_version="old",
                    data_window="{}",
                    features="[]",
                    params="{}",
                    metrics="{}",
                    artifact_uri=f"/a/{i}.txt",
                    artifact_sha256=f"{i:064x}",
                    onnx_uri=f"/a/{i}.onnx",
                    onnx_sha256=f"{i + 1:064x}",
                    parity="{}",
                    parity_passed=True,
                )
            )
            conn.execute(
                old_events.insert().values(at=now, action="registered", version=version, actor="pipeline", reason="old", run_id=f"r{i}")
            )
    engine.dispose()
    assert registry.trusted_champion().version == "lgbm-000000000299"
    events, _ = registry.chain()
    assert events[-1]["action"] == "tables_attested" and len(events[-1]["facts"]) > 65_535
    assert registry.verify(None) == [] and registry.table_problems() == []
    versions_t = registry._t.versions
    with registry.engine.begin() as conn:
        conn.execute(versions_t.update().where(versions_t.c.version == "lgbm-000000000003").values(artifact_sha256="e" * 64))
    assert any("lgbm-000000000003: artifact_sha256" in p for p in registry.verify(None))
