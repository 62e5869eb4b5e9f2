"""Experiment tracking against a real MLflow tracking server (SQLite backend, started on 127.0.0.1 here, not a mock).

A training run of the e2e pipeline's copy logs its parent run, a run per
candidate, LightGBM's trials, the plots and the ONNX artifacts; the aliases
`champion` and `challenger` follow the registry through a promotion and a
rollback; an unreachable server costs the step nothing but a warning and a
line of metadata. The server runs from `.venv-mlflow` (`make mlflow-server`):
the full server pins packages below this project's versions, the project
itself uses the client only (the `mlflow` extra).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ml_assets_tests.conftest import E2E_TRAIN_UNTIL, PipelineRun, copy_pipeline_env, stop_server

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / ".venv-mlflow" / "bin" / "mlflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not SERVER.exists():
        pytest.fail("the MLflow tracking server is missing: `make mlflow-server` installs it in .venv-mlflow (make test does)")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("w")
    command = [str(SERVER), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")]
    proc = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):  # noqa: S310 (the loopback server above)
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the MLflow server did not come up: {(root / 'server.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        stop_server(proc, log)


def _run(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], home: Path, keys: Any, config: dict[str, Any]) -> str:
    """One run in this process (the libraries are imported already), on the e2e copy that ``env`` points at."""
    from ml_assets.pipeline import materialize_unpartitioned
    from resources import build_resources

    for name, value in env.items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = materialize_unpartitioned(keys, instance, config, build_resources(), log_level="CRITICAL")
    assert result.success
    return result.run_id


def _materialization(home: Path, asset: str, run_id: str) -> dict[str, Any]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        assert event is not None and event.run_id == run_id
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}  # type: ignore[union-attr]


def _alias_target(client: Any, alias: str) -> str | None:
    """The registry version an MLflow alias points at (its model version's tag), or None when unset."""
    aliases = client.get_registered_model("churn").aliases or {}
    if alias not in aliases:
        return None
    return client.get_model_version("churn", aliases[alias]).tags["churn.model_version"]


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_a_training_run_is_logged_with_its_trials_plots_and_onnx_and_the_aliases_follow_the_registry(
    e2e: PipelineRun, tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from ml_assets.pipeline import TRAINING, training_run_config
    from resources import ModelRegistry

    env, _, home = copy_pipeline_env(e2e, tmp_path)
    env["CHURN_MLFLOW_TRACKING_URI"] = mlflow_server
    run_id = _run(monkeypatch, env, home, TRAINING, training_run_config(E2E_TRAIN_UNTIL + dt.timedelta(days=14), max_trials=2))
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    experiment = client.get_experiment_by_name("churn").experiment_id
    registry = ModelRegistry(url=env["CHURN_REGISTRY_URL"])

    # One parent run for the Dagster run: its id and link, the code version, the data window with its row counts.
    parents = client.search_runs([experiment], f"tags.`dagster.run_id` = '{run_id}' and tags.`churn.role` = 'training'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["dagster.run_url"] == f"http://127.0.0.1:3000/runs/{run_id}"
    assert parent.data.params["code_version"] and int(parent.data.params["data_window.train.rows"]) > 0
    assert parent.info.status == "FINISHED" and "dagster.step" not in parent.data.tags

    # A nested run per candidate with the registry's own figures; the registry row and the Dagster metadata link back.
    models = {r.data.tags["churn.model_version"]: r for r in client.search_runs([experiment], "tags.`churn.role` = 'model'")}
    this_run = {v.version: v for v in registry.versions() if v.run_id == run_id}
    assert sorted(this_run) == sorted(models) and {v.kind for v in this_run.values()} == {"lightgbm", "torch", "bgnbd", "stack"}
    for version, run in models.items():
        registered = this_run[version]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and registered.tracking_run_id == run.info.run_id
        assert run.data.metrics["backtest_roc_auc"] == pytest.approx(registered.metrics["backtest_roc_auc"])
        assert run.data.metrics["test_roc_auc"] == pytest.approx(registered.metrics["test_roc_auc"])
        assert run.data.tags["churn.artifact_sha256"] == registered.artifact_sha256
        # The ONNX artifact, byte for byte the registry's, with its sha256.
        onnx = Path(client.download_artifacts(run.info.run_id, "onnx/model.onnx", str(tmp_path / version)))
        assert hashlib.sha256(onnx.read_bytes()).hexdigest() == registered.onnx_sha256 == run.data.tags["churn.onnx_sha256"]
        plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
        assert len(plots) >= 2 and all(p.startswith("plots/") and p.endswith(".png") for p in plots), (version, plots)
    lgbm = next(v for v in this_run.values() if v.kind == "lightgbm")
    metadata = _materialization(home, "lgbm_model", run_id)
    assert metadata["mlflow_run_id"] == lgbm.tracking_run_id and metadata["mlflow"].startswith("logged: ")
    # LightGBM's search: a run per trial under its model run, the grid point and the validation loss.
    trials = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{lgbm.tracking_run_id}'")
    assert len(trials) == 2 and all("num_leaves" in t.data.params and "valid_log_loss" in t.data.metrics for t in trials)
    torch_run = next(v for v in this_run.values() if v.kind == "torch").tracking_run_id
    assert len(client.get_metric_history(torch_run, "valid_loss")) >= 2  # one point per epoch

    # The aliases say what the registry says: the champion, and the first challenger, where MLflow holds them (a
    # champion kept from before tracking has no MLflow version: no alias, never one on another model).
    champion = registry.champion()
    assert champion is not None
    assert _alias_target(client, "champion") == (champion.version if champion.version in models else None)
    challengers = [v.version for v in registry.challengers()]
    expected = challengers[0] if challengers and challengers[0] in models else None
    assert _alias_target(client, "challenger") == expected
    assert "source of truth" in client.get_registered_model("churn").description

    # A rollback through the registry moves the alias with it.
    target = next(v for v in this_run if v != champion.version and this_run[v].kind == "bgnbd")
    rollback = {"rollback_to": target, "requested_by": "test", "reason": "drill"}
    _run(monkeypatch, env, home, ["champion_model"], {"ops": {"champion_model": {"config": rollback}}})
    assert registry.champion().version == target and _alias_target(client, "champion") == target  # type: ignore[union-attr]
    _screenshots(mlflow_server, experiment, parent.info.run_id, lgbm.tracking_run_id)


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_an_unreachable_tracking_server_costs_a_warning_and_a_line_of_metadata_never_the_training(
    e2e: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_assets.pipeline import training_run_config

    env, _, home = copy_pipeline_env(e2e, tmp_path)
    # Nothing listens there; the URI carries a password, which must not reach the metadata or the log.
    env["CHURN_MLFLOW_TRACKING_URI"] = f"http://alice:s3cret-token@127.0.0.1:{_free_port()}"
    started = time.monotonic()
    run_id = _run(monkeypatch, env, home, ["lgbm_model"], training_run_config(None, max_trials=1))
    metadata = _materialization(home, "lgbm_model", run_id)
    assert metadata["mlflow"].startswith("not logged to MLflow at http://127.0.0.1:") and "trials" in metadata["mlflow"]
    assert "mlflow_run_id" not in metadata and "s3cret" not in json.dumps(metadata, default=str)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        warnings = [e.user_message for e in instance.all_logs(run_id) if e.level == 30 and "not logged to MLflow" in e.user_message]
    assert len(warnings) == 1 and "s3cret" not in warnings[0]
    assert time.monotonic() - started < 300


def test_the_extra_adds_packages_and_changes_no_installed_version(tmp_path: Path) -> None:
    """`pip install -e '.[mlflow]'` as the resolver would do it now: nothing already installed changes, and `pip check`
    finds every requirement met."""
    import tomllib
    from importlib import metadata as importlib_metadata

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["mlflow"]
    report = tmp_path / "report.json"
    pip = [sys.executable, "-m", "pip"]
    done = subprocess.run(
        [*pip, "install", "--dry-run", "--quiet", "--report", str(report), *extra], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    changed = []
    for item in json.loads(report.read_text())["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        try:
            installed = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
        if installed != version:
            changed.append(f"{name} {installed} -> {version}")
    assert not changed, f"the mlflow extra would change installed versions: {changed}"
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert check.returncode == 0, check.stdout[-3000:]


def _screenshots(url: str, experiment: str, parent: str, model_run: str | None) -> None:
    """The MLflow UI with the training run, as a person opens it (docs/images/mlflow_training_run.png comes from here)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ml_assets_tests.system.test_ui import CHROMEDRIVER, CHROMIUM

    shots = Path(os.environ.get("CHURN_TEST_ARTIFACTS", REPO / "test-artifacts")) / "mlflow"
    shots.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--window-size=1600,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        for name, page, text in (
            ("training_run", f"{url}/#/experiments/{experiment}/runs/{parent}", "training"),
            ("lgbm_run", f"{url}/#/experiments/{experiment}/runs/{model_run}", "lgbm-"),
            ("runs", f"{url}/#/experiments/{experiment}/runs", "training"),
        ):
            driver.get(page)
            WebDriverWait(driver, 60, poll_frequency=0.5).until(lambda d, t=text: t in d.find_element(By.TAG_NAME, "body").text)
            # MLflow 3 opens on its GenAI view with an assistant panel: the model-training view, panel closed.
            for xpath in (
                "//button[normalize-space()='Model training']",
                "//button[contains(translate(@aria-label, 'CLOSE', 'close'), 'close')]",
            ):
                for element in driver.find_elements(By.XPATH, xpath)[:1]:
                    try:
                        element.click()
                    except Exception:  # noqa: BLE001, S110 (cosmetic: the screenshot is taken either way)
                        pass
            time.sleep(2)  # the run page's charts and tables finish drawing after the title
            driver.save_screenshot(str(shots / f"{name}.png"))
    finally:
        driver.quit()
