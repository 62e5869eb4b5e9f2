"""The model registry on real databases: SQLite files and PostgreSQL (127.0.0.1:5432, database `test`)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ml_assets_tests.conftest import register_version
from resources import ModelRegistry, RegistryError


@pytest.fixture
def registry(any_registry: ModelRegistry) -> ModelRegistry:
    return any_registry


def _register(registry: ModelRegistry, version: str, kind: str = "lightgbm", roc_auc: float = 0.9, parity: bool | None = True) -> None:
    register_version(registry, version, kind, roc_auc, parity)


def test_a_version_keeps_everything_it_was_registered_with(registry: ModelRegistry) -> None:
    _register(registry, "lgbm-000000000001")
    v = registry.get("lgbm-000000000001")
    assert (v.kind, v.status, v.run_id, v.code_version) == ("lightgbm", "candidate", "run-lgbm-000000000001", "abc123")
    assert v.data_window["train"]["rows"] == 100 and v.features == ["recency_days", "tenure_days"]
    assert v.metrics == {"backtest_roc_auc": 0.9, "test_roc_auc": 0.9} and v.artifact_sha256 == "a" * 64
    assert v.onnx_uri.endswith(".onnx") and v.parity_passed is True and v.promotable
    assert v.created_at.tzinfo is not None


def test_promotion_archives_the_previous_champion_and_records_who_and_why(registry: ModelRegistry) -> None:
    _register(registry, "lgbm-000000000001")
    _register(registry, "torch-000000000002", kind="torch")
    assert registry.champion() is None
    registry.promote("lgbm-000000000001", actor="pipeline", reason="first champion", run_id="r1")
    registry.promote("torch-000000000002", actor="pipeline", reason="better", run_id="r2")
    assert registry.champion().version == "torch-000000000002"
    assert registry.get("lgbm-000000000001").status == "archived"
    registry.promote("lgbm-000000000001", actor="alice", reason="torch scores drifted", run_id="r3", action="rolled_back")
    assert registry.champion().version == "lgbm-000000000001"
    assert registry.get("torch-000000000002").status == "archived"
    last = registry.events(1)[0]
    assert (last["action"], last["version"], last["previous_champion"], last["actor"], last["reason"], last["run_id"]) == (
        "rolled_back",
        "lgbm-000000000001",
        "torch-000000000002",
        "alice",
        "torch scores drifted",
        "r3",
    )
    assert [v.status for v in registry.versions()].count("champion") == 1


def test_versions_without_a_passed_parity_check_cannot_be_champion(registry: ModelRegistry) -> None:
    _register(registry, "lgbm-00000000000a", parity=False)
    _register(registry, "lgbm-00000000000b", parity=None)
    for version in ("lgbm-00000000000a", "lgbm-00000000000b"):
        with pytest.raises(RegistryError, match="parity"):
            registry.promote(version, actor="pipeline", reason="try", run_id="r")
    with pytest.raises(RegistryError, match="unknown model version"):
        registry.promote("lgbm-doesnotexist", actor="pipeline", reason="try", run_id="r")
    with pytest.raises(RegistryError, match="actor and a reason"):
        registry.promote("lgbm-00000000000a", actor="", reason="", run_id="r")
    assert registry.champion() is None


def test_the_database_allows_one_champion_only(registry: ModelRegistry) -> None:
    _register(registry, "lgbm-000000000001")
    _register(registry, "lgbm-000000000002")
    registry.promote("lgbm-000000000001", actor="pipeline", reason="first", run_id="r1")
    versions = registry._t.versions
    # A writer that bypasses promote() (or races it) is stopped by the partial unique index.
    with pytest.raises(sa.exc.IntegrityError), registry.engine.begin() as conn:
        conn.execute(versions.update().where(versions.c.version == "lgbm-000000000002").values(status="champion"))
    assert registry.champion().version == "lgbm-000000000001"


def test_registering_the_same_artifact_again_keeps_its_status(registry: ModelRegistry) -> None:
    _register(registry, "lgbm-000000000001")
    registry.promote("lgbm-000000000001", actor="pipeline", reason="first", run_id="r1")
    _register(registry, "lgbm-000000000001")
    assert registry.get("lgbm-000000000001").status == "champion"
    assert registry.get("lgbm-000000000001").parity_passed is True
    assert "retrained" in [e["action"] for e in registry.events()]


def test_parity_is_recorded_only_for_the_artifact_it_checked(registry: ModelRegistry) -> None:
    _register(registry, "lgbm-000000000001", parity=None)
    with pytest.raises(RegistryError, match="no ONNX artifact"):
        registry.record_parity("lgbm-000000000001", "f" * 64, True, {}, "r")
    assert registry.get("lgbm-000000000001").parity_passed is None
    # Re-exporting resets parity: the new artifact has not been checked yet.
    _register(registry, "lgbm-000000000001", parity=True)
    registry.attach_onnx("lgbm-000000000001", "/artifacts/new.onnx", "e" * 64, "r2")
    assert registry.get("lgbm-000000000001").parity_passed is None


def test_a_version_links_to_its_mlflow_run_and_a_registry_from_before_the_link_gains_the_column(registry: ModelRegistry) -> None:
    _register(registry, "lgbm-00000000001c")
    assert registry.get("lgbm-00000000001c").tracking_run_id is None
    registry.record_tracking("lgbm-00000000001c", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", run_id="r1")
    assert registry.get("lgbm-00000000001c").tracking_run_id == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    last = registry.events(1)[0]
    assert (last["action"], last["version"]) == ("tracked", "lgbm-00000000001c")
    with pytest.raises(RegistryError, match="unknown version"):
        registry.record_tracking("lgbm-nope", "x", run_id="r1")
    # A registry created before the link: the column is added when the registry is next opened, nothing else changes.
    table = registry.engine.dialect.identifier_preparer.format_table(registry._t.versions)
    with registry.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN tracking_run_id"))  # noqa: S608 (the test's own table)
    reopened = ModelRegistry(url=registry.url, db_schema=registry.db_schema)
    v = reopened.get("lgbm-00000000001c")
    assert v.tracking_run_id is None and v.artifact_sha256 == "a" * 64
    reopened.record_tracking("lgbm-00000000001c", "abc", run_id="r2")
    assert reopened.get("lgbm-00000000001c").tracking_run_id == "abc" and not reopened.verify(None)
