"""A plain purchase log, end to end, as a user runs it: `churn init` writes the settings, `churn run` does the rest.

The source is the generator's retail profile (customer number, purchase date,
quantity, amount; numeric ids, a DATE column, most customers buying once),
with a few rows no pipeline can use planted in it. On SQLite `churn run` runs
the whole graph in a subprocess with only the settings file and the
environment: ingest, validation, features, Feast, both models, ONNX, champion,
scoring, drift reports, then one drift-sensor evaluation and the retraining run
it launches, which must use the user's label horizon (not the defaults) and
succeed. On PostgreSQL and MariaDB, where only the reading differs (`churn
init`'s profile queries, the day windows, the DATE column), `churn init` and the
ingest stage run the same way (the stages after it read the lake, not the
database). Every source row must be accounted for: validated, quarantined or
unplaceable.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from lib.datagen import RetailConfig, generate_retail
from ml_assets_tests.conftest import PG_URL
from ml_assets_tests.resources.test_sources import MARIADB_URL
from resources.warehouse import write_frame

pytestmark = [pytest.mark.slow]

START, END = dt.date(2025, 2, 15), dt.date(2025, 6, 30)
DRIFT = dt.date(2025, 6, 10)
HORIZON = 45
# Rows that belong to no day, and one that breaks a rule: the run must keep every one of them somewhere.
PLANTED = [
    {"customer_no": 91, "purchase_date": None, "quantity": 1, "amount": 10.0},  # unplaceable: no date
    {"customer_no": 92, "purchase_date": dt.date(1970, 1, 1), "quantity": 1, "amount": 10.0},  # unplaceable: before the calendar
    {"customer_no": 93, "purchase_date": dt.date(2025, 3, 3), "quantity": 1, "amount": -5.0},  # quarantined: amount_positive
]


def _churn(env: dict[str, str], *args: str, timeout: int = 900) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ml_assets.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"churn {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


# The ingest stage alone, as `churn run` starts it, in a process with only the settings file and the environment.
INGEST_ONLY = """
import datetime as dt, sys
import dagster as dg
from ml_assets.pipeline import INGEST_TO_FEATURES, materialize_range
first, last = (dt.date.fromisoformat(d) for d in sys.argv[1:3])
assert materialize_range(INGEST_TO_FEATURES, first, last, dg.DagsterInstance.get(), log_level="ERROR").success
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mariadb"])
def test_a_plain_purchase_log_runs_end_to_end_with_only_churn_init(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = {"sqlite": f"sqlite:///{tmp_path / 'shop.sqlite'}", "postgres": PG_URL, "mariadb": MARIADB_URL}[backend]
    table = f"purchases_{uuid.uuid4().hex[:8]}"
    log = generate_retail(RetailConfig(start=START, end=END, customers=2_000, seed=5, drift_date=DRIFT))
    write_frame(url, table, log, replace=True)
    engine = sa.create_engine(url)
    t = sa.table(table, sa.column("customer_no"), sa.column("purchase_date"), sa.column("quantity"), sa.column("amount"))
    with engine.begin() as conn:
        conn.execute(sa.insert(t), PLANTED)
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CHURN_DATA_DIR": str(data),
        "CHURN_FEAST_REPO": str(data / "feature_repo"),
        "CHURN_SETTINGS_FILE": str(tmp_path / "churn.yaml"),
    }
    for name in ("CHURN_WAREHOUSE_URL", "CHURN_PARTITIONS_START", "CHURN_COLUMN_MAP", "CHURN_SOURCE_TABLE", "CHURN_LABEL_HORIZON_DAYS"):
        env.pop(name, None)
    try:
        init = _churn(
            env,
            "init",
            "--url",
            url,
            "--table",
            table,
            "--horizon-days",
            str(HORIZON),
            "--min-history-days",
            "30",
            "--partitions-start",
            START.isoformat(),
            # Seven months of a memoryless buy-till-you-die log carry little signal: the floor is the user's setting.
            "--min-roc-auc",
            "0.6",
        )
        assert "customer_id      <- customer_no" in init and "ts               <- purchase_date" in init
        assert "channel          <- (absent)" in init
        # The table's shape, counted by the database itself (no date: not a day; 1970 and the others are).
        days = log["purchase_date"].unique().to_list()
        assert f"days with rows: {len({*days, dt.date(1970, 1, 1), dt.date(2025, 3, 3)}):,} of " in init
        firsts = log.group_by("customer_no").agg(first=pl.col("purchase_date").min())
        assert f"customers by month of first purchase ({firsts.height + 2:,}): 1970-01 0%, 2025-02 " in init
        whole_graph = backend == "sqlite"
        if whole_graph:
            summary = _churn(env, "run", "--end", END.isoformat(), "--score-days", "3")
            assert "unplaceable_transactions" in summary and "FAILED" not in summary
        else:
            done = subprocess.run(
                [sys.executable, "-c", INGEST_ONLY, START.isoformat(), END.isoformat()],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, done.stderr[-4000:]

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:

            def records(key: str, limit: int = 1000) -> list:
                return instance.fetch_materializations(dg.AssetKey(key), limit=limit).records

            _check_every_row_is_in_one_place(records, engine, t, log)
            if not whole_graph:
                return

            # The first training run and the one the drift sensor launched both used the user's horizon.
            training = [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records("training_set")]
            assert len(training) == 2, "the drift sensor did not launch a retraining run"
            assert all(md["horizon_days"] == HORIZON for md in training)
            retrain = instance.get_run_by_id(records("training_set")[0].run_id)
            assert retrain.tags.get("ml/trigger") == "drift"
            assert instance.get_run_by_id(records("champion_model")[0].run_id).is_success
            # Features exist only for columns the log has.
            features = {k: v.value for k, v in records("customer_features")[0].asset_materialization.metadata.items()}
            columns = {c.name for c in features["dagster/column_schema"].columns}
            assert "avg_quantity" in columns and not {"mobile_share", "store_share", "n_categories"} & columns
            assert records("drift_report")
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop table if exists {table}"))
        engine.dispose()


def _check_every_row_is_in_one_place(records, engine: sa.Engine, t: sa.TableClause, log: pl.DataFrame) -> None:
    """Validated + quarantined + unplaceable rows add up to the source's own count, and the planted rows are where they belong."""

    def day_rows(key: str) -> int:
        latest: dict[str, int] = {}
        for r in reversed(records(key, limit=5000)):
            latest[r.partition_key] = int(r.asset_materialization.metadata["dagster/row_count"].value)
        return sum(latest.values())

    unplaceable = records("unplaceable_transactions")[0].asset_materialization.metadata
    with engine.connect() as conn:
        source_rows = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
    assert unplaceable["by_reason"].value == {"ts_before_calendar": 1, "ts_missing": 1}
    assert day_rows("quarantined_transactions") == 1
    assert day_rows("validated_transactions") + 1 + 2 == source_rows == log.height + len(PLANTED)
    assert records("customer_features")
