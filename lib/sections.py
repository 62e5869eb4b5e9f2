"""Self-contained sections of the settings: the source table, Kubernetes placement, the service's limits, the rollout policy.

Part of the one settings object (`lib/settings.py` composes and re-exports
them, and alone reads the environment); kept here so that module stays the
place for loading and the problem's own knobs.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from lib.schema import check_column_map, check_identifier

# What the scoring service accepts as a customer id by default: ASCII letters and digits first, then also
# _ . : - (zero-padded, numeric, UUID and prefixed ids), 1 to 64 characters. Nothing a log, a shell or SQL reads specially.
SERVICE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the source; None: the embedded SQLite demo warehouse. With a password, set CHURN_WAREHOUSE_URL instead.",
    )
    table: str = Field(default="transactions", description="The transactions table.")
    db_schema: str | None = Field(default=None, description="Schema holding the table (PostgreSQL), if not the default.")
    columns: dict[str, str] = Field(default_factory=dict, description="Canonical column -> your column, for the names that differ.")
    customer_id_pattern: str | None = Field(default=None, description="A regular expression the whole customer id must match.")
    zero_amount: Literal["keep", "quarantine"] = Field(
        default="keep",
        description="A row with amount exactly 0 (free items, promotions, zero-priced returns): keep it as a purchase with no "
        "spend (it counts as a visit), or quarantine it with reason amount_positive.",
    )
    closed_vocabularies: dict[str, list[str]] = Field(
        default_factory=dict, description="Categorical columns whose values must be in a set."
    )
    categoricals: list[str] = Field(
        default_factory=list, description="Further categorical columns of your table, by name: each gives the feature n_<name>_values."
    )
    channels: list[str] = Field(
        default_factory=lambda: ["web", "mobile", "store"],
        min_length=1,
        description="The channel vocabulary for features: the first is the reference, every other value gets a '<value>_share' feature.",
    )

    @field_validator("table", "db_schema")
    @classmethod
    def _plain_identifier(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "the name")

    @field_validator("columns")
    @classmethod
    def _canonical_to_plain(cls, value: dict[str, str]) -> dict[str, str]:
        return check_column_map(value)

    @field_validator("customer_id_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value:
            if len(value) > 500:
                raise ValueError("is longer than 500 characters")
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a regular expression ({exc})") from None
        return value


class Kubernetes(BaseModel):
    """Where steps run on Kubernetes (`ml_assets/k8s.py` turns this into each step's `dagster-k8s/config`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_count: int = Field(
        default=1, ge=1, le=16, description="GPUs of the torch step (the GPU step needs a GPU; train with device=cpu to do without)."
    )
    gpu_resource: str = Field(default="nvidia.com/gpu", min_length=1, description="Extended resource name of a GPU.")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}, description="Node selector of the GPU step."
    )
    gpu_tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="Tolerations of the GPU step.",
    )
    gpu_cpu: str = Field(default="2", description="CPU of the GPU step (requests = limits).")
    gpu_memory: str = Field(default="8Gi", description="Memory of the GPU step (requests = limits).")
    cpu_cpu: str = Field(default="1", description="CPU request of every other step.")
    cpu_memory: str = Field(default="4Gi", description="Memory request of every other step.")
    cpu_limit_cpu: str = Field(default="2", description="CPU limit of every other step.")
    cpu_limit_memory: str = Field(default="8Gi", description="Memory limit of every other step.")
    run_as_user: int = Field(default=10001, ge=1, le=2**31 - 1, description="Pod uid and gid (the image's non-root user).")
    max_concurrent: int = Field(default=4, ge=1, le=1000, description="Step pods of one run at a time.")


class Service(BaseModel):
    """Limits of the online scoring service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch: int = Field(default=1_000, ge=1, le=100_000, description="Most customer ids in one request.")
    max_body_bytes: int = Field(default=256_000, ge=1, le=64 * 2**20, description="Largest request body (at most 64 MiB).")
    reload_seconds: float = Field(
        default=2.0, gt=0, le=3600, allow_inf_nan=False, description="How often the service reloads the champion and the API keys."
    )
    require_api_key: bool = Field(
        default=True, description="Every endpoint but /health and /ready needs a key (churn apikey create); false only on a trusted laptop."
    )
    rate_per_second: float = Field(
        default=100.0, gt=0, le=1e6, allow_inf_nan=False, description="Requests per second one API key may make (token bucket)."
    )
    rate_burst: int = Field(default=200, ge=1, le=1_000_000, description="Requests one API key may make at once before the rate applies.")
    store_timeout_seconds: float = Field(
        default=1.0, gt=0, le=60, allow_inf_nan=False, description="Longest wait for the online store before a request gets 503."
    )
    record_predictions: bool = Field(
        default=True, description="Append every online prediction to prediction_log in the registry's database."
    )
    prediction_retention_days: int | None = Field(
        default=400, ge=1, le=36_500, description="Prediction records older than this many days are deleted; none: kept forever."
    )
    customer_id_pattern: str = Field(
        default=SERVICE_ID_PATTERN,
        max_length=500,
        description="A regular expression every requested customer id must match whole (besides the data contract's own rule); "
        "422 otherwise. Widen it when your ids hold other characters.",
    )

    @field_validator("customer_id_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a regular expression ({exc})") from None
        return value


class Rollout(BaseModel):
    """How a new champion meets production: challengers scored in shadow, a canary share, and the registry acting on
    matured outcomes by itself (docs/model-quality.md, "Safe rollout")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shadow: bool = Field(default=True, description="Score every customer with each active challenger too (stored, never served).")
    canary_share: float = Field(
        default=0.0, ge=0.0, le=0.5, allow_inf_nan=False, description="Share of customers (by a hash of the id) the challenger serves."
    )
    contact_budget: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Share of customers a retention team contacts: precision at this budget.",
    )
    reasons: bool = Field(
        default=True,
        description="Store served scores' three reasons (the features that pushed them up most) in batch_predictions.",
    )
    reasons_share: float = Field(
        default=0.2,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Share of each day's highest served scores that get reasons (1.0: every score); at least contact_budget.",
    )
    min_matured_days: int = Field(default=3, ge=1, le=60, description="Matured days a challenger must win over before it is promoted.")
    promote_margin: float = Field(
        default=0.01,
        ge=0.0,
        le=0.5,
        allow_inf_nan=False,
        description="Promote a challenger whose matured ROC-AUC gain's lower bound exceeds this.",
    )
    rollback_floor: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Roll back a champion whose matured ROC-AUC is confidently below this.",
    )
    rollback_margin: float = Field(
        default=0.01,
        ge=0.0,
        le=0.5,
        allow_inf_nan=False,
        description="Roll back when the previous champion's shadow ROC-AUC beats the champion's by more than this, with confidence.",
    )
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0, allow_inf_nan=False, description="Confidence of the bootstrap intervals.")
    auto_promote: bool = Field(default=True, description="Let the rollout policy promote a challenger on matured outcomes.")
    auto_rollback: bool = Field(default=True, description="Let the rollout policy roll a failing champion back by itself.")

    @model_validator(mode="after")
    def _contact_list_explained(self) -> Rollout:
        # The reasons are for the people who act on the list: a contacted customer without them is a silent gap.
        if self.reasons and self.reasons_share < self.contact_budget:
            raise ValueError(
                f"rollout.reasons_share ({self.reasons_share}) is below rollout.contact_budget ({self.contact_budget}): "
                "contacted customers would have no reasons; set CHURN_REASONS_SHARE to at least the contact budget"
            )
        return self


class Compute(BaseModel):
    """Which engine runs the heavy stages: the day's features and the carried state, the training set's snapshots, batch scoring.

    polars runs them in the step's process (one machine); spark runs them on a Spark cluster (Spark Connect,
    a standalone master, YARN or Kubernetes) reading and writing the same lake, so everything downstream is unchanged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["polars", "spark"] = Field(
        default="polars",
        description="polars: the heavy stages in the step's process; spark: on the Spark cluster below (needs the spark extra).",
    )
    spark_master: str = Field(
        default="local[*]",
        min_length=1,
        description="Spark master URL when no Spark Connect endpoint is set: local[*], spark://host:7077, yarn or k8s://https://host:443.",
    )
    spark_remote: SecretStr | None = Field(
        default=None,
        description="Spark Connect endpoint, sc://host:15002 (it may carry a token: secret); set, it wins over spark_master.",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='Further Spark configuration, e.g. {"spark.executor.instances": "8", "spark.executor.memory": "8g"}.',
    )

    @field_validator("spark_conf")
    @classmethod
    def _spark_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if not re.fullmatch(r"spark\.[A-Za-z0-9_.\-]+", k))
        if bad:
            raise ValueError(f"spark_conf keys must be Spark settings (spark.*), not {bad[:5]}")
        return value
