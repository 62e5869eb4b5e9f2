"""The production configuration, for real: every backend the pipeline talks to is the production one.

- Dagster instance (runs, event log, schedules) on PostgreSQL via dagster-postgres, in a throw-away database;
- source warehouse, model registry and Feast's SQL registry on PostgreSQL (127.0.0.1:5432);
- Feast online store on Redis (127.0.0.1:6379);
- every URL comes from the environment through `dg.EnvVar`, as `build_resources()` wires it in production,
  and carries a planted password: none of it may reach the event log, run records or generated files.

A full pipeline run, a drift-sensor tick that retrains, and a schedule tick that runs the daily job all go
through that instance.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from ml_assets_tests.conftest import E2E_DRIFT_DAYS, E2E_END, E2E_QUIET_DAYS, E2E_START, PG_URL, run_full_pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.xdist_group("postgres")]

# PostgreSQL here trusts local connections, so a password in the URL is accepted and ignored:
# the pipeline handles it exactly as it would a real one.
SECRET = f"pw-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_dagster_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance whose run, event-log and schedule storage live in a fresh PostgreSQL database."""
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    # As the Helm chart writes it: the password from the environment, never in dagster.yaml;
    # psycopg2 named (see postgresqlScheme in deploy/helm/values.yaml).
    postgres_db = {
        "username": "postgres",
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": "127.0.0.1",
        "db_name": name,
        "port": 5432,
        "scheme": "postgresql+psycopg2",
    }
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", SECRET)
    try:
        with dg.instance_for_test(
            overrides={"storage": {"postgres": {"postgres_db": postgres_db}}}, temp_dir=str(tmp_path / "home")
        ) as instance:
            yield instance
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


@pytest.fixture
def feast_project() -> Iterator[str]:
    """A Feast project name of the test's own; afterwards every Redis key of it is deleted (features and the served-day record)."""
    import redis

    project = f"churn_{uuid.uuid4().hex[:8]}"
    yield project
    client = redis.Redis(host="127.0.0.1", port=6379)
    # Feast's keys are the serialized entity key followed by the project name.
    for key in client.scan_iter(match=f"*{project}*", count=10_000):
        client.delete(key)


def _production_env(monkeypatch: pytest.MonkeyPatch, root: Path, pg_schema: str, project: str) -> dict[str, str]:
    with_pw = PG_URL.replace("postgres@", f"postgres:{SECRET}@")
    env = {
        "CHURN_DATA_DIR": str(root / "data"),
        "CHURN_LAKE_ROOT": str(root / "lake"),
        "CHURN_ARTIFACT_ROOT": str(root / "artifacts"),
        "CHURN_WAREHOUSE_URL": with_pw,
        "CHURN_SOURCE_SCHEMA": pg_schema,
        "CHURN_SOURCE_TABLE": "sales",
        "CHURN_COLUMN_MAP": '{"ts": "sold_at"}',
        "CHURN_REGISTRY_URL": with_pw,
        "CHURN_REGISTRY_SCHEMA": pg_schema,
        "CHURN_FEAST_REPO": str(root / "feature_repo"),
        "CHURN_FEAST_PROJECT": project,
        "CHURN_FEAST_REDIS_URL": "127.0.0.1:6379",  # no password: this Redis has no AUTH, and Feast would send one
        "CHURN_FEAST_REGISTRY_URL": f"{with_pw}?options=-csearch_path%3D{pg_schema}",
        "CHURN_FAILURE_WEBHOOK_URL": f"http://127.0.0.1:9/hooks/{SECRET}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _secret_leaks(instance: dg.DagsterInstance, root: Path) -> list[str]:
    """Every place a leaked password could land: run records, the event log, files the pipeline generated."""
    from dagster._serdes import serialize_value

    leaks = []
    for run in instance.get_runs():
        if SECRET in serialize_value(run):
            leaks.append(f"run record {run.run_id}")
        for entry in instance.all_logs(run.run_id):
            if SECRET in serialize_value(entry):
                leaks.append(f"event {entry.dagster_event_type} in run {run.run_id}: {entry.message[:200]}")
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".json", ".txt", ".html", ".log"} and SECRET in path.read_text(errors="replace"):
            leaks.append(str(path))
    return leaks


def test_production_backends_end_to_end(
    tmp_path: Path,
    pg_schema: str,
    pg_dagster_instance: dg.DagsterInstance,
    feast_project: str,
    monkeypatch,
) -> None:
    from dagster._core.storage.dagster_run import DagsterRunStatus

    from lib.settings import load_settings
    from ml_assets.jobs import build_jobs
    from ml_assets.pipeline import run_drift_sensor_once
    from resources import build_feature_store, build_resources
    from sensors import build_schedules

    instance = pg_dagster_instance
    _production_env(monkeypatch, tmp_path, pg_schema, feast_project)
    resources = build_resources()
    # Production wiring: the secrets are EnvVars, resolved only inside runs.
    assert isinstance(resources["warehouse"].url, dg.EnvVar) and isinstance(resources["registry"].url, dg.EnvVar)
    assert resources["feature_store"].online_store == "redis"

    run = run_full_pipeline(
        tmp_path, PG_URL, instance, resources=resources, db_schema=pg_schema, table="sales", column_map={"ts": "sold_at"}
    )

    with sa.create_engine(PG_URL).connect() as conn:
        source_rows = conn.execute(sa.text(f'select count(*) from "{pg_schema}".sales')).scalar_one()  # noqa: S608 (the test's own schema name)
        # Stored as a real timestamp column, not text.
        col_type = conn.execute(
            sa.text(
                "select data_type from information_schema.columns where table_schema = :s and table_name = 'sales' and column_name = 'sold_at'"
            ),
            {"s": pg_schema},
        ).scalar_one()
        registry_tables = set(sa.inspect(conn).get_table_names(schema=pg_schema))
    assert col_type.startswith("timestamp")
    assert {"model_versions", "registry_events"} <= registry_tables  # the registry lives in PostgreSQL

    days = [E2E_START + dt.timedelta(days=i) for i in range((E2E_END - E2E_START).days + 1)]
    raw = run.read("raw_transactions", days)
    valid = run.read("validated_transactions", days)
    quarantined = run.read("quarantined_transactions", days)
    assert raw.height == source_rows == run.transactions.height
    assert raw.height == valid.height + quarantined.height
    # Same rows as generated, timestamps intact through the database round trip.
    assert raw.sort("transaction_id")["ts"].equals(run.transactions.sort("transaction_id")["ts"])
    assert run.metadata("lgbm_model")["test_roc_auc"] >= 0.80
    assert all(run.metadata("drift_report", d)["dataset_drift"] is False for d in E2E_QUIET_DAYS)
    assert all(run.metadata("drift_report", d)["dataset_drift"] is True for d in E2E_DRIFT_DAYS)
    preds = run.read("batch_predictions", list(E2E_DRIFT_DAYS))
    assert preds["churn_probability"].is_between(0, 1).all() and preds.height > 0

    # Online store on Redis: what the scoring service would read equals the latest snapshot.
    online = run.metadata("online_features", E2E_DRIFT_DAYS[-1])
    assert online["customers"] > 0
    sample = run.read("customer_features", [E2E_DRIFT_DAYS[-1]]).head(5)
    # Read as the scoring service does: a store built from the environment with the secrets resolved now.
    served = build_feature_store(str(tmp_path / "lake"), resolve_env=True).online_dict(sample["customer_id"].to_list())
    assert served and all(v is not None for v in served["recency_days"])

    # A drift-sensor tick against the PostgreSQL instance: drift was injected, so it asks for retraining,
    # and the retraining run is recorded there with the sensor's run key.
    result, retrain = run_drift_sensor_once(instance, resources)
    assert retrain is not None and retrain.success, "the drift sensor did not retrain"
    stored = instance.get_run_by_id(retrain.run_id)
    assert stored.status == DagsterRunStatus.SUCCESS and stored.tags["dagster/sensor_name"] == "drift_retraining_sensor"
    # The same tick again asks for nothing: the run it launched is in the instance's run storage.
    again, none = run_drift_sensor_once(instance, resources)
    assert none is None and not again.run_requests

    # A schedule tick: the daily schedule at 02:00 asks for the previous day's partition, and that run succeeds.
    loaded = load_settings()
    jobs = build_jobs(loaded)
    daily_pipeline_job, daily_pipeline_schedule = jobs.daily, build_schedules(jobs, loaded)[0]
    tick_time = dt.datetime.combine(E2E_END, dt.time(2, 0), tzinfo=dt.UTC)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick_time) as context:
        requests = daily_pipeline_schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == [(E2E_END - dt.timedelta(days=1)).isoformat()]
    job = dg.Definitions(assets=_all_assets(), jobs=[daily_pipeline_job], resources=resources).resolve_job_def(daily_pipeline_job.name)
    daily = job.execute_in_process(instance=instance, partition_key=requests[0].partition_key, tags=requests[0].tags)
    assert daily.success
    assert instance.get_run_by_id(daily.run_id).tags["dagster/partition"] == requests[0].partition_key

    leaks = _secret_leaks(instance, tmp_path)
    assert not leaks, f"the planted password leaked into: {leaks[:5]}"
    assert len(instance.get_runs()) == 6  # ingest, train, two scoring ranges, retrain, daily: all in PostgreSQL


def _all_assets() -> list:
    from ml_assets.definitions import ALL_ASSETS, ALL_CHECKS

    return [*ALL_ASSETS, *ALL_CHECKS]
