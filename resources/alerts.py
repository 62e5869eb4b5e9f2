"""Retraining policy and failure notifications: the knobs the sensors read, and where they report.

`RetrainPolicy` says when drift is bad enough to retrain and how often that may
happen.  `FailureNotifier` keeps a record of every failed pipeline run where a
user can find it (`<artifact root>/run_failures/<run id>.json`) and, when a
webhook URL is configured (as a `dg.EnvVar`: such URLs carry tokens), posts a
short JSON message to it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import dagster as dg
from pydantic import Field

from lib.settings import Settings


class RetrainPolicy(dg.ConfigurableResource):
    """When the drift sensor asks for a retraining run."""

    # Defaults are the settings' own; build_resources passes the configured values.
    drift_share_threshold: float = Field(
        default=Settings.model_fields["drift_share_threshold"].default,
        description="A day counts as a drift event when at least this share of feature columns (ageing ones excluded) drifted.",
    )
    prediction_drift_triggers: bool = Field(default=True, description="Also treat drift of the churn score itself as an event.")
    cooldown_hours: float = Field(
        default=Settings.model_fields["retrain_cooldown_hours"].default,
        description="At most one drift-triggered retraining request per this many hours.",
    )

    def is_event(self, metadata: dict[str, Any]) -> bool:
        """Data drift above the share threshold, drift of the churn score, or matured performance below the champion's."""
        share = float(metadata.get("drift_share", 0.0))
        return (
            share >= self.drift_share_threshold
            or (self.prediction_drift_triggers and bool(metadata.get("prediction_drift", False)))
            or bool(metadata.get("performance_drift", False))
        )


class FailureNotifier(dg.ConfigurableResource):
    """Where failed runs are recorded and announced."""

    record_root: str = Field(description="Folder or fsspec URL for one JSON record per failed run.")
    webhook_url: str | None = Field(default=None, description="POST a JSON message here on failure; off when empty.")
    timeout_seconds: float = Field(default=5.0, description="Webhook timeout; a slow receiver never blocks the sensor for long.")

    def record(self, failure: dict[str, Any]) -> str:
        from upath import UPath

        from resources.lake import Lake

        path = UPath(self.record_root) / "run_failures" / f"{failure['run_id']}.json"
        Lake.write_bytes(path, json.dumps(failure, indent=2, sort_keys=True, default=str).encode())
        return str(path)

    def post(self, failure: dict[str, Any]) -> str:
        """Send the message; returns 'off', 'sent <status>' or 'failed: <reason>' (never the URL: it may hold a token)."""
        if not self.webhook_url:
            return "off"
        if not self.webhook_url.startswith(("https://", "http://")):
            return "failed: webhook URL must be http(s)"
        body = json.dumps(
            {"text": f"churn pipeline run {failure['run_id']} of {failure['job_name']} failed: {failure['error'][:500]}", **failure},
            default=str,
        ).encode()
        request = urllib.request.Request(self.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST")  # noqa: S310 (scheme checked above)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310 (http(s) only, checked above)
                return f"sent {response.status}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            return f"failed: {reason}"
