"""Retraining policy and failure notifications: the knobs the sensors read, and where they report.

`RetrainPolicy` says how often drift may ask for retraining (the decision is
lib/retraining.py).  `FailureNotifier` keeps a record of every failed pipeline run
and every alert where a user can find it (`<artifact root>/run_failures/`,
`<artifact root>/alerts/`) and, when a webhook URL is configured (as a
`dg.EnvVar`: such URLs carry tokens), posts a short JSON message to it.
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
    """Where failed runs and rollout events are recorded and announced: one mechanism for every alert.

    Each alert is a JSON record under the artifact root (`run_failures/<run id>.json`,
    `alerts/<kind>/<key hash>.json`) and, when a webhook is set, one POST of
    Slack-compatible JSON (`{"text": ...}` plus the details) with a link to the
    run in the UI. An alert whose record exists already is a duplicate: neither
    written nor posted again, so one event gives one message however often it
    is seen.
    """

    record_root: str = Field(description="Folder or fsspec URL for one JSON record per failed run and per alert.")
    webhook_url: str | None = Field(default=None, description="POST a JSON message here on failure and on each alert; off when empty.")
    timeout_seconds: float = Field(default=5.0, description="Webhook timeout; a slow receiver never blocks the sensor for long.")
    ui_url: str = Field(default="http://127.0.0.1:3000", description="The Dagster UI's address, for the run link in each message.")

    def record(self, failure: dict[str, Any]) -> str:
        from upath import UPath

        from resources.lake import Lake

        path = UPath(self.record_root) / "run_failures" / f"{failure['run_id']}.json"
        Lake.write_bytes(path, json.dumps(failure, indent=2, sort_keys=True, default=str).encode())
        return str(path)

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    def post(self, failure: dict[str, Any]) -> str:
        """Announce a failed run; returns 'off', 'sent <status>' or 'failed: <reason>' (never the URL: it may hold a token)."""
        text = f"churn pipeline run {failure['run_id']} of {failure['job_name']} failed: {failure['error'][:500]}"
        return self._send({"text": f"{text} ({self.run_url(failure['run_id'])})", **failure})

    def alert(self, kind: str, key: str, text: str, details: dict[str, Any], run_id: str | None = None) -> str:
        """Record and announce one event (a drift event, a promotion, a rollback, a failed gate) once: 'duplicate' when
        this (kind, key) was alerted before, else what `post` returns."""
        import hashlib

        from upath import UPath

        from resources.lake import Lake

        path = UPath(self.record_root) / "alerts" / kind / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        if path.exists():
            return "duplicate"
        message = {"text": text + (f" ({self.run_url(run_id)})" if run_id else ""), "kind": kind, "key": key, "run_id": run_id, **details}
        Lake.write_bytes(path, json.dumps(message, indent=2, sort_keys=True, default=str).encode())
        return self._send(message)

    def _send(self, message: dict[str, Any]) -> str:
        if not self.webhook_url:
            return "off"
        if not self.webhook_url.startswith(("https://", "http://")):
            return "failed: webhook URL must be http(s)"
        body = json.dumps(message, default=str).encode()
        request = urllib.request.Request(self.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST")  # noqa: S310 (scheme checked above)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310 (http(s) only, checked above)
                return f"sent {response.status}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            return f"failed: {reason}"
