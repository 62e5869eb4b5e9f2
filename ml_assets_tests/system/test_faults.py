"""Faults the pipeline must survive: the source database going away, and a process killed hard mid-write."""

from __future__ import annotations

import datetime as dt
import hashlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets_tests.conftest import E2E_DRIFT_DAYS, E2E_TRAIN_UNTIL, PG_URL, PipelineRun, copy_pipeline_env, resources_for

REPO = Path(__file__).resolve().parents[2]


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that can play a database going away.

    `cut_after`: the next `cuts` connections are closed once that many bytes have
    come back from the server, i.e. in the middle of a result set. `down`: every
    new connection is closed at once, as by a database that is restarting.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut_after, self.cuts, self.down = 0, 0, False
        self.cut_connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            server = socket.create_connection(self.target)
            cut = self.cuts > 0 and self.cut_after > 0
            if cut:
                self.cuts -= 1
            threading.Thread(target=self._pipe, args=(client, server, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.cut_after if cut else 0), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, cut_after: int) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if cut_after and sent + len(data) > cut_after:
                    dst.sendall(data[: cut_after - sent])
                    self.cut_connections += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def proxy() -> FlakyProxy:
    url = sa.make_url(PG_URL)
    p = FlakyProxy((url.host or "127.0.0.1", url.port or 5432))
    yield p
    p.close()


def _through(proxy: FlakyProxy) -> str:
    return sa.make_url(PG_URL).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


DAYS = (dt.date(2025, 1, 1), dt.date(2025, 1, 31))


@pytest.mark.postgres
@pytest.mark.xdist_group("postgres")
def test_source_dropping_the_connection_mid_read_is_retried_and_recovers(
    tmp_path: Path, pg_schema: str, proxy: FlakyProxy, small_transactions: pl.DataFrame
) -> None:
    from ml_assets.pipeline import materialize_range
    from resources import SqlWarehouse

    SqlWarehouse(url=PG_URL, db_schema=pg_schema).create_table(replace=True)
    SqlWarehouse(url=PG_URL, db_schema=pg_schema).append(small_transactions)
    expected = small_transactions.filter(pl.col("ts").dt.date().is_between(*DAYS)).height
    # The first two connections are cut after 50 kB from the server: in the middle of the month's rows.
    proxy.cut_after, proxy.cuts = 50_000, 2
    resources = resources_for(tmp_path, _through(proxy), db_schema=pg_schema)
    with dg.instance_for_test() as instance:
        result = materialize_range(["raw_transactions"], *DAYS, instance, resources)
        assert result.success
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == 2 and proxy.cut_connections >= 2
        errors = [r.user_message for r in instance.all_logs(result.run_id) if r.level >= 40]
        assert any("source database" in m and "is unavailable" in m for m in errors), errors
    days = [(DAYS[0] + dt.timedelta(days=i)).isoformat() for i in range((DAYS[1] - DAYS[0]).days + 1)]
    # Complete, not partial: every source row of the window, once.
    raw = resources["lake"].read_partitions(dg.AssetKey("raw_transactions"), days)
    assert raw.height == expected and raw["transaction_id"].n_unique() == expected


@pytest.mark.postgres
@pytest.mark.xdist_group("postgres")
def test_source_down_for_good_fails_clearly_and_writes_nothing(
    tmp_path: Path, pg_schema: str, proxy: FlakyProxy, small_transactions: pl.DataFrame
) -> None:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from ml_assets.assets.ingest import raw_transactions
    from resources import SqlWarehouse

    SqlWarehouse(url=PG_URL, db_schema=pg_schema).create_table(replace=True)
    SqlWarehouse(url=PG_URL, db_schema=pg_schema).append(small_transactions)
    proxy.down = True
    secret_url = _through(proxy).replace("postgres@", "postgres:hunter2-secret@")
    resources = resources_for(tmp_path, secret_url, db_schema=pg_schema)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_transactions],
            instance=instance,
            resources=resources,
            tags={ASSET_PARTITION_RANGE_START_TAG: DAYS[0].isoformat(), ASSET_PARTITION_RANGE_END_TAG: DAYS[1].isoformat()},
            raise_on_error=False,
        )
        assert not result.success
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == 3  # SOURCE_RETRY.max_retries, with backoff
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.step_failure_data.error.to_string()  # with its cause chain
        assert "SourceUnavailableError: source database postgresql+psycopg://postgres:***@" in message, message
        logs = "\n".join(r.user_message for r in instance.all_logs(result.run_id))
        assert "hunter2-secret" not in logs and "hunter2-secret" not in message
    assert not (tmp_path / "lake" / "raw_transactions").exists() or not any((tmp_path / "lake" / "raw_transactions").rglob("*.parquet"))


# --- hard kills --------------------------------------------------------------

KILL_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    point = sys.argv[1]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "training":
        import lightgbm
        real_train = lightgbm.train
        def train(*args, **kwargs):
            def kill_at_10(env):
                if env.iteration == 10:
                    die()
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), kill_at_10]
            return real_train(*args, **kwargs)
        lightgbm.train = train
    elif point == "onnx_export":
        # Half of the ONNX file reaches the disk, then the process dies.
        from pathlib import Path
        real_write = Path.write_bytes
        def write_bytes(self, data):
            if ".onnx" in self.name:
                real_write(self, data[: len(data) // 2])
                die()
            return real_write(self, data)
        Path.write_bytes = write_bytes
    elif point == "registry_write":
        # The registry transaction that records the ONNX artifact dies before it commits.
        import sqlalchemy as sa
        from sqlalchemy.engine import Engine
        armed = {"onnx": False}
        @sa.event.listens_for(Engine, "before_cursor_execute")
        def watch(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("UPDATE") and "onnx" in statement.lower():
                armed["onnx"] = True
        @sa.event.listens_for(Engine, "commit")
        def on_commit(conn):
            if armed["onnx"]:
                die()

    import dagster as dg
    from ml_assets.pipeline import TRAINING, materialize_unpartitioned, training_run_config
    from resources import build_resources
    import datetime as dt
    instance = dg.DagsterInstance.get()
    materialize_unpartitioned(TRAINING, instance, training_run_config(dt.date.fromisoformat(sys.argv[2]), max_trials=2), build_resources(), log_level="CRITICAL")
    print("finished without being killed")
    """
)


def _verify_registry(registry) -> list[str]:
    """Every artifact the registry points to exists and has the recorded sha256; the champion is complete."""
    problems = []
    for version in registry.versions():
        for uri, sha in (
            (version.artifact_uri, version.artifact_sha256),
            (version.onnx_uri, version.onnx_sha256),
            (version.reference_uri, version.reference_sha256),
        ):
            if not uri:
                continue
            path = Path(uri)
            if not path.exists():
                problems.append(f"{version.version}: {uri} is missing")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != sha:
                problems.append(f"{version.version}: {uri} does not match its sha256")
    champion = registry.champion()
    if champion is None:
        problems.append("no champion")
    elif not (champion.onnx_uri and champion.parity_passed):
        problems.append(f"champion {champion.version} lacks a verified ONNX artifact")
    return problems


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
@pytest.mark.parametrize("point", ["training", "onnx_export", "registry_write"])
def test_sigkill_mid_training_export_or_registry_write_leaves_no_corrupt_state(e2e: PipelineRun, tmp_path: Path, point: str) -> None:
    from ml_assets.pipeline import TRAINING, materialize_unpartitioned, training_run_config
    from resources import ArtifactStore, ModelRegistry, registry_references, sweep

    env, data, home = copy_pipeline_env(e2e, tmp_path)
    registry = ModelRegistry(url=env["CHURN_REGISTRY_URL"])
    before = {v.version: v.status for v in registry.versions()}
    files_before = {p for p in (data / "artifacts").rglob("*") if p.is_file()}
    champion_before = registry.champion().version
    # What the sweep already finds in the shared e2e run before the kill (files other tests' sandboxes wrote and
    # registered elsewhere): the kill may add to it, nothing else.
    store = ArtifactStore(root=env["CHURN_ARTIFACT_ROOT"])
    mapped = {uri.replace(str(e2e.root), str(data)) for uri in registry_references(registry.versions())}
    orphaned_before = {Path(f.uri) for f in sweep(store, mapped, older_than=dt.timedelta(0), apply=False)}
    # Retrain on a later cut-off, so the run produces new versions rather than finding them registered.
    until = (E2E_TRAIN_UNTIL + dt.timedelta(days=7)).isoformat()
    child = subprocess.run([sys.executable, "-c", KILL_CHILD, point, until], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, (
        f"the {point} kill did not happen: rc {child.returncode}\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}"
    )

    assert _verify_registry(registry) == []
    assert registry.champion().version == champion_before  # a killed run promotes nothing
    assert {v: s for v, s in ((v.version, v.status) for v in registry.versions()) if v in before} == before

    # What the kill left behind that nothing refers to is exactly what `churn artifacts sweep` finds.
    # (The copied registry's older rows point into the e2e run's folder: mapped onto the copy.)
    referenced = {uri.replace(str(e2e.root), str(data)) for uri in registry_references(registry.versions())}
    left_behind = {p for p in (data / "artifacts").rglob("*") if p.is_file()} - files_before - {Path(u) for u in referenced}
    swept = sweep(store, referenced, older_than=dt.timedelta(0), apply=True)
    assert {Path(f.uri) for f in swept} == left_behind | orphaned_before
    if point == "registry_write":  # the ONNX file was written, its registry row rolled back
        assert any(p.suffix == ".onnx" and not p.name.startswith(".") for p in left_behind), left_behind
    if point == "onnx_export":  # half an ONNX file in a temporary name, never renamed into place
        assert any(p.name.endswith(".tmp") for p in left_behind), left_behind
    assert _verify_registry(registry) == []
    if point == "training":
        # The run died before it wrote a model: what it left (its STARTED run record, the training set it wrote)
        # is left by the later kills too, and the reruns after those show the next run is not stopped by it.
        return

    # The same training run again, unharmed, completes and leaves a consistent registry.
    resources = resources_for(data, env["CHURN_WAREHOUSE_URL"])
    # On the same instance: it knows which feature partitions exist (and holds the killed run, left STARTED).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        rerun = materialize_unpartitioned(
            TRAINING, instance, training_run_config(dt.date.fromisoformat(until), max_trials=2), resources, log_level="CRITICAL"
        )
    assert rerun.success
    assert _verify_registry(registry) == []
    assert len(registry.versions()) >= len(before) + 2  # both new models registered


# --- idempotence and concurrency ---------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_rematerializing_a_partition_duplicates_nothing_downstream(e2e: PipelineRun, tmp_path: Path) -> None:
    from ml_assets.pipeline import INGEST_TO_FEATURES, SCORING, materialize_range

    env, data, home = copy_pipeline_env(e2e, tmp_path)
    day = E2E_DRIFT_DAYS[0]
    keys = [
        "raw_transactions",
        "validated_transactions",
        "quarantined_transactions",
        "customer_features",
        "batch_predictions",
        "drift_report",
    ]
    resources = resources_for(data, env["CHURN_WAREHOUSE_URL"])
    lake = resources["lake"]
    before = {k: lake.read_partitions(dg.AssetKey(k), [day.isoformat()]) for k in keys}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for _ in range(2):
            assert materialize_range(INGEST_TO_FEATURES | SCORING, day, day, instance, resources, log_level="CRITICAL").success
    for key in keys:
        after = lake.read_partitions(dg.AssetKey(key), [day.isoformat()])
        assert after.height == before[key].height, f"{key}: {before[key].height} rows before, {after.height} after two re-runs"
        ids = "transaction_id" if "transaction_id" in after.columns else "customer_id" if "customer_id" in after.columns else None
        if ids:
            assert after[ids].n_unique() == after.height, f"{key}: duplicated {ids}"
    assert len(list((data / "lake" / "batch_predictions").rglob(f"*{day.isoformat()}*"))) == 1


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_customers_without_a_score_fail_the_drift_report_and_change_nothing(e2e: PipelineRun, tmp_path: Path) -> None:
    # drift_report compares scored customers; a day whose predictions lost rows must not be reported on a subset.
    from ml_assets.pipeline import materialize_range

    env, data, home = copy_pipeline_env(e2e, tmp_path)
    day = E2E_DRIFT_DAYS[0].isoformat()
    predictions = data / "lake" / "batch_predictions" / f"{day}.parquet"
    pl.read_parquet(predictions).slice(3).write_parquet(predictions)  # three customers lose their score
    report = data / "lake" / "drift_report" / f"{day}.parquet"
    html = next((data / "artifacts" / "drift_reports").glob(f"{day}.html"))
    before = (report.read_bytes(), html.stat().st_mtime_ns)
    resources = resources_for(data, env["CHURN_WAREHOUSE_URL"])
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        pytest.raises(Exception, match="3 customers have features but no prediction"),
    ):
        materialize_range(["drift_report"], E2E_DRIFT_DAYS[0], E2E_DRIFT_DAYS[0], instance, resources, log_level="CRITICAL")
    assert (report.read_bytes(), html.stat().st_mtime_ns) == before


CONCURRENT_CHILD = textwrap.dedent(
    """
    import datetime as dt, sys
    import dagster as dg
    from ml_assets.pipeline import SCORING, TRAINING, materialize_range, materialize_unpartitioned, training_run_config
    from resources import build_resources
    instance = dg.DagsterInstance.get()
    if sys.argv[1] == "train":
        ok = materialize_unpartitioned(TRAINING, instance, training_run_config(dt.date.fromisoformat(sys.argv[2]), max_trials=2), build_resources(), log_level="CRITICAL").success
    else:
        day = dt.date.fromisoformat(sys.argv[2])
        ok = materialize_range(SCORING, day, day, instance, build_resources(), log_level="CRITICAL").success
    sys.exit(0 if ok else 1)
    """
)


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_concurrent_scoring_runs_and_a_retrain_do_not_interfere(e2e: PipelineRun, tmp_path: Path) -> None:
    from resources import ModelRegistry

    env, data, home = copy_pipeline_env(e2e, tmp_path)
    registry = ModelRegistry(url=env["CHURN_REGISTRY_URL"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # As `make instance` sets it: one online-store writer at a time across runs.
        instance.event_log_storage.set_concurrency_slots("feast_online", 1)
    days = [E2E_DRIFT_DAYS[0] + dt.timedelta(days=1), E2E_DRIFT_DAYS[0] + dt.timedelta(days=2)]
    until = (E2E_TRAIN_UNTIL + dt.timedelta(days=14)).isoformat()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_CHILD, "score", d.isoformat()], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
        for d in days
    ]
    children.append(
        subprocess.Popen([sys.executable, "-c", CONCURRENT_CHILD, "train", until], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    )
    for child in children:
        _, err = child.communicate(timeout=900)
        assert child.returncode == 0, err[-3000:]

    # Every version that is or was champion (a promotion archives the previous one).
    champions = {v.version for v in registry.versions() if v.status in ("champion", "archived")}
    lake = resources_for(data, env["CHURN_WAREHOUSE_URL"])["lake"]
    for day in days:
        preds = lake.read_partitions(dg.AssetKey("batch_predictions"), [day.isoformat()])
        features = lake.read_partitions(dg.AssetKey("customer_features"), [day.isoformat()])
        # One consistent champion per scored day, every customer scored once.
        assert preds["model_version"].n_unique() == 1 and preds["model_version"][0] in champions
        assert preds.height == features.height and preds["customer_id"].n_unique() == preds.height
    # Whichever run loaded last, the online store serves the newer day: an
    # older load never moves it back in time.
    assert resources_for(data, env["CHURN_WAREHOUSE_URL"])["feature_store"].served_snapshot() == days[-1]
    assert _verify_registry(registry) == []
