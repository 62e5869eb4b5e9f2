"""When drift asks for a retraining run: events, cooldown, runs in flight and repeated causes, as one pure decision.

`drift_retraining_sensor` (sensors/drift.py) gathers the facts from the
Dagster instance and the registry and acts on the `Decision`; everything it
decides is here, testable without an instance.

The drift verdict has one owner: `drift_report` decides `dataset_drift` with
its `drift_share_threshold` (the setting of that name) and writes it into each
day's metadata; this module reads the verdict, it never re-compares the share.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lib.drift import same_cause

TRIGGER_TAG = "ml/trigger"


@dataclass(frozen=True)
class DriftRecord:
    """One day's drift verdicts as `drift_report` wrote them."""

    partition: str | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class LastRequest:
    """The newest drift-triggered training run: when it was created and the tags the request gave it."""

    created_at: dt.datetime
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Decision:
    """Either a request (run key and tags) or the reason there is none."""

    reason: str
    run_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def requested(self) -> bool:
        return self.run_key is not None


def is_event(metadata: Mapping[str, Any], prediction_drift_triggers: bool = True) -> bool:
    """Dataset drift (the report's verdict), drift of the churn score itself (when it counts), or matured performance drift."""
    return (
        bool(metadata.get("dataset_drift", False))
        or (prediction_drift_triggers and bool(metadata.get("prediction_drift", False)))
        or bool(metadata.get("performance_drift", False))
    )


def drift_events(records: Sequence[DriftRecord], champion: str | None, prediction_drift_triggers: bool) -> list[DriftRecord]:
    """The records that are events against the current champion (a report scored by an earlier one says nothing about it)."""
    return [
        r
        for r in records
        if (champion is None or r.metadata.get("model_version") == champion) and is_event(r.metadata, prediction_drift_triggers)
    ]


def retrain_decision(
    records: Sequence[DriftRecord],
    champion: str | None,
    last: LastRequest | None,
    in_flight: Sequence[str],
    now: dt.datetime,
    cooldown_hours: float,
    prediction_drift_triggers: bool = True,
) -> Decision:
    """One retraining request for the first drift event of these records, unless a run is in flight, the cooldown
    holds, or the last drift retraining already answered the same cause without a new champion."""
    events = drift_events(records, champion, prediction_drift_triggers)
    if not events:
        return Decision(f"{len(records)} new drift reports, none above the threshold")
    first = events[0]
    partition, metadata = first.partition, first.metadata
    version = champion or "none"
    if in_flight:
        return Decision(f"drift on {partition} against {version}, but training run {in_flight[0]} is already queued or running")
    if last is not None and now - last.created_at < dt.timedelta(hours=cooldown_hours):
        return Decision(
            f"drift on {partition} against {version}, within the {cooldown_hours:g} h cooldown of the request at "
            f"{last.created_at:%Y-%m-%d %H:%M} UTC"
        )
    columns = sorted(metadata.get("drifted_columns") or [])
    share = float(metadata.get("drift_share", 0.0))
    tags = last.tags if last else {}
    # The last drift retraining kept this champion: the same cause again is not a reason to retrain again.
    if last is not None and tags.get("ml/drift_champion") == version and not metadata.get("performance_drift"):
        seen = [c for c in tags.get("ml/drifted_columns", "").split(",") if c]
        if same_cause(seen, float(tags.get("ml/drift_share", "0") or 0.0), columns, share):
            return Decision(
                f"drift on {partition} against {version} (share {share:.2f}, {columns}) is the cause the retraining of "
                f"{last.created_at:%Y-%m-%d %H:%M} UTC already answered without a new champion; waiting for it to change materially"
            )
    return Decision(
        f"drift event: {partition}, drift share {metadata.get('drift_share')}, champion {version}; requesting retraining",
        run_key=f"drift:{version}:{partition}",
        tags={
            TRIGGER_TAG: "drift",
            "ml/run_kind": "training",
            "ml/drift_partition": partition or "",
            "ml/drift_champion": version,
            "ml/drift_share": f"{share:.3f}",
            "ml/drifted_columns": ",".join(columns),
            "ml/drifted_days_in_tick": str(len(events)),
        },
    )
