"""The same pipeline with PostgreSQL (127.0.0.1:5432, database `test`) as the SQL source."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from ml_assets_tests.conftest import E2E_DRIFT_DAYS, E2E_END, E2E_QUIET_DAYS, E2E_START, PG_URL, run_full_pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.xdist_group("postgres")]


def test_whole_pipeline_with_postgres_source(tmp_path: Path, pg_schema: str) -> None:
    with dg.instance_for_test() as instance:
        run = run_full_pipeline(tmp_path, PG_URL, instance, db_schema=pg_schema, table="sales", column_map={"ts": "sold_at"})

        with sa.create_engine(PG_URL).connect() as conn:
            source_rows = conn.execute(sa.text(f'select count(*) from "{pg_schema}".sales')).scalar_one()
            # Stored as a real timestamp column, not text.
            col_type = conn.execute(
                sa.text(
                    "select data_type from information_schema.columns where table_schema = :s and table_name = 'sales' and column_name = 'sold_at'"
                ),
                {"s": pg_schema},
            ).scalar_one()
        assert col_type.startswith("timestamp")

        days = [E2E_START + dt.timedelta(days=i) for i in range((E2E_END - E2E_START).days + 1)]
        raw = run.read("raw_transactions", days)
        valid = run.read("validated_transactions", days)
        quarantined = run.read("quarantined_transactions", days)
        assert raw.height == source_rows == run.transactions.height
        assert raw.height == valid.height + quarantined.height
        # Same rows as generated, timestamps intact through the database round trip.
        assert raw.sort("transaction_id")["ts"].equals(run.transactions.sort("transaction_id")["ts"])

        assert run.metadata("lgbm_model")["roc_auc"] >= 0.80
        assert all(run.metadata("drift_report", d)["dataset_drift"] is False for d in E2E_QUIET_DAYS)
        assert all(run.metadata("drift_report", d)["dataset_drift"] is True for d in E2E_DRIFT_DAYS)
        preds = run.read("batch_predictions", list(E2E_DRIFT_DAYS))
        assert preds["churn_probability"].is_between(0, 1).all() and preds.height > 0
