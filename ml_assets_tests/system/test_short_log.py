"""A one-year purchase log, as a new user brings it: zero-padded text ids, a DATE column, a count of items, a value.

`churn init --horizon-days 90` alone must write settings that work (it reads the
span and proposes min_history_days; the default 180 cannot label a 90-day horizon
in a year with 30 scored days), `churn run` without --end must end at the source's
last day, and a customer whose only row broke a rule is listed with the reason
instead of vanishing from the scores. A plan the span cannot satisfy fails
before anything is ingested, naming the smallest values that would work.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lib.datagen import RetailConfig, generate_retail
from resources.warehouse import write_frame

pytestmark = [pytest.mark.slow]

START, END = dt.date(2024, 1, 1), dt.date(2024, 12, 31)


def _churn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ml_assets.cli", *args], env=env, capture_output=True, text=True, timeout=900, check=False)


def test_a_one_year_log_runs_on_the_settings_churn_init_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    log = generate_retail(RetailConfig(start=START, end=END, customers=1_500, seed=5))
    log = log.select(
        pl.col("customer_no").cast(pl.String).str.zfill(8).alias("cust"),
        pl.col("purchase_date").alias("date"),
        pl.col("quantity").alias("cds"),
        pl.col("amount").alias("dollar_value"),
    )
    planted = pl.DataFrame(
        {
            "cust": ["99999991", "99999992"],
            "date": [dt.date(2024, 6, 3), dt.date(2024, 6, 4)],
            "cds": [1, 1],
            "dollar_value": [0.0, -4.0],  # a free item (kept: a purchase with no spend); a negative value (quarantined)
        },
        schema=log.schema,
    )
    write_frame(url, "purchases", pl.concat([log, planted]).sort("date"), replace=True)
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CHURN_DATA_DIR": str(data),
        "CHURN_FEAST_REPO": str(data / "feature_repo"),
        "CHURN_SETTINGS_FILE": str(tmp_path / "churn.yaml"),
    }
    for name in [k for k in env if k.startswith("CHURN_") and k not in ("CHURN_DATA_DIR", "CHURN_FEAST_REPO", "CHURN_SETTINGS_FILE")]:
        env.pop(name)

    refused = _churn(env, "init", "--url", url, "--table", "purchases", "--horizon-days", "200", "--out", str(tmp_path / "x.yaml"))
    assert refused.returncode == 2 and "cannot label it" in refused.stderr and "longest horizon this span labels is" in refused.stderr

    init = _churn(env, "init", "--url", url, "--table", "purchases", "--horizon-days", "90", "--min-roc-auc", "0.6", "--score-days", "7")
    assert init.returncode == 0, init.stderr
    written = (tmp_path / "churn.yaml").read_text()
    assert "quantity: cds" in written and "channels" not in written
    assert "proposed min_history_days" in init.stdout and "min_history_days: 180" not in written

    # The default 180 days of history cannot work on this span: refused in the first second, with what would.
    tight = {**env, "CHURN_MIN_HISTORY_DAYS": "180"}
    infeasible = _churn(tight, "run", "--score-days", "7")
    assert infeasible.returncode == 2 and "cannot give a training set" in infeasible.stderr
    assert "CHURN_MIN_HISTORY_DAYS=" in infeasible.stderr and not (data / "lake").exists()
    far = _churn(env, "run", "--end", "2026-01-31")
    assert far.returncode == 2 and "after the source's last day 2024-12-31" in far.stderr

    run = _churn(env, "run", "--score-days", "7")
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    assert "scoring 2024-12-25..2024-12-31" in run.stdout and "scoring with" in run.stdout

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        last = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("batch_predictions"), asset_partitions=[END.isoformat()]), limit=1
        ).records[0]
        md = {k: v.value for k, v in last.asset_materialization.metadata.items()}
    # The free-item customer is scored; the one whose only row was quarantined is listed with the reason.
    assert md["unscored_customers"] == 1, md
    listed = pl.read_parquet(md["unscored_path"])
    assert listed["customer_id"].to_list() == ["99999992"] and "amount_positive" in listed["reason"][0]
    scored = pl.read_parquet(next((data / "lake").rglob(f"batch_predictions/{END.isoformat()}.parquet")))
    assert "99999991" in scored["customer_id"].to_list()
    known = pl.concat([log, planted])["cust"].n_unique()
    assert scored.height + listed.height == known
