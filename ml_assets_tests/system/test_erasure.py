"""`churn erase` on a copy of the e2e run: afterwards the id is nowhere the pipeline writes; the next ingest drops it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lib.erasure import expired_partitions, without_customer
from lib.governance import id_hash
from ml_assets_tests.conftest import E2E_DRIFT_DAYS, PipelineRun, copy_pipeline_env, feature_store_for, resources_for, settings_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]
BIN = Path(sys.executable).parent


def _rows_with(lake: Path, customer_id: str) -> dict[str, int]:
    """Rows of `customer_id` in every Parquet file of the lake, any column, by file; and any other file that holds the text."""
    found: dict[str, int] = {}
    for path in lake.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            hits = sum(int((frame[c].cast(pl.String, strict=False).str.strip_chars() == customer_id).sum()) for c in frame.columns)
            if hits:
                found[str(path.relative_to(lake))] = hits
        elif customer_id.encode() in path.read_bytes():
            found[str(path.relative_to(lake))] = -1
    return found


def test_erase_leaves_no_trace_of_the_id_anywhere_the_pipeline_writes(e2e: PipelineRun, tmp_path: Path) -> None:
    from resources import ModelRegistry

    env, data, _ = copy_pipeline_env(e2e, tmp_path)
    lake = data / "lake"
    served = e2e.read("batch_predictions", [E2E_DRIFT_DAYS[1]])
    training = pl.read_parquet(next((lake / "training_set").rglob("*.parquet"))) if (lake / "training_set").is_dir() else None
    candidates = served["customer_id"].to_list()
    if training is not None:
        candidates = [c for c in candidates if c in set(training["customer_id"].to_list())]
    victim, bystander = candidates[0], candidates[1]
    before = _rows_with(lake, victim)
    assert {k.split("/")[0] for k in before} >= {"raw_transactions", "validated_transactions", "customer_features", "batch_predictions"}, (
        before
    )
    store = feature_store_for(data, str(lake))
    assert store.online_dict([victim])["recency_days"][0] is not None
    registry = ModelRegistry(url=f"sqlite:///{data / 'registry.sqlite'}")
    now = dt.datetime.now(dt.UTC)
    registry.record_predictions(
        [
            {
                "at": now,
                "request_id": "r1",
                "key_name": "k",
                "customer_id": c,
                "status": 200,
                "churn_probability": 0.5,
                "model_version": "v",
            }
            for c in (victim, bystander)
        ]
    )
    bystander_rows = _rows_with(lake, bystander)
    bystander_records = len(registry.predictions(customer_id=bystander))  # the service tests may have asked for them too

    out = subprocess.run(
        [str(BIN / "churn"), "erase", victim, "--reason", "erasure request #42"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    # No CHURN_ERASURE_KEY here: a local key was generated on first use (owner-only), and the id is kept only keyed by it.
    key_file = data / "secrets" / "erasure.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    keyed = id_hash(victim, key_file.read_text().strip())
    assert victim not in out.stdout and f"hmac-sha256:{keyed}" in out.stdout and id_hash(victim) not in out.stdout

    assert _rows_with(lake, victim) == {}
    # Models, ONNX graphs, drift references and reports hold no customer ids in the first place.
    assert _rows_with(data / "artifacts", victim) == {}
    assert _rows_with(lake, bystander) == bystander_rows  # nobody else lost a row
    after = feature_store_for(data, str(lake)).online_dict([victim])
    assert all(v == [None] for k, v in after.items() if k != "customer_id" and not k.endswith("__ts")), after
    assert feature_store_for(data, str(lake)).online_dict([bystander])["recency_days"][0] is not None
    assert registry.predictions(customer_id=victim) == [] and len(registry.predictions(customer_id=bystander)) == bystander_records
    event = registry.events(1)[0]
    assert event["action"] == "erased" and keyed in event["reason"] and victim not in json.dumps(event, default=str)
    assert id_hash(victim) not in json.dumps(event, default=str)
    assert "erasure request #42" in event["reason"] and event["actor"].startswith("os:")
    # Dagster's event log: previews and check metadata carry no customer ids.
    records = e2e.instance.get_event_records(dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION), limit=100_000)
    checks = e2e.instance.get_event_records(dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=100_000)
    assert records and not [r for r in [*records, *checks] if victim in str(r.event_log_entry.dagster_event)]


def test_an_erased_customer_is_not_read_back_in_from_the_source(e2e: PipelineRun, tmp_path: Path) -> None:
    from ml_assets.assets.ingest import raw_transactions
    from resources import ModelRegistry

    env, data, _ = copy_pipeline_env(e2e, tmp_path)
    day = E2E_DRIFT_DAYS[1]
    raw = e2e.read("raw_transactions", [day])
    victim = raw["customer_id"][0]
    expected = int((raw["customer_id"] == victim).sum())
    registry = ModelRegistry(url=f"sqlite:///{data / 'registry.sqlite'}")
    registry.record_erasure(victim, actor="test", reason="request", removed={})
    resources = resources_for(data, f"sqlite:///{data / 'warehouse.sqlite'}")
    assert settings_for(data)  # the copy's own locations
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_transactions], partition_key=day.isoformat(), resources=resources, instance=instance)
    assert result.success
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and check.metadata["rows_of_erased_customers"].value == expected
    again = pl.read_parquet(data / "lake" / "raw_transactions" / f"{day.isoformat()}.parquet")
    assert victim not in again["customer_id"].to_list() and again.height == raw.height - expected


def test_erasure_and_retention_rules() -> None:
    frame = pl.DataFrame({"customer_id": ["A1", " A1 ", "B2", None], "x": [1, 2, 3, 4]})
    kept, removed = without_customer(frame, "A1")
    assert removed == 2 and kept["x"].to_list() == [3, 4]
    assert without_customer(pl.DataFrame({"x": [1]}), "A1")[1] == 0
    assert without_customer(pl.DataFrame({"customer_id": [101, 102]}), "101")[1] == 1  # a numeric id column kept as read
    today = dt.date(2026, 6, 1)
    assert expired_partitions(["2026-01-01", "2026-05-01", "2026-05-31", "notes"], today, 60) == ["2026-01-01"]
