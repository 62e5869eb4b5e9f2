"""Shared fixtures: small generated data, temporary lakes, a once-per-session full pipeline run."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from lib.datagen import GeneratorConfig, generate_transactions

warnings.filterwarnings("ignore", category=dg.BetaWarning)

PG_URL = os.environ.get("CHURN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# The end-to-end scenario: a year of history, behaviour shift on E2E_DRIFT.
E2E_START = dt.date(2024, 7, 1)
E2E_END = dt.date(2025, 6, 30)
E2E_DRIFT = dt.date(2025, 6, 1)
E2E_TRAIN_UNTIL = dt.date(2025, 5, 17)
E2E_QUIET_DAYS = (dt.date(2025, 5, 20), dt.date(2025, 5, 21))  # before the shift
E2E_DRIFT_DAYS = (dt.date(2025, 6, 27), dt.date(2025, 6, 28))  # four weeks after it
E2E_CUSTOMERS = 2500


def settings_for(root: Path) -> object:
    """The project's settings with every location under `root` (the embedded defaults otherwise)."""
    from lib.settings import Deployment, Settings

    return Settings(deployment=Deployment(data_dir=str(root), feast_repo=str(root / "feature_repo")))


def resources_for(root: Path, warehouse_url: str, **warehouse: object) -> dict[str, object]:
    """The code location's own resources (build_resources) under `root`, reading `warehouse_url` with `warehouse` options."""
    from resources import SqlWarehouse, build_resources

    return {**build_resources(settings_for(root)), "warehouse": SqlWarehouse(url=warehouse_url, **warehouse)}


@dataclass
class S3Server:
    """A real S3 API on 127.0.0.1 (moto in server mode, a separate process): requests are real HTTP through s3fs."""

    endpoint: str

    def env(self) -> dict[str, str]:
        """What a pod would get from its secret: credentials and the endpoint (AWS_ENDPOINT_URL, read by botocore)."""
        return {
            "AWS_ACCESS_KEY_ID": "churn-test",
            "AWS_SECRET_ACCESS_KEY": "churn-test-secret",  # noqa: S105 (the local test server's, not a real credential)
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self):
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def bucket(self) -> str:
        name = f"churn-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("the S3 test server (moto) did not start")
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, with this process's environment pointing at it (as a pod's secret would)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


def redis_up() -> bool:
    """Whether the Redis the tests use (127.0.0.1:6379, running here and in CI) accepts connections."""
    from resources.feature_store import tcp_reachable

    return tcp_reachable("127.0.0.1", 6379)


def feature_store_for(root: Path, lake_root: str, **overrides: object):
    """The code location's Feast resource under `root` over the lake at `lake_root`, with `overrides` (a Redis store, a project)."""
    from resources import FeatureStoreResource, build_feature_store

    built = build_feature_store(lake_root, settings=settings_for(root))
    return FeatureStoreResource(**{**{k: getattr(built, k) for k in FeatureStoreResource.model_fields}, **overrides})


def register_version(registry, version: str, kind: str | None = None, roc_auc: float = 0.9, parity: bool | None = True) -> None:
    """A registered version with an ONNX artifact and, unless `parity` is None, a recorded parity verdict (no files behind it)."""
    registry.register(
        version=version,
        kind=kind or version.split("-")[0],
        run_id=f"run-{version}",
        data_window={"train": {"first_snapshot": "2025-01-01", "last_snapshot": "2025-03-01", "rows": 100}},
        features=["recency_days", "tenure_days"],
        params={"num_leaves": 15},
        metrics={"backtest_roc_auc": roc_auc, "test_roc_auc": roc_auc},
        artifact_uri=f"/artifacts/{version}.txt",
        artifact_sha256="a" * 64,
        code_version="abc123",
    )
    registry.attach_onnx(version, f"/artifacts/{version}.onnx", version.ljust(64, "0"), f"run-{version}")
    if parity is not None:
        registry.record_parity(version, version.ljust(64, "0"), parity, {"max_abs_diff": 1e-7}, f"run-{version}")


def drop_event_guards(registry) -> None:
    """What someone with the database owner's rights can do: drop the append-only triggers of the events table."""
    import sqlalchemy as sa

    with registry.engine.begin() as conn:
        if registry.engine.dialect.name in ("sqlite", "mysql", "mariadb"):
            conn.execute(sa.text("DROP TRIGGER registry_events_no_update"))
            conn.execute(sa.text("DROP TRIGGER registry_events_no_delete"))
        else:
            table = registry.engine.dialect.identifier_preparer.format_table(registry._t.events)
            conn.execute(sa.text(f"DROP TRIGGER registry_events_no_change ON {table}"))


def insert_key_behind_the_chain(registry, name: str = "mallory"):
    """An API key row written straight into the table, as a database writer could; returns the NewKey (its token works
    against the row, so only the chain can tell it was never created)."""
    import datetime as dt

    from lib.governance import new_key

    forged = new_key()
    with registry.engine.begin() as conn:
        conn.execute(
            registry._t.api_keys.insert().values(
                key_id=forged.key_id,
                name=name,
                scopes="predict,metrics",
                salt=forged.salt,
                digest=forged.digest,
                created_at=dt.datetime.now(dt.UTC),
                created_by="os:dba",
            )
        )
    return forged


def register_stored(registry, store, version: str, native: bytes = b"native model", onnx: bytes | None = None):
    """A version whose native (and, given `onnx`, ONNX) artifact really is in `store`; returns the native ArtifactRef."""
    ref = store.put("models/lgbm", native, ".txt")
    registry.register(
        version=version,
        kind="lgbm",
        run_id="r",
        data_window={},
        features=["a"],
        params={},
        metrics={},
        artifact_uri=ref.uri,
        artifact_sha256=ref.sha256,
        code_version="c",
    )
    if onnx is not None:
        graph = store.put("onnx/lgbm", onnx, ".onnx")
        registry.attach_onnx(version, graph.uri, graph.sha256, "r")
    return ref


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.xdist_group("postgres")]), "mariadb"])
def any_registry(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh registry on SQLite (a file in a folder that does not exist yet), on PostgreSQL (a schema of its own)
    and on MariaDB (a database of its own, dropped afterwards)."""
    import sqlalchemy as sa

    from resources import ModelRegistry

    if request.param == "sqlite":
        yield ModelRegistry(url=f"sqlite:///{tmp_path / 'nested' / 'registry.sqlite'}")
    elif request.param == "postgres":
        yield ModelRegistry(url=PG_URL, db_schema=request.getfixturevalue("pg_schema"))
    else:
        name = f"churn_reg_{uuid.uuid4().hex[:10]}"
        server = sa.create_engine("mysql+pymysql://root@127.0.0.1:3306/test")
        with server.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        try:
            yield ModelRegistry(url=f"mysql+pymysql://root@127.0.0.1:3306/{name}")
        finally:
            with server.begin() as conn:
                conn.execute(sa.text(f"DROP DATABASE {name}"))
            server.dispose()


@pytest.fixture(autouse=True)
def _no_dead_dagster_instance_in_context() -> None:
    """Test isolation from a Dagster global: an entered instance puts its state storage in a context variable, and an
    instance entered and left out of order across fixtures of different scopes can leave one behind whose instance is
    gone; the next `dg.materialize` without an instance then fails inside Dagster's definitions loading ("undefined
    DagsterInstance weakref"). Only such a dead storage is cleared; a live one (the session's e2e instance) stays."""
    from dagster._core.storage.defs_state.base import _current_storage

    storage = _current_storage.get()
    ref = getattr(storage, "_instance_weakref", None)
    if storage is not None and (ref is None or ref() is None):
        _current_storage.set(None)


@pytest.fixture
def small_transactions() -> pl.DataFrame:
    return generate_transactions(GeneratorConfig(start=dt.date(2025, 1, 1), end=dt.date(2025, 1, 31), customers=300, seed=3))


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A throw-away PostgreSQL schema in database `test`."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # pragma: no cover - CI and the dev machine have it
        pytest.fail(f"PostgreSQL is required at {PG_URL}: {exc}")
    name = f"churn_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(name))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
        engine.dispose()


@dataclass
class PipelineRun:
    root: Path
    resources: dict[str, object]
    instance: dg.DagsterInstance
    transactions: pl.DataFrame
    results: dict[str, dg.ExecuteInProcessResult]

    def read(self, key: str, days: list[dt.date] | None = None) -> pl.DataFrame:
        lake = self.resources["lake"]
        if days is None:
            return lake.read_single(dg.AssetKey(key))
        return lake.read_partitions(dg.AssetKey(key), [d.isoformat() for d in days])

    def metadata(self, key: str, partition: dt.date | None = None) -> dict[str, object]:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition.isoformat()] if partition else None), limit=1
        ).records
        assert records, f"{key} {partition} was never materialized"
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def run_full_pipeline(
    root: Path, warehouse_url: str, instance: dg.DagsterInstance, resources: dict[str, object] | None = None, **warehouse: object
) -> PipelineRun:
    """Generate the e2e scenario into `warehouse_url`, then ingest, train and score it (`resources`: the pipeline's, default local ones)."""
    from ml_assets.pipeline import INGEST_TO_FEATURES, SCORING, TRAINING, materialize_range, materialize_unpartitioned, training_run_config
    from resources import SqlWarehouse

    tx = generate_transactions(GeneratorConfig(start=E2E_START, end=E2E_END, customers=E2E_CUSTOMERS, seed=21, drift_date=E2E_DRIFT))
    source = SqlWarehouse(url=warehouse_url, **warehouse)
    source.create_table(replace=True)
    source.append(tx)
    res = resources or resources_for(root, warehouse_url, **warehouse)
    results = {
        "ingest": materialize_range(INGEST_TO_FEATURES, E2E_START, E2E_END, instance, res),
        "train": materialize_unpartitioned(TRAINING, instance, training_run_config(E2E_TRAIN_UNTIL), res),
        "score_quiet": materialize_range(SCORING, *E2E_QUIET_DAYS, instance, res),
        "score_drift": materialize_range(SCORING, *E2E_DRIFT_DAYS, instance, res),
    }
    for name, result in results.items():
        assert result.success, f"stage {name} failed"
    return PipelineRun(root, res, instance, tx, results)


def copy_pipeline_env(run: PipelineRun, dest: Path) -> tuple[dict[str, str], Path, Path]:
    """A private copy of a pipeline run (data + Dagster instance) and the environment that points the project at it.

    For tests that change state (kills, re-runs, UI launches) without touching what the other e2e tests read.
    Returns (env for subprocesses and build_resources(), data root, DAGSTER_HOME).
    """
    import shutil

    data, home = dest / "data", dest / "home"
    shutil.copytree(run.root, data)
    shutil.copytree(run.instance.root_directory, home)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CHURN_DATA_DIR": str(data),
        "CHURN_LAKE_ROOT": str(data / "lake"),
        "CHURN_ARTIFACT_ROOT": str(data / "artifacts"),
        "CHURN_WAREHOUSE_URL": f"sqlite:///{data / 'warehouse.sqlite'}",
        "CHURN_REGISTRY_URL": f"sqlite:///{data / 'registry.sqlite'}",
        "CHURN_FEAST_REPO": str(data / "feature_repo"),
    }
    return env, data, home


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    root = tmp_path_factory.mktemp("e2e")
    with dg.instance_for_test() as instance:
        yield run_full_pipeline(root, f"sqlite:///{root / 'warehouse.sqlite'}", instance)


def stop_server(proc: subprocess.Popen, log: Any) -> None:
    """Stop a server a test started (terminate, then kill after 30 s) and close its log."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
