"""Experiment tracking in MLflow: what a training run logs and how the registry's decisions are mirrored (pure rules).

The project's registry is the source of truth: MLflow receives a copy for the
people who compare runs there. `resources/tracking.py` makes the calls; the
decisions are here so they can be tested without a server:

- one parent run per Dagster run (``parent_of``: the oldest of the runs
  tagged with the Dagster run id, so two steps starting at once agree);
- a nested run per candidate model, and under LightGBM's a run per search
  trial (``trial_params``);
- what is a param and what is a metric (``run_params``, ``numeric_metrics``):
  MLflow params are strings of at most 6,000 characters, metrics finite floats;
- the aliases ``champion`` and ``challenger`` set from the registry's state
  (``alias_plan``), never the other way round.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Tags that link the two systems (MLflow tag keys).
DAGSTER_RUN_ID = "dagster.run_id"
DAGSTER_RUN_URL = "dagster.run_url"
DAGSTER_STEP = "dagster.step"
CHURN_VERSION = "churn.model_version"
CHURN_KIND = "churn.kind"
ONNX_SHA256 = "churn.onnx_sha256"
ARTIFACT_SHA256 = "churn.artifact_sha256"
ROLE = "churn.role"  # training (the parent), model, trial
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

ALIASES = ("champion", "challenger")
# MLflow's limits: a param value's length, and the characters a metric or param key may hold.
MAX_PARAM_CHARS = 6_000
CUT = " ...(cut by MLflow)"
_KEY = re.compile(r"[^0-9A-Za-z_\-. /]")

SOURCE_OF_TRUTH = (
    "Mirrored from the churn pipeline's model registry, which is the source of truth: promotions, rollbacks and "
    "challengers are decided there (`churn registry ...`, the promotion gate, the rollout policy) and the aliases "
    "`champion` and `challenger` here follow them. Setting an alias here changes nothing the pipeline serves."
)


def safe_uri(uri: str) -> str:
    """A tracking URI without credentials, for logs and metadata (``https://user:token@host`` -> ``https://host``)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def key(name: str) -> str:
    """A metric or param name MLflow accepts (other characters become ``_``)."""
    return _KEY.sub("_", name)[:250]


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested dicts as dotted keys (``data_window.train.rows``), the leaves as they are."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def run_params(values: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them: dotted keys, string values cut to its limit (said so at the cut)."""
    out = {}
    for name, value in flatten("", dict(values)).items():
        text = "" if value is None else str(value)
        if len(text) > MAX_PARAM_CHARS:
            text = text[: MAX_PARAM_CHARS - len(CUT)] + CUT
        out[key(name)] = text
    return out


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics dict (booleans and text are not metrics; NaN is not logged)."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[key(name)] = float(value)
    return out


def trial_params(trial: Mapping[str, Any], loss_key: str = "valid_log_loss") -> tuple[dict[str, str], dict[str, float]]:
    """One search trial: its grid point and stopping round as params, its validation loss as the metric."""
    params = {k: v for k, v in trial.items() if k != loss_key}
    metrics = numeric_metrics({loss_key: trial[loss_key]}) if loss_key in trial else {}
    return run_params(params), metrics


def parent_of(runs: Iterable[Mapping[str, Any]]) -> str | None:
    """The parent run of a Dagster run among the runs tagged with its id: the oldest (start time, then id), so steps
    that created one each at the same moment all pick the same one and the others can be removed."""
    ordered = sorted(runs, key=lambda r: (r["start_time"], r["run_id"]))
    return ordered[0]["run_id"] if ordered else None


def alias_plan(
    champion: str | None, challengers: list[str], tracked: Mapping[str, str], current: Mapping[str, str]
) -> list[tuple[str, str, str | None]]:
    """The alias changes that make MLflow's registered model say what the registry says.

    ``tracked``: registry version -> MLflow model version, for the versions
    MLflow holds; ``current``: alias -> MLflow model version now. Returns
    ``("set", alias, mlflow_version)`` and ``("delete", alias, None)``
    steps. A version MLflow does not hold leaves its alias unset (a model
    trained before tracking was turned on): an alias never points at another
    model than the registry's.
    """
    wanted = {"champion": champion, "challenger": challengers[0] if challengers else None}
    plan: list[tuple[str, str, str | None]] = []
    for alias in ALIASES:
        target = tracked.get(wanted[alias] or "")
        if target is not None and current.get(alias) != target:
            plan.append(("set", alias, target))
        elif target is None and alias in current:
            plan.append(("delete", alias, None))
    return plan


def dagster_run_url(ui_url: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/runs/{run_id}"
