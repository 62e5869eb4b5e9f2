"""One description of the user's problem: the settings file that `churn init` writes, with the environment over it.

The file (YAML; ``CHURN_SETTINGS_FILE``, default ``churn.yaml`` in the working
directory) says where the transactions are and how to read them, when history
starts, what "churned" means (the label horizon) and the gates. Every
consumer takes these values from here: the warehouse resource, the partition
calendar, the training set, the drift report's matured performance, the
quality gates, and so the runs that schedules and the drift sensor launch,
whose run config defaults are these values.

The ``deployment`` section says where things live (data folder, lake and
artifact roots, registry, Feast, Kubernetes placement, the scoring service's
limits). Environment variables override the file, one variable per setting
(see ``ENV``). This module is the only place that reads ``CHURN_*`` variables:
``definitions.py`` loads the settings once and hands them to the resources,
the executor and the partition calendar. Secrets (database URLs with a
password, Redis, the failure webhook) come only from the environment, never
from the file: they reach Dagster resources as ``dg.EnvVar`` (resolved at run
time) and are ``SecretStr`` here, so they never print.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from lib.sections import Compute, Kubernetes, Rollout, Service, Source
from lib.settings_file import SettingsFileError, read_settings_file, shown

DEFAULT_FILE = "churn.yaml"
FILE_ENV = "CHURN_SETTINGS_FILE"


class SettingsError(ValueError):
    """The settings file or an environment variable holds a value the pipeline cannot use; the message names it and the fix."""


class Deployment(BaseModel):
    """Where things live. Unset locations default to folders under `data_dir`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["local", "kubernetes"] = Field(
        default="local", description="local: every step in the run's process; kubernetes: one pod per step."
    )
    data_dir: str = Field(default=".data", description="Folder of the embedded defaults (warehouse, registry, lake, Feast files).")
    lake_root: str | None = Field(default=None, description="Lake root, any fsspec URL; none: <data_dir>/lake.")
    artifact_root: str | None = Field(
        default=None, description="Models, ONNX files and reports, any fsspec URL; none: <data_dir>/artifacts."
    )
    registry_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL of the model registry (secret); none: SQLite in data_dir."
    )
    registry_schema: str | None = Field(default=None, description="Database schema of the registry tables (PostgreSQL).")
    code_version: str | None = Field(default=None, description="Code version recorded with every model version; none: the git commit.")
    failure_webhook_url: SecretStr | None = Field(
        default=None,
        description="POST alerts here as Slack-compatible JSON (failed runs, drift events, promotions, rollbacks, failed gates; "
        "secret); none: recorded only.",
    )
    ui_url: str = Field(default="http://127.0.0.1:3000", description="The Dagster UI's address, for the run links in alerts.")
    feast_repo: str | None = Field(
        default=None,
        description="Where the generated feature_store.yaml goes; none: ./feature_repo locally, <data_dir>/feast/repo on Kubernetes.",
    )
    feast_project: str = Field(default="churn", min_length=1, description="Feast project (namespace in the registry and the online store).")
    feast_online_store: Literal["sqlite", "redis"] | None = Field(
        default=None, description="Online store; none: redis when feast_redis_url is set, else sqlite."
    )
    feast_offline_store: Literal["duckdb", "dask"] = Field(default="duckdb", description="Feast offline engine.")
    feast_online_writer: Literal["bulk", "feast"] = Field(
        default="bulk",
        description="How a SQLite online store is loaded: bulk, column-wise by the project's Feast batch engine (Feast's "
        "table and rows, about 5x faster); feast, Feast's own row-by-row writer. Redis always uses Feast's.",
    )
    feast_redis_url: SecretStr | None = Field(default=None, description="Redis connection string of the online store (secret).")
    feast_registry_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL of a Feast SQL registry (secret); none: a file in data_dir."
    )
    demo_customers: int = Field(default=5000, ge=1, le=10_000_000, description="Customers `churn demo` generates.")
    erasure_key: SecretStr | None = Field(
        default=None,
        description="Secret keying the hash the registry keeps of an erased customer id (secret; required on Kubernetes); "
        "none: a key generated on first use in <data_dir>/secrets/erasure.key.",
    )
    chain_key: SecretStr | None = Field(
        default=None,
        description="Secret keying the registry's event chain (an HMAC on every event, so an event appended without it is "
        "found; secret); none: an unkeyed chain.",
    )
    chain_anchor: str | None = Field(
        default=None,
        description="Folder or object-store URL outside the registry database where each event's hash is kept (use a bucket "
        "with object lock); none: no anchor.",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36_500,
        description="`churn retention` deletes raw, validated and quarantined partitions older than this many days; none: kept.",
    )
    mlflow_tracking_uri: SecretStr | None = Field(
        default=None,
        description="MLflow tracking server: every training run is logged there and the champion/challenger aliases mirror "
        "the registry (needs the mlflow extra; secret, it may carry credentials); none: no tracking.",
    )
    mlflow_experiment: str = Field(default="churn", min_length=1, description="MLflow experiment of the training runs.")
    k8s: Kubernetes = Field(default_factory=Kubernetes)
    service: Service = Field(default_factory=Service)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def lake(self) -> str:
        return self.lake_root or str(self.data_path / "lake")

    @property
    def artifacts(self) -> str:
        return self.artifact_root or str(self.data_path / "artifacts")

    @property
    def feast_repo_path(self) -> str:
        # In a pod the image's tree is read-only: the generated file goes under the writable data folder.
        default = self.data_path / "feast" / "repo" if self.mode == "kubernetes" else Path("feature_repo")
        return str(Path(self.feast_repo or default).resolve())

    @property
    def online_store(self) -> str:
        return self.feast_online_store or ("redis" if self.feast_redis_url else "sqlite")


# Settings that may carry a password or token: environment only, never the file.
SECRETS = (
    "deployment.registry_url",
    "deployment.failure_webhook_url",
    "deployment.feast_redis_url",
    "deployment.feast_registry_url",
    "deployment.erasure_key",
    "deployment.chain_key",
    "deployment.mlflow_tracking_uri",
    "compute.spark_remote",
)


class Settings(BaseModel):
    """Every knob of the user's problem and of the deployment, validated once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Source = Field(default_factory=Source)
    deployment: Deployment = Field(default_factory=Deployment)
    rollout: Rollout = Field(default_factory=Rollout)
    compute: Compute = Field(default_factory=Compute)
    # The variables that set a value (filled by load_settings): a URL that came
    # from the environment reaches Dagster as dg.EnvVar, never as a literal.
    environment: frozenset[str] = Field(default_factory=frozenset, exclude=True, repr=False)
    partitions_start: dt.date = Field(
        default=dt.date(2024, 7, 1),
        ge=dt.date(1970, 1, 1),
        le=dt.date(2199, 12, 31),
        description="First day of transaction history (the partition calendar).",
    )
    label_horizon_days: int = Field(
        default=30, ge=1, le=180, description="A customer has churned when they buy nothing for this many days."
    )
    min_history_days: int = Field(default=180, ge=0, le=3650, description="Training snapshots need this many days of history before them.")
    population_days: int | None = Field(
        default=None,
        ge=1,
        le=36_500,
        description="Score every customer with a purchase in this many days before the snapshot; none (the default) means all of history.",
    )
    backtest_cutoffs: int = Field(
        default=3, ge=1, le=12, description="Out-of-time backtest: cutoffs each model is trained before and scored at."
    )
    backtest_every_days: int = Field(default=28, ge=1, le=365, description="Out-of-time backtest: days between two cutoffs.")
    baseline_margin: float = Field(
        default=0.002,
        ge=0.0,
        le=0.5,
        description="A candidate is promoted only when its backtest ROC-AUC beats the best baseline (recency, BG/NBD) by this much.",
    )
    max_rejected_share: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Largest share of a day's rows the quarantine may take before the day is blocked."
    )
    min_rejected_rows: int = Field(
        default=5,
        ge=1,
        le=1_000_000_000,
        description="A day is blocked only when at least this many rows are quarantined (one bad row never blocks a small day).",
    )
    min_roc_auc: float = Field(default=0.7, ge=0.0, le=1.0, description="A model below this test ROC-AUC fails its training run.")
    drift_share_threshold: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Share of drifted features (ageing features excluded) that makes a day a drift event.",
    )
    drift_reference_lag_days: int = Field(
        default=28, ge=1, le=365, description="Drift compares a day's customers with the same population this many days earlier."
    )
    retrain_cooldown_hours: float = Field(
        default=24.0, ge=0.0, le=8760.0, description="At most one drift-triggered retraining per this many hours."
    )

    @field_validator("population_days", mode="before")
    @classmethod
    def _all_history(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "all", "none") else value

    @model_validator(mode="after")
    def _population_covers_horizon(self) -> Settings:
        if self.population_days is not None and self.population_days < self.label_horizon_days:
            raise ValueError(
                f"population_days ({self.population_days}) must be at least label_horizon_days ({self.label_horizon_days}): "
                "a customer's label is read from the snapshot a horizon later"
            )
        return self

    @field_validator("max_rejected_share", "min_roc_auc", "drift_share_threshold", "retrain_cooldown_hours", "baseline_margin")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


# Environment variable -> dotted setting. The environment wins over the file.
ENV: dict[str, str] = {
    "CHURN_WAREHOUSE_URL": "source.url",
    "CHURN_SOURCE_TABLE": "source.table",
    "CHURN_SOURCE_SCHEMA": "source.db_schema",
    "CHURN_COLUMN_MAP": "source.columns",
    "CHURN_CUSTOMER_ID_PATTERN": "source.customer_id_pattern",
    "CHURN_ZERO_AMOUNT": "source.zero_amount",
    "CHURN_CLOSED_VOCABULARIES": "source.closed_vocabularies",
    "CHURN_CHANNELS": "source.channels",
    "CHURN_CATEGORICALS": "source.categoricals",
    "CHURN_PARTITIONS_START": "partitions_start",
    "CHURN_LABEL_HORIZON_DAYS": "label_horizon_days",
    "CHURN_MIN_HISTORY_DAYS": "min_history_days",
    "CHURN_POPULATION_DAYS": "population_days",
    "CHURN_BACKTEST_CUTOFFS": "backtest_cutoffs",
    "CHURN_BACKTEST_EVERY_DAYS": "backtest_every_days",
    "CHURN_BASELINE_MARGIN": "baseline_margin",
    "CHURN_MAX_REJECTED_SHARE": "max_rejected_share",
    "CHURN_MIN_REJECTED_ROWS": "min_rejected_rows",
    "CHURN_MIN_ROC_AUC": "min_roc_auc",
    "CHURN_RETRAIN_DRIFT_SHARE": "drift_share_threshold",
    "CHURN_DRIFT_REFERENCE_LAG_DAYS": "drift_reference_lag_days",
    "CHURN_RETRAIN_COOLDOWN_HOURS": "retrain_cooldown_hours",
    "CHURN_DEPLOYMENT": "deployment.mode",
    "CHURN_DATA_DIR": "deployment.data_dir",
    "CHURN_LAKE_ROOT": "deployment.lake_root",
    "CHURN_ARTIFACT_ROOT": "deployment.artifact_root",
    "CHURN_REGISTRY_URL": "deployment.registry_url",
    "CHURN_REGISTRY_SCHEMA": "deployment.registry_schema",
    "CHURN_CODE_VERSION": "deployment.code_version",
    "CHURN_FAILURE_WEBHOOK_URL": "deployment.failure_webhook_url",
    "CHURN_UI_URL": "deployment.ui_url",
    "CHURN_SHADOW_SCORING": "rollout.shadow",
    "CHURN_CANARY_SHARE": "rollout.canary_share",
    "CHURN_CONTACT_BUDGET": "rollout.contact_budget",
    "CHURN_REASONS": "rollout.reasons",
    "CHURN_REASONS_SHARE": "rollout.reasons_share",
    "CHURN_ROLLOUT_MIN_MATURED_DAYS": "rollout.min_matured_days",
    "CHURN_ROLLOUT_PROMOTE_MARGIN": "rollout.promote_margin",
    "CHURN_ROLLOUT_ROLLBACK_FLOOR": "rollout.rollback_floor",
    "CHURN_ROLLOUT_ROLLBACK_MARGIN": "rollout.rollback_margin",
    "CHURN_ROLLOUT_CONFIDENCE": "rollout.confidence",
    "CHURN_ROLLOUT_AUTO_PROMOTE": "rollout.auto_promote",
    "CHURN_ROLLOUT_AUTO_ROLLBACK": "rollout.auto_rollback",
    "CHURN_COMPUTE_ENGINE": "compute.engine",
    "CHURN_SPARK_MASTER": "compute.spark_master",
    "CHURN_SPARK_REMOTE": "compute.spark_remote",
    "CHURN_SPARK_CONF": "compute.spark_conf",
    "CHURN_FEAST_REPO": "deployment.feast_repo",
    "CHURN_FEAST_PROJECT": "deployment.feast_project",
    "CHURN_FEAST_ONLINE_STORE": "deployment.feast_online_store",
    "CHURN_FEAST_OFFLINE_STORE": "deployment.feast_offline_store",
    "CHURN_FEAST_ONLINE_WRITER": "deployment.feast_online_writer",
    "CHURN_FEAST_REDIS_URL": "deployment.feast_redis_url",
    "CHURN_FEAST_REGISTRY_URL": "deployment.feast_registry_url",
    "CHURN_DEMO_CUSTOMERS": "deployment.demo_customers",
    "CHURN_RETENTION_DAYS": "deployment.retention_days",
    "CHURN_ERASURE_KEY": "deployment.erasure_key",
    "CHURN_CHAIN_KEY": "deployment.chain_key",
    "CHURN_CHAIN_ANCHOR": "deployment.chain_anchor",
    "CHURN_MLFLOW_TRACKING_URI": "deployment.mlflow_tracking_uri",
    "CHURN_MLFLOW_EXPERIMENT": "deployment.mlflow_experiment",
    "CHURN_K8S_GPU_COUNT": "deployment.k8s.gpu_count",
    "CHURN_K8S_GPU_RESOURCE": "deployment.k8s.gpu_resource",
    "CHURN_K8S_GPU_NODE_SELECTOR": "deployment.k8s.gpu_node_selector",
    "CHURN_K8S_GPU_TOLERATIONS": "deployment.k8s.gpu_tolerations",
    "CHURN_K8S_GPU_CPU": "deployment.k8s.gpu_cpu",
    "CHURN_K8S_GPU_MEMORY": "deployment.k8s.gpu_memory",
    "CHURN_K8S_CPU_CPU": "deployment.k8s.cpu_cpu",
    "CHURN_K8S_CPU_MEMORY": "deployment.k8s.cpu_memory",
    "CHURN_K8S_CPU_LIMIT_CPU": "deployment.k8s.cpu_limit_cpu",
    "CHURN_K8S_CPU_LIMIT_MEMORY": "deployment.k8s.cpu_limit_memory",
    "CHURN_K8S_RUN_AS_USER": "deployment.k8s.run_as_user",
    "CHURN_K8S_MAX_CONCURRENT": "deployment.k8s.max_concurrent",
    "CHURN_SERVICE_MAX_BATCH": "deployment.service.max_batch",
    "CHURN_SERVICE_MAX_BODY_BYTES": "deployment.service.max_body_bytes",
    "CHURN_SERVICE_RELOAD_SECONDS": "deployment.service.reload_seconds",
    "CHURN_SERVICE_REQUIRE_API_KEY": "deployment.service.require_api_key",
    "CHURN_SERVICE_RATE_PER_SECOND": "deployment.service.rate_per_second",
    "CHURN_SERVICE_RATE_BURST": "deployment.service.rate_burst",
    "CHURN_SERVICE_STORE_TIMEOUT_SECONDS": "deployment.service.store_timeout_seconds",
    "CHURN_SERVICE_RECORD_PREDICTIONS": "deployment.service.record_predictions",
    "CHURN_SERVICE_PREDICTION_RETENTION_DAYS": "deployment.service.prediction_retention_days",
    "CHURN_SERVICE_CUSTOMER_ID_PATTERN": "deployment.service.customer_id_pattern",
}
VARIABLE = {dotted: var for var, dotted in ENV.items()}
_JSON_ENV = (
    "CHURN_COLUMN_MAP",
    "CHURN_CLOSED_VOCABULARIES",
    "CHURN_CHANNELS",
    "CHURN_CATEGORICALS",
    "CHURN_K8S_GPU_NODE_SELECTOR",
    "CHURN_K8S_GPU_TOLERATIONS",
    "CHURN_SPARK_CONF",
)


def set_library_defaults(values: Mapping[str, str]) -> None:
    """Give a library the environment variables it reads itself (never a setting of this project), unless the
    deployment set them already: CUDA's deterministic workspace, the Python a local Spark master's workers start, the
    MLflow client's retries and timeout. This module stays the one place that touches the environment."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


def _dig(data: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def settings_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The settings file to read; None when CHURN_SETTINGS_FILE=none (the defaults and the environment only)."""
    environ = os.environ if environ is None else environ
    named = environ.get(FILE_ENV, "").strip()
    if named.lower() == "none":
        return None
    return Path(named or DEFAULT_FILE)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings file (if any) with the environment over it; a SettingsError names the file, the key, the value and the fix."""
    environ = os.environ if environ is None else environ
    path = settings_path(environ)
    data: dict[str, Any] = {}
    if path is None:
        pass
    elif path.exists():
        try:
            data = read_settings_file(path)
        except SettingsFileError as exc:
            raise SettingsError(str(exc)) from None
        in_file = [dotted for dotted in SECRETS if _dig(data, dotted) is not None]
        if in_file or "environment" in data:
            raise SettingsError(
                f"settings file {path}: "
                + (
                    "; ".join(
                        f"{dotted!r} is a secret: remove it from the file and set {VARIABLE[dotted]} in the environment"
                        for dotted in in_file
                    )
                    or "'environment' is not a setting"
                )
            )
    elif FILE_ENV in environ:
        raise SettingsError(f"{FILE_ENV}={str(path)!r}: no such file; run `churn init --url URL --table TABLE` to write it")
    origin: dict[str, str] = {}
    for var, dotted in ENV.items():
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        value: Any = raw
        if var in _JSON_ENV:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                example = {"CHURN_COLUMN_MAP": {"ts": "created_at"}, "CHURN_CLOSED_VOCABULARIES": {"channel": ["web", "store"]}}.get(var)
                example = example or _dig(Settings().model_dump(mode="json"), dotted)
                raise SettingsError(f"{var} is not valid JSON ({exc}); expected e.g. {json.dumps(example)}") from None
        target = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[leaf] = value
        origin[dotted] = var
    try:
        loaded = Settings.model_validate({**data, "environment": frozenset(origin.values())})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            dotted = ".".join(str(p) for p in error["loc"])
            where = f"environment variable {origin[dotted]}" if dotted in origin else f"{dotted!r} in {path}"
            value = "(hidden)" if dotted in SECRETS else shown(error.get("input"))
            problems.append(f"{where}: {str(error['msg'])[:300]} (got {value})")
        raise SettingsError("invalid settings: " + "; ".join(problems[:20])) from None
    from lib.production import production_problems

    if loaded.deployment.mode == "kubernetes" and (problems := production_problems(loaded)):
        # Fail closed: no embedded default is used in a cluster.
        raise SettingsError(
            "deployment.mode is kubernetes (CHURN_DEPLOYMENT) but the settings are not production-ready: "
            + "; ".join(problems)
            + ". Set them in the churn-secrets secret and the Helm values (docs/operations.md#kubernetes)."
        )
    return loaded


def class_default(dotted: str) -> Any:
    """A setting's built-in default (no file, no environment), e.g. ``class_default("deployment.retention_days")``.

    What a run-config field holds before a job's defaults fill in the loaded
    settings (ml_assets/run_config.py): importing a module never reads the file.
    """
    model: type[BaseModel] = Settings
    *parents, leaf = dotted.split(".")
    for part in parents:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise KeyError(f"{dotted}: {part} is not a section of the settings")
        model = annotation
    return model.model_fields[leaf].get_default(call_default_factory=True)


def setting_value(value: Settings, dotted: str) -> Any:
    """The loaded value of a setting named by its dotted path."""
    current: Any = value
    for part in dotted.split("."):
        current = getattr(current, part)
    return current


@cache
def settings() -> Settings:
    """The settings this process loaded (once): what the code location's definitions are built from."""
    return load_settings()


def to_yaml(value: Settings, comments: Mapping[str, str] | None = None, omit: tuple[str, ...] = ()) -> str:
    """The settings as the YAML file `churn init` writes; ``omit``: dotted names left out (a setting for a column the
    table does not have, which would only mislead the reader)."""
    import yaml

    data = value.model_dump(mode="json", exclude_none=True)
    for dotted in omit:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    header = "".join(f"# {line}\n" for line in (comments or {}).get("header", "").splitlines())
    return header + text
