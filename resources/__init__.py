"""Every external system the pipeline touches, as typed Dagster resources.

``build_resources`` turns the settings (``lib/settings.py``, the only
reader of the environment) into resources; assets only see the resources.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from lib.settings import VARIABLE, Settings, load_settings
from resources.alerts import FailureNotifier, RetrainPolicy
from resources.artifacts import ArtifactIntegrityError, ArtifactRef, ArtifactStore, SweptFile, registry_references, sweep
from resources.compute import ComputeResource, SparkNotInstalledError
from resources.feature_store import FeatureStoreError, FeatureStoreResource
from resources.lake import Lake, LakeIOManager, MissingPartitionError
from resources.registry import ModelRegistry, ModelVersion, RegistryError
from resources.tracking import ExperimentTracker, TrackedModel
from resources.warehouse import TYPE_ERRORS, SourceSchemaError, SourceUnavailableError, SqlWarehouse

__all__ = [
    "ArtifactIntegrityError",
    "ArtifactRef",
    "ArtifactStore",
    "ComputeResource",
    "ExperimentTracker",
    "TrackedModel",
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
    "SparkNotInstalledError",
    "SourceUnavailableError",
    "SqlWarehouse",
    "SweptFile",
    "TYPE_ERRORS",
    "build_artifacts",
    "build_compute",
    "build_feature_store",
    "build_notifier",
    "build_registry",
    "build_tracker",
    "build_resources",
    "data_dir",
    "default_warehouse_url",
    "registry_references",
    "sweep",
]


def data_dir(settings: Settings | None = None) -> Path:
    """Where the embedded defaults live (git-ignored)."""
    return (settings or load_settings()).deployment.data_path


def default_warehouse_url(settings: Settings | None = None) -> str:
    return f"sqlite:///{data_dir(settings) / 'warehouse.sqlite'}"


def _secret(settings: Settings, dotted: str, resolve_env: bool) -> str | dg.EnvVar | None:
    """A secret setting as Dagster should hold it: an EnvVar (resolved at run time, never shown in the UI or run
    config) when it came from the environment, the plain value only for processes outside Dagster (`resolve_env`)."""
    section, name = dotted.split(".")
    value = getattr(getattr(settings, section), name)
    if value is None:
        return None
    plain = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    var = VARIABLE[dotted]
    return plain if resolve_env or var not in settings.environment else dg.EnvVar(var)


def build_warehouse(settings: Settings | None = None, resolve_env: bool = False) -> SqlWarehouse:
    """The source as a resource; ``resolve_env``: the URL's value itself (for the CLI, which uses it outside a run)."""
    settings = settings or load_settings()
    source = settings.source
    return SqlWarehouse(
        url=_secret(settings, "source.url", resolve_env=resolve_env) or default_warehouse_url(settings),
        table=source.table,
        db_schema=source.db_schema,
        column_map=source.columns,
        customer_id_pattern=source.customer_id_pattern,
        zero_amount=source.zero_amount,
        closed_vocabularies=source.closed_vocabularies,
        channels=source.channels,
        categoricals=source.categoricals,
    )


def build_registry(resolve_env: bool = False, settings: Settings | None = None) -> ModelRegistry:
    """The model registry. `resolve_env=True` reads the URL now, for commands that run outside Dagster (the CLI)."""
    settings = settings or load_settings()
    deployment = settings.deployment
    return ModelRegistry(
        url=_secret(settings, "deployment.registry_url", resolve_env) or f"sqlite:///{deployment.data_path / 'registry.sqlite'}",
        db_schema=deployment.registry_schema,
        code_version=deployment.code_version,
        erasure_key=_secret(settings, "deployment.erasure_key", resolve_env),
        # Local runs only (production settings require the secret): a key of their own, generated on first use.
        erasure_key_file=str(deployment.data_path / "secrets" / "erasure.key") if deployment.mode == "local" else None,
        chain_key=_secret(settings, "deployment.chain_key", resolve_env),
        chain_anchor=deployment.chain_anchor,
    )


def build_notifier(settings: Settings, resolve_env: bool = False) -> FailureNotifier:
    """Where alerts are recorded and posted; `resolve_env=True` for processes outside Dagster (the scoring service)."""
    return FailureNotifier(
        record_root=settings.deployment.artifacts,
        webhook_url=_secret(settings, "deployment.failure_webhook_url", resolve_env),
        ui_url=settings.deployment.ui_url,
    )


def build_artifacts(settings: Settings | None = None) -> ArtifactStore:
    return ArtifactStore(root=(settings or load_settings()).deployment.artifacts)


def build_feature_store(lake_root: str | None = None, resolve_env: bool = False, settings: Settings | None = None) -> FeatureStoreResource:
    """Feast: SQLite online store and file registry under <data_dir>/feast by default; Redis and an SQL registry when set.

    `resolve_env=True` reads the secrets now, for processes that run outside Dagster (the scoring service).
    """
    settings = settings or load_settings()
    deployment = settings.deployment
    base = deployment.data_path / "feast"
    # The generated feature_store.yaml holds ${VAR} placeholders for the secrets.
    return FeatureStoreResource(
        repo_path=deployment.feast_repo_path,
        lake_root=lake_root or deployment.lake,
        registry_path=str(base / "registry.db"),
        online_path=str(base / "online_store.db"),
        online_store=deployment.online_store,
        offline_store=deployment.feast_offline_store,
        online_writer=deployment.feast_online_writer,
        redis_url=_secret(settings, "deployment.feast_redis_url", resolve_env),
        registry_url=_secret(settings, "deployment.feast_registry_url", resolve_env),
        project=deployment.feast_project,
    )


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    """Every resource of the code location, from the settings (loaded now when not given)."""
    settings = settings or load_settings()
    lake = Lake(root=settings.deployment.lake)
    return {
        "warehouse": build_warehouse(settings),
        # The same lake is the default IO manager and a resource for assets
        # that choose which partitions to read at run time (training_set).
        "io_manager": LakeIOManager(lake=lake),
        "lake": lake,
        "feature_store": build_feature_store(lake.root, settings=settings),
        "artifacts": build_artifacts(settings),
        "registry": build_registry(settings=settings),
        "policy": RetrainPolicy(
            cooldown_hours=settings.retrain_cooldown_hours,
        ),
        "notifier": build_notifier(settings),
        "compute": build_compute(settings),
        "tracker": build_tracker(settings),
    }


def build_tracker(settings: Settings, resolve_env: bool = False) -> ExperimentTracker:
    """MLflow tracking (off without a URI); the URI as an EnvVar, since it may carry credentials."""
    deployment = settings.deployment
    return ExperimentTracker(
        tracking_uri=_secret(settings, "deployment.mlflow_tracking_uri", resolve_env),
        experiment=deployment.mlflow_experiment,
        ui_url=deployment.ui_url,
        code_version=deployment.code_version,
    )


def build_compute(settings: Settings, resolve_env: bool = False) -> ComputeResource:
    """The engine of the heavy stages; the Spark Connect endpoint, when set, as an EnvVar (it may carry a token)."""
    compute = settings.compute
    return ComputeResource(
        engine=compute.engine,
        master=compute.spark_master,
        remote=_secret(settings, "compute.spark_remote", resolve_env),
        conf=dict(compute.spark_conf),
    )
