"""One description of the user's problem: the settings file that `churn init` writes, with the environment over it.

The file (YAML; ``CHURN_SETTINGS_FILE``, default ``churn.yaml`` in the working
directory) says where the transactions are and how to read them, when history
starts, what "churned" means (the label horizon) and the gates. Every
consumer takes these values from here: the warehouse resource, the partition
calendar, the training set, the drift report's matured performance, the
quality gates, and so the runs that schedules and the drift sensor launch,
whose run config defaults are these values.

Environment variables keep working and override the file, one variable per
setting (see ``ENV``). Secrets (a database URL with a password) belong in the
environment, never in the file: `churn init` refuses to write one.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_FILE = "churn.yaml"
FILE_ENV = "CHURN_SETTINGS_FILE"


class SettingsError(ValueError):
    """The settings file or an environment variable holds a value the pipeline cannot use; the message names it and the fix."""


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, description="SQLAlchemy URL of the source; None: the embedded SQLite demo warehouse. With a password, set CHURN_WAREHOUSE_URL instead.")
    table: str = Field(default="transactions", description="The transactions table.")
    db_schema: str | None = Field(default=None, description="Schema holding the table (PostgreSQL), if not the default.")
    columns: dict[str, str] = Field(default_factory=dict, description="Canonical column -> your column, for the names that differ.")
    customer_id_pattern: str | None = Field(default=None, description="A regular expression the whole customer id must match.")
    closed_vocabularies: dict[str, list[str]] = Field(default_factory=dict, description="Categorical columns whose values must be in a set.")
    categoricals: list[str] = Field(
        default_factory=list, description="Further categorical columns of your table, by name: each gives the feature n_<name>_values."
    )
    channels: list[str] = Field(
        default_factory=lambda: ["web", "mobile", "store"],
        min_length=1,
        description="The channel vocabulary for features: the first is the reference, every other value gets a '<value>_share' feature.",
    )


class Settings(BaseModel):
    """Every knob of the user's problem, validated once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Source = Field(default_factory=Source)
    partitions_start: dt.date = Field(default=dt.date(2024, 7, 1), description="First day of transaction history (the partition calendar).")
    label_horizon_days: int = Field(default=30, ge=1, le=180, description="A customer has churned when they buy nothing for this many days.")
    min_history_days: int = Field(default=180, ge=0, description="Training snapshots need this many days of history before them.")
    population_days: int | None = Field(
        default=None,
        ge=1,
        description="Score every customer with a purchase in this many days before the snapshot; none (the default) means all of history.",
    )
    backtest_cutoffs: int = Field(default=3, ge=1, le=12, description="Out-of-time backtest: cutoffs each model is trained before and scored at.")
    backtest_every_days: int = Field(default=28, ge=1, description="Out-of-time backtest: days between two cutoffs.")
    baseline_margin: float = Field(
        default=0.002,
        ge=0.0,
        le=0.5,
        description="A candidate is promoted only when its backtest ROC-AUC beats the best baseline (recency, BG/NBD) by this much.",
    )
    max_rejected_share: float = Field(default=0.05, ge=0.0, le=1.0, description="Largest share of a day's rows the quarantine may take before the day is blocked.")
    min_rejected_rows: int = Field(
        default=5, ge=1, description="A day is blocked only when at least this many rows are quarantined (one bad row never blocks a small day)."
    )
    min_roc_auc: float = Field(default=0.7, ge=0.0, le=1.0, description="A model below this test ROC-AUC fails its training run.")
    drift_share_threshold: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Share of drifted features (ageing features excluded) that makes a day a drift event.",
    )
    drift_reference_lag_days: int = Field(
        default=28, ge=1, description="Drift compares a day's customers with the same population this many days earlier."
    )
    retrain_cooldown_hours: float = Field(default=24.0, ge=0.0, description="At most one drift-triggered retraining per this many hours.")

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
}
_JSON_ENV = ("CHURN_COLUMN_MAP", "CHURN_CLOSED_VOCABULARIES", "CHURN_CHANNELS", "CHURN_CATEGORICALS")


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
        import yaml

        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SettingsError(f"settings file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"settings file {path} must hold a mapping of settings, not {type(loaded).__name__}")
        data = loaded or {}
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
                raise SettingsError(f"{var} is not valid JSON ({exc}); expected an object such as {{\"ts\": \"created_at\"}}") from exc
        target = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[leaf] = value
        origin[dotted] = var
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            dotted = ".".join(str(p) for p in error["loc"])
            where = f"environment variable {origin[dotted]}" if dotted in origin else f"{dotted!r} in {path}"
            problems.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc


@cache
def settings() -> Settings:
    """The settings this process loaded (once): what the code location's definitions are built from."""
    return load_settings()


def to_yaml(value: Settings, comments: Mapping[str, str] | None = None) -> str:
    """The settings as the YAML file `churn init` writes (only what differs from the defaults, plus the essentials)."""
    import yaml

    data = value.model_dump(mode="json", exclude_none=True)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    header = "".join(f"# {line}\n" for line in (comments or {}).get("header", "").splitlines())
    return header + text
