"""Typed, frozen records that model assets hand to each other through the lake (as JSON).

A trained model asset returns a `ModelRecord`; its ONNX export returns one of
kind-same with `format="onnx"` and the native artifact as `source`; the
baseline asset returns a `BaselineRecord` (the BG/NBD version plus the
backtest of every baseline); `champion_model` returns a `ChampionDecision`. The lake IO manager writes them with `dump` and
reads them back with `load`, so a consumer gets attributes, not string keys.

The record is a convenience for wiring, not the authority: the registry is.
Export and the parity check take the artifact locations and checksums from the
registry version the record names (see ml_assets/assets/export.py).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RECORD_KEY = "record_type"


class Artifact(BaseModel):
    """Where an artifact is and its sha256 (checked on every read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class ModelRecord(BaseModel):
    """One model version as an asset value: what it is, where its artifact is, the features it takes, its figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    kind: Literal["lightgbm", "torch", "bgnbd", "stack"]
    format: str
    artifact: Artifact
    features: tuple[str, ...]
    # Days after a snapshot that its churn label covers: the training set's, and every consumer's (drift maturity,
    # descriptions, the BG/NBD score). None only on records written before it was recorded.
    horizon_days: int | None = Field(default=None, ge=1)
    metrics: dict[str, Any] = Field(default_factory=dict)
    # What the kind needs to rebuild the model (torch layer sizes).
    architecture: dict[str, Any] | None = None
    # Training facts shown in the UI, not used by any consumer (best iteration, device, ...).
    details: dict[str, Any] = Field(default_factory=dict)
    # For an ONNX export: the native artifact it was converted from.
    source: Artifact | None = None


class BaselineRecord(ModelRecord):
    """The BG/NBD model version plus the out-of-time backtest of every baseline (recency, BG/NBD)."""

    split: Literal["backtest"] = "backtest"
    cutoffs: tuple[str, ...] = ()
    baselines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    best: str | None = None
    best_backtest_roc_auc: float | None = None
    # BG/NBD's parameters as fitted at each cutoff (by cutoff day): candidates pair their backtest with these, unrefitted.
    bgnbd_fits: dict[str, dict[str, float]] = Field(default_factory=dict)


class ChampionDecision(BaseModel):
    """What `champion_model` decided: the champion after this run, why, and the figures it was decided on.

    A report of the decision, not a second champion record: scoring reads the
    champion from the registry (ml_assets/champion.py).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    champion_version: str
    kind: str
    # promoted, kept or rolled_back
    decision: str
    reason: str
    previous_champion: str | None = None
    onnx_uri: str | None = None
    onnx_sha256: str | None = None
    features: tuple[str, ...]
    horizon_days: int | None = None
    # Test-split figures of each model compared, by version.
    evaluated: dict[str, dict[str, float]] = Field(default_factory=dict)


Record = ModelRecord | ChampionDecision
RECORD_CLASSES: tuple[type[BaseModel], ...] = (ModelRecord, ChampionDecision)
_TYPES: dict[str, type[BaseModel]] = {"model": ModelRecord, "baseline": BaselineRecord, "champion": ChampionDecision}


def dump(record: BaseModel) -> bytes:
    """JSON with a type tag, so `load` gives back the same class."""
    tag = next(name for name, cls in _TYPES.items() if type(record) is cls)
    return json.dumps({RECORD_KEY: tag, **record.model_dump(mode="json")}, indent=2, sort_keys=True).encode()


def load(data: bytes) -> Any:
    """A record written by `dump`; any other JSON value comes back as it was (a plain dict)."""
    value = json.loads(data)
    if isinstance(value, dict) and value.get(RECORD_KEY) in _TYPES:
        cls = _TYPES[value.pop(RECORD_KEY)]
        return cls.model_validate(value)
    return value
