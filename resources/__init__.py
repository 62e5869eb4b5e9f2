"""Every external system the pipeline touches, as typed Dagster resources.

``build_resources`` is the one place that reads the environment and decides
where things live; assets only see the resources.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ml_assets.settings import Settings, load_settings
from resources.alerts import FailureNotifier, RetrainPolicy
from resources.artifacts import ArtifactIntegrityError, ArtifactRef, ArtifactStore, SweptFile, registry_references, sweep
from resources.feature_store import FeatureStoreError, FeatureStoreResource
from resources.lake import Lake, LakeIOManager, MissingPartitionError
from resources.registry import ModelRegistry, ModelVersion, RegistryError
from resources.warehouse import TYPE_ERRORS, SourceSchemaError, SourceUnavailableError, SqlWarehouse

__all__ = [
    "ArtifactIntegrityError",
    "ArtifactRef",
    "ArtifactStore",
    "FailureNotifier",
    "FeatureStoreError",
    "FeatureStoreResource",
    "RetrainPolicy",
    "Lake",
    "LakeIOManager",
    "MissingPartitionError",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "SourceSchemaError",
    "SourceUnavailableError",
    "SqlWarehouse",
    "SweptFile",
    "TYPE_ERRORS",
    "build_artifacts",
    "build_feature_store",
    "build_registry",
    "build_resources",
    "data_dir",
    "default_warehouse_url",
    "registry_references",
    "sweep",
]


def data_dir() -> Path:
    """Where the embedded defaults live (git-ignored)."""
    return Path(os.environ.get("CHURN_DATA_DIR", ".data")).resolve()


def default_warehouse_url() -> str:
    return f"sqlite:///{data_dir() / 'warehouse.sqlite'}"


def build_warehouse(settings: Settings | None = None) -> SqlWarehouse:
    settings = settings or load_settings()
    source = settings.source
    # The URL may carry a password: when it comes from the environment it goes
    # through EnvVar, so it is resolved at run time and never shown in the UI.
    url: str | dg.EnvVar = dg.EnvVar("CHURN_WAREHOUSE_URL") if os.environ.get("CHURN_WAREHOUSE_URL") else (source.url or default_warehouse_url())
    return SqlWarehouse(
        url=url,
        table=source.table,
        db_schema=source.db_schema,
        column_map=source.columns,
        customer_id_pattern=source.customer_id_pattern,
        closed_vocabularies=source.closed_vocabularies,
        channels=source.channels,
        categoricals=source.categoricals,
    )


def build_registry(resolve_env: bool = False) -> ModelRegistry:
    """The model registry. `resolve_env=True` reads the URL now, for commands that run outside Dagster (the CLI)."""
    from_env = os.environ.get("CHURN_REGISTRY_URL")
    # Same rule as the warehouse: a URL from the environment may hold a
    # password, so Dagster gets it as an EnvVar, resolved only at run time.
    url: str | dg.EnvVar = (
        (from_env if resolve_env else dg.EnvVar("CHURN_REGISTRY_URL")) if from_env else f"sqlite:///{data_dir() / 'registry.sqlite'}"
    )
    return ModelRegistry(url=url, db_schema=os.environ.get("CHURN_REGISTRY_SCHEMA") or None)


def build_artifacts() -> ArtifactStore:
    return ArtifactStore(root=os.environ.get("CHURN_ARTIFACT_ROOT", str(data_dir() / "artifacts")))


def build_feature_store(lake_root: str, resolve_env: bool = False) -> FeatureStoreResource:
    """Feast: SQLite online store and file registry under .data/feast by default; Redis and an SQL registry by environment.

    `resolve_env=True` reads the secrets now, for processes that run outside Dagster (the scoring service).
    """
    base = data_dir() / "feast"

    def secret(name: str) -> str | dg.EnvVar | None:
        # Both may carry passwords: EnvVar resolves them at run time and keeps
        # them out of the UI; the generated feature_store.yaml holds ${VAR} placeholders.
        value = os.environ.get(name)
        return (value if resolve_env else dg.EnvVar(name)) if value else None

    redis, registry = secret("CHURN_FEAST_REDIS_URL"), secret("CHURN_FEAST_REGISTRY_URL")
    return FeatureStoreResource(
        repo_path=str(Path(os.environ.get("CHURN_FEAST_REPO", "feature_repo")).resolve()),
        lake_root=lake_root,
        registry_path=str(base / "registry.db"),
        online_path=str(base / "online_store.db"),
        online_store=os.environ.get("CHURN_FEAST_ONLINE_STORE", "redis" if redis else "sqlite"),
        offline_store=os.environ.get("CHURN_FEAST_OFFLINE_STORE", "duckdb"),
        redis_url=redis,
        registry_url=registry,
        project=os.environ.get("CHURN_FEAST_PROJECT", "churn"),
    )


def build_resources() -> dict[str, object]:
    settings = load_settings()
    base = data_dir()
    lake = Lake(root=os.environ.get("CHURN_LAKE_ROOT", str(base / "lake")))
    return {
        "warehouse": build_warehouse(settings),
        # The same lake is the default IO manager and a resource for assets
        # that choose which partitions to read at run time (training_set).
        "io_manager": LakeIOManager(lake=lake),
        "lake": lake,
        "feature_store": build_feature_store(lake.root),
        "artifacts": build_artifacts(),
        "registry": build_registry(),
        "policy": RetrainPolicy(
            drift_share_threshold=settings.drift_share_threshold,
            cooldown_hours=settings.retrain_cooldown_hours,
        ),
        # A webhook URL usually embeds a token: EnvVar keeps it out of the UI and run config.
        "notifier": FailureNotifier(
            record_root=os.environ.get("CHURN_ARTIFACT_ROOT", str(base / "artifacts")),
            webhook_url=dg.EnvVar("CHURN_FAILURE_WEBHOOK_URL") if os.environ.get("CHURN_FAILURE_WEBHOOK_URL") else None,
        ),
    }
