"""Retraining policy and failure notifications: the knobs the sensors read, and where they report.

`RetrainPolicy` says how often drift may ask for retraining (the decision is
lib/retraining.py).  `FailureNotifier` keeps a record of every failed pipeline run where a
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

from lib.retraining import is_event
from lib.settings import Settings


class RetrainPolicy(dg.ConfigurableResource):
    """How often the drift sensor may ask for retraining, and whether drift of the churn score alone counts.

    Whether a day drifted is `drift_report`'s verdict (its `drift_share_threshold`, the one owner of that setting);
    the decision itself is lib/retraining.py.
    """

    # Defaults are the settings' own; build_resources passes the configured values.
    prediction_drift_triggers: bool = Field(default=True, description="Also treat drift of the churn score itself as an event.")
    cooldown_hours: float = Field(
        default=Settings.model_fields["retrain_cooldown_hours"].default,
        description="At most one drift-triggered retraining request per this many hours.",
    )

    def is_event(self, metadata: dict[str, Any]) -> bool:
        """Dataset drift as the report judged it, drift of the churn score, or matured performance below the champion's."""
        return is_event(metadata, self.prediction_drift_triggers)


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
