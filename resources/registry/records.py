"""A registered model version as the registry hands it out, and the small conversions of its rows."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any


class RegistryError(RuntimeError):
    """A registry operation was refused (unknown version, not promotable, ...)."""


@dataclass(frozen=True)
class ModelVersion:
    version: str
    kind: str
    status: str
    created_at: dt.datetime
    run_id: str
    code_version: str
    data_window: dict[str, Any]
    features: list[str]
    params: dict[str, Any]
    metrics: dict[str, float]
    artifact_uri: str
    artifact_sha256: str
    onnx_uri: str | None
    onnx_sha256: str | None
    parity: dict[str, Any] | None
    parity_passed: bool | None
    reference_uri: str | None = None
    reference_sha256: str | None = None
    # The MLflow run the version was logged to, when tracking is on (resources/tracking.py).
    tracking_run_id: str | None = None

    @property
    def horizon_days(self) -> int | None:
        """The label horizon the version was trained on: what its scores predict and when their outcomes mature.

        Recorded in the data window; BG/NBD versions registered before that carry it in their parameters.
        """
        value = self.data_window.get("horizon_days", self.params.get("horizon_days"))
        return int(value) if value else None

    @property
    def promotable(self) -> bool:
        return bool(self.onnx_uri and self.onnx_sha256 and self.parity_passed)


def current_code_version(configured: str | None = None) -> str:
    """The configured code version (`deployment.code_version`, set by the image) when there is one, else the git
    commit of the checkout, else `unknown`."""
    if configured:
        return configured
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        # Fixed argv, no shell; git from PATH on purpose (it is only a label, and absent git is handled).
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)  # noqa: S603, S607
        if out.returncode == 0:
            dirty = subprocess.run(  # noqa: S603 (fixed argv, no shell)
                ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],  # noqa: S607 (git from PATH, as above)
                capture_output=True,
                text=True,
                timeout=5,
            )
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def to_version(row: Any) -> ModelVersion:
    return ModelVersion(
        version=row.version,
        kind=row.kind,
        status=row.status,
        created_at=utc(row.created_at),
        run_id=row.run_id,
        code_version=row.code_version,
        data_window=json.loads(row.data_window),
        features=json.loads(row.features),
        params=json.loads(row.params),
        metrics=json.loads(row.metrics),
        artifact_uri=row.artifact_uri,
        artifact_sha256=row.artifact_sha256,
        onnx_uri=row.onnx_uri,
        onnx_sha256=row.onnx_sha256,
        parity=json.loads(row.parity) if row.parity else None,
        parity_passed=row.parity_passed,
        reference_uri=row.reference_uri,
        reference_sha256=row.reference_sha256,
        tracking_run_id=getattr(row, "tracking_run_id", None),
    )
