"""The Dagster UI as an analyst meets it, in a real headless Chromium.

The webserver `make ui` runs (dagster-webserver, here without the daemon so
no sensor starts runs behind the test's back) serves this code location over
a copy of the end-to-end pipeline's instance and data. The browser checks
that the lineage draws every stage and that an asset page shows what analysts
look for; the UI's own GraphQL API checks descriptions, owners, kinds,
groups, column schemas and check results for every asset, and launches a
materialization that must succeed. Screenshots go to test-artifacts/ui/
(or $CHURN_TEST_ARTIFACTS/ui).

The UI plots a partitioned asset's metadata on its Partitions axis for the
newest 120 days of the calendar only, so the copy also holds days dated as the
demo is (ending yesterday): ingested, featured and scored by the e2e champion.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml_assets_tests.conftest import E2E_DRIFT_DAYS, E2E_END, PipelineRun, copy_pipeline_env, resources_for, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
LOCATION = "churn"  # workspace.yaml

# Every stage of the lineage, by the group it is drawn in.
STAGES = {
    "ingest": ["raw_transactions", "unplaceable_transactions"],
    "validation": ["quarantined_transactions", "validated_transactions"],
    "features": ["customer_features"],
    "feature_store": ["feature_definitions", "online_features"],
    "training": ["baseline_model", "lgbm_model", "stacked_model", "torch_model", "training_set"],
    "export": ["bgnbd_onnx", "lgbm_onnx", "stacked_onnx", "torch_onnx"],
    "registry": ["champion_model"],
    "inference": ["batch_predictions", "shadow_scores"],
    "monitoring": ["drift_report", "rollout_evaluation"],
}
ALL_ASSETS = sorted(a for assets in STAGES.values() for a in assets)
# The recent days scored in the copy (dated like the demo: the last is yesterday), and the behaviour shift among them.
RECENT_SCORED_DAYS = 14
RECENT_SHIFT_BEFORE_END = 6


def recent_days() -> list[Any]:
    import datetime as dt

    from ml_assets.cli.common import demo_calendar

    end = demo_calendar().end
    return [end - dt.timedelta(days=i) for i in range(RECENT_SCORED_DAYS - 1, -1, -1)]


def _add_recent_days(env: dict[str, str], data: Path, home: Path) -> None:
    """Days dated like the demo, in the copy: a small population's purchases ingested for the features' 90-day window,
    features for the scored days, then scored by the e2e champion (online store, predictions, drift, rollout)."""
    import datetime as dt

    import dagster as dg
    import polars as pl

    from lib.datagen import GeneratorConfig, generate_transactions
    from lib.features import WINDOW_DAYS
    from ml_assets.pipeline import SCORING, materialize_range, materialize_unpartitioned
    from resources import SqlWarehouse

    days = recent_days()
    first_window_day = days[0] - dt.timedelta(days=WINDOW_DAYS - 1)
    tx = generate_transactions(
        GeneratorConfig(
            start=first_window_day, end=days[-1], customers=400, seed=5, drift_date=days[-1] - dt.timedelta(days=RECENT_SHIFT_BEFORE_END)
        )
    )
    # Other transaction and customer ids than the e2e year's: a population of its own in the same table.
    tx = tx.with_columns(pl.col("transaction_id") + 100_000_000, "R" + pl.col("customer_id"))
    SqlWarehouse(url=env["CHURN_WAREHOUSE_URL"]).append(tx)
    resources = resources_for(data, env["CHURN_WAREHOUSE_URL"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # The copy's Feast repository still reads the original run's lake: applied again over the copy's.
        assert materialize_unpartitioned(["feature_definitions"], instance, resources=resources, log_level="CRITICAL").success
        for selection, first in (
            (dg.AssetSelection.groups("ingest", "validation"), first_window_day),
            (dg.AssetSelection.groups("features"), days[0]),
            (SCORING, days[0]),
        ):
            assert materialize_range(selection, first, days[-1], instance, resources, "CRITICAL").success, selection


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(e2e: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A copy, so what the UI launches cannot change what the other end-to-end tests read.
    root = tmp_path_factory.mktemp("ui")
    env, data, home = copy_pipeline_env(e2e, root)
    _add_recent_days(env, data, home)
    # No daemon here (it would start the drift sensor's retraining behind the test's back), so
    # launches from the UI start at once instead of waiting in the queue the daemon drains.
    config = yaml.safe_load((home / "dagster.yaml").read_text()) or {}
    config["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (root / "webserver.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                # Ready once the code location has loaded, not just when the port answers.
                if (
                    _graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }")["workspaceOrError"][
                        "locationEntries"
                    ][0]["loadStatus"]
                    == "LOADED"
                ):
                    break
            except (OSError, KeyError, IndexError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not come up: {(root / 'webserver.log').read_text()[-3000:]}")
            time.sleep(1)
        # The "Join the Dagster community" dialog, marked seen on the server (the mutation its Skip button sends): it
        # must not cover a screenshot. Each screenshot also dismisses it in case it opens anyway.
        assert _graphql(url, "mutation { setNuxSeen }")["setNuxSeen"] is not None
        yield url
    finally:
        stop_server(proc, log)


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    # A URL this test built: http://127.0.0.1.
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (the loopback URL above)
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise AssertionError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium and chromedriver are required (make setup installs Debian's chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1920,1200",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("CHURN_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait_for(driver: Any, condition: Any, what: str, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: condition(d))
    except Exception as exc:  # noqa: BLE001 (timeout or stale element: either way the page never showed it)
        shot = Path(os.environ.get("CHURN_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui" / "failure.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        raise AssertionError(
            f"the UI never showed {what} (url {driver.current_url}, screenshot {shot}); page text: {_body(driver)[:1500]!r}"
        ) from exc


def _body(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _dismiss_community_dialog(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
        button.click()


def _click(driver: Any, xpath: str) -> None:
    """Click, dismissing Dagster's community dialog first when it has opened over the page (it can appear late)."""
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.common.by import By

    deadline = time.time() + 10
    while True:
        try:
            driver.find_element(By.XPATH, xpath).click()
            return
        except ElementClickInterceptedException:
            if time.time() > deadline:
                raise
            _dismiss_community_dialog(driver)
            time.sleep(0.3)


def _open_plots(browser: Any, webserver: str, asset: str, axis: str) -> None:
    """An asset page's metadata as plots (Overview > Metadata > Plots) on the ``axis`` (Events or Partitions)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{webserver}/assets/{asset}")
    _wait_for(browser, lambda d: d.find_elements(By.XPATH, "//button[.//*[@aria-label='asset_plot']]"), "the metadata Plots toggle")
    _dismiss_community_dialog(browser)
    _click(browser, "//button[.//*[@aria-label='asset_plot']]")
    _wait_for(browser, lambda d: d.find_elements(By.XPATH, f"//button[normalize-space()='{axis}']"), f"the {axis} axis toggle")
    _click(browser, f"//button[normalize-space()='{axis}']")


def test_lineage_draws_every_stage(webserver: str, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{webserver}/asset-groups")
    # The global lineage starts with the groups collapsed: all nine stages drawn as group nodes.
    _wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg foreignObject.group")) == len(STAGES), "the nine stage groups")
    _dismiss_community_dialog(browser)
    drawn_groups = _body(browser)
    assert all(group in drawn_groups for group in STAGES)
    browser.save_screenshot(str(shots / "lineage_groups.png"))

    # Each stage's own graph draws its assets by full name.
    drawn: dict[str, list[str]] = {}
    for group, assets in STAGES.items():
        browser.get(f"{webserver}/locations/{LOCATION}/asset-groups/{group}")
        expected = len(assets)

        def drawn_names(d: Any, expected: int = expected) -> list[str] | None:
            found = sorted(e.text for e in d.find_elements(By.CSS_SELECTOR, "svg foreignObject [class*=assetName]"))
            return found if len(found) >= expected else None

        names = _wait_for(browser, drawn_names, f"the assets of group {group}")
        drawn[group] = names
        browser.save_screenshot(str(shots / f"group_{group}.png"))
    assert drawn == {g: sorted(a) for g, a in STAGES.items()}


def test_asset_page_shows_metadata_plots_and_the_drift_report_link(webserver: str, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    day = E2E_DRIFT_DAYS[-1].isoformat()
    browser.get(f"{webserver}/assets/drift_report?view=events&partition={day}")
    _wait_for(browser, lambda d: "report_url" in _body(d), "drift_report's materialization metadata")
    _dismiss_community_dialog(browser)
    text = _body(browser)
    for label in ("drift_share", "dataset_drift", "report_path", "model_version"):
        assert label in text, f"{label} missing from the drift_report events page"
    links = [a.get_attribute("href") or "" for a in browser.find_elements(By.CSS_SELECTOR, "a")]
    assert any(href.startswith("file://") and href.endswith(f"{day}.html") for href in links), "no link to the evidently HTML report"
    report = next(href for href in links if href.endswith(f"{day}.html"))
    assert Path(report.removeprefix("file://")).stat().st_size > 10_000  # the link leads to a real report
    browser.save_screenshot(str(shots / "drift_report_events.png"))

    # Numeric metadata plotted over the materializations: Overview > Metadata > Plots > Events (the 2025 e2e days
    # are older than the Partitions axis reaches; test_daily_metadata_is_plotted_on_the_partitions_axis... plots by day).
    _open_plots(browser, webserver, "drift_report", "Events")
    _wait_for(
        browser,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, "canvas")) >= 3 and all(m in _body(d) for m in ("drift_share", "prediction_drift_score"))
        ),
        "the drift_share and prediction_drift_score plots",
    )
    browser.save_screenshot(str(shots / "drift_report_plots.png"))

    # Inline figures (ROC/PR curves) on the model page.
    browser.get(f"{webserver}/assets/lgbm_model?view=events")
    _wait_for(browser, lambda d: "roc_auc" in _body(d), "lgbm_model's metrics")
    browser.save_screenshot(str(shots / "lgbm_model_events.png"))

    # The champion's model card: linked from champion_model's materialization, a page of its own.
    browser.get(f"{webserver}/assets/champion_model?view=events")
    _wait_for(browser, lambda d: "model_card" in _body(d), "champion_model's model card link")
    _dismiss_community_dialog(browser)
    links = [a.get_attribute("href") or "" for a in browser.find_elements(By.CSS_SELECTOR, "a")]
    card = next((href for href in links if "/model_cards/" in href and href.endswith(".html")), None)
    assert card and card.startswith("file://"), "no link to the model card"
    browser.get(card)
    _wait_for(browser, lambda d: "Top reasons overall" in _body(d), "the model card page")
    browser.set_window_size(1280, 3000)
    browser.save_screenshot(str(shots / "model_card.png"))
    browser.set_window_size(1920, 1200)


# What the UI's Partitions axis loads (ui-core useLatestAssetPartitionMaterializations): the newest partition keys of
# the calendar, then the latest materialization of each; one point per partition.
LATEST_PARTITIONS = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
    partitionKeyConnection(limit: 120, ascending: false) { results }
} } }
"""
PARTITION_EVENTS = """
query($key: AssetKeyInput!, $partitions: [String!]!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
    latestMaterializationByPartition(partitions: $partitions) {
        partition metadataEntries { label ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intValue } }
    }
} } }
"""


def _partition_points(webserver: str, key: str, label: str) -> dict[str, float]:
    """The points the Partitions axis plots for one numeric metadata entry: partition -> value."""
    newest = _graphql(webserver, LATEST_PARTITIONS, {"key": {"path": [key]}})["assetNodeOrError"]["partitionKeyConnection"]["results"]
    events = _graphql(webserver, PARTITION_EVENTS, {"key": {"path": [key]}, "partitions": newest})["assetNodeOrError"]
    points = {}
    for event in events["latestMaterializationByPartition"]:
        for entry in (event or {}).get("metadataEntries", []):
            if entry["label"] == label:
                points[event["partition"]] = entry.get("floatValue", entry.get("intValue"))
    return points


def test_daily_metadata_is_plotted_on_the_partitions_axis_one_point_per_day(webserver: str, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    days = [d.isoformat() for d in recent_days()]
    # Scored days: one point a day for the drift share, the revenue at risk and the scored rows, nothing else (the
    # 2025 e2e days are older than the axis reaches). Validated days: the quarantine share every ingested day.
    for key, label in (
        ("drift_report", "drift_share"),
        ("drift_report", "expected_revenue_at_risk_top_k"),
        ("batch_predictions", "dagster/row_count"),
    ):
        points = _partition_points(webserver, key, label)
        assert sorted(points) == days, f"{key} {label}: one point per scored day, got {sorted(points)}"
        assert all(v is not None and v >= 0 for v in points.values()), (key, label, points)
    assert all(0.0 <= v <= 1.0 for v in _partition_points(webserver, "drift_report", "drift_share").values())
    quarantine = _partition_points(webserver, "validated_transactions", "rejected_share")
    assert set(days) <= set(quarantine) and len(quarantine) >= len(days)

    _open_plots(browser, webserver, "drift_report", "Partitions")
    _wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "canvas")) >= 3 and "drift_share" in _body(d),
        "the drift_share plot on the Partitions axis",
    )
    # The drift share's plot in view: the newest 120 days on the axis, the scored days drawn at its end.
    heading = browser.find_element(By.XPATH, "//*[normalize-space(text())='drift_share']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
    time.sleep(0.5)
    _dismiss_community_dialog(browser)
    browser.save_screenshot(str(shots / "drift_share_by_partition.png"))


ASSET_NODES = """
{ assetNodes {
    assetKey { path } description groupName kinds
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } }
    assetMaterializations(limit: 1) { metadataEntries { label __typename } }
} }
"""


def test_every_asset_carries_what_analysts_read(webserver: str) -> None:
    nodes = {"/".join(n["assetKey"]["path"]): n for n in _graphql(webserver, ASSET_NODES)["assetNodes"]}
    assert sorted(nodes) == ALL_ASSETS
    for key, node in nodes.items():
        assert node["description"] and len(node["description"]) > 80, f"{key}: no real description"
        assert node["owners"], f"{key}: no owner"
        assert node["kinds"], f"{key}: no kinds"
        assert node["groupName"] in STAGES and key in STAGES[node["groupName"]], f"{key}: group {node['groupName']}"
        entries = node["assetMaterializations"][0]["metadataEntries"] if node["assetMaterializations"] else []
        assert entries, f"{key}: never materialized in the e2e instance, or no metadata"

    def schema(key: str) -> bool:
        return any(e["__typename"] == "TableSchemaMetadataEntry" for e in nodes[key]["assetMaterializations"][0]["metadataEntries"])

    for key in (
        "raw_transactions",
        "validated_transactions",
        "quarantined_transactions",
        "customer_features",
        "training_set",
        "batch_predictions",
    ):
        assert schema(key), f"{key}: no column schema"

    checks = {
        f"{key}:{c['name']}": (c["executionForLatestMaterialization"] or {}).get("status")
        for key, node in nodes.items()
        for c in node["assetChecksOrError"].get("checks", [])
    }
    for check in ("validated_transactions:rows_conserved", "lgbm_onnx:lgbm_onnx_parity", "online_features:training_serving_skew"):
        assert checks.get(check) == "SUCCEEDED", f"{check}: {checks.get(check)}"


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""


def test_a_materialization_launched_through_the_ui_succeeds(webserver: str, browser: Any, shots: Path) -> None:
    day = E2E_END.isoformat()  # a day no earlier stage scored
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            # batch_predictions and shadow_scores are one step: the UI launches them together.
            "assetSelection": [{"path": ["batch_predictions"]}, {"path": ["shadow_scores"]}, {"path": ["drift_report"]}],
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    launched = _graphql(webserver, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    status = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = _graphql(webserver, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})["runOrError"][
            "status"
        ]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS", f"run {run_id} ended {status}"

    browser.get(f"{webserver}/runs/{run_id}")
    _wait_for(browser, lambda d: "drift_report" in _body(d) and "Success" in _body(d), "the successful run")
    browser.save_screenshot(str(shots / "launched_run.png"))

    materialized = _graphql(
        webserver,
        'query($p: String!) { assetOrError(assetKey: {path: ["drift_report"]}) { ... on Asset { assetMaterializations(partitions: [$p]) { runId } } } }',
        {"p": day},
    )["assetOrError"]["assetMaterializations"]
    assert run_id in {m["runId"] for m in materialized}
