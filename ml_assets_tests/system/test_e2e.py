"""The whole graph on generated data, materialized for real into temporary folders."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lib.features import cutoff_for
from ml_assets_tests.conftest import E2E_DRIFT_DAYS, E2E_END, E2E_QUIET_DAYS, E2E_START, PipelineRun, copy_pipeline_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

ALL_DAYS = [E2E_START + dt.timedelta(days=i) for i in range((E2E_END - E2E_START).days + 1)]
ROC_AUC_FLOOR = 0.80
ONNX_TOLERANCE = 1e-6


def test_every_source_row_is_validated_or_quarantined(e2e: PipelineRun) -> None:
    raw = e2e.read("raw_transactions", ALL_DAYS)
    validated = e2e.read("validated_transactions", ALL_DAYS)
    quarantined = e2e.read("quarantined_transactions", ALL_DAYS)
    assert raw.height == e2e.transactions.height
    assert raw.height == validated.height + quarantined.height
    # Per day too, and no row in both outputs.
    for day in (ALL_DAYS[0], ALL_DAYS[100], ALL_DAYS[-1]):
        r = e2e.metadata("raw_transactions", day)["dagster/row_count"]
        v = e2e.metadata("validated_transactions", day)["dagster/row_count"]
        q = e2e.metadata("quarantined_transactions", day)["dagster/row_count"]
        assert r == v + q > 0
    assert set(validated["transaction_id"]).isdisjoint(set(quarantined["transaction_id"]))


def test_one_feature_row_per_active_customer(e2e: PipelineRun) -> None:
    tx = e2e.read("validated_transactions", ALL_DAYS)
    for day in (dt.date(2025, 1, 15), E2E_END):
        feats = e2e.read("customer_features", [day])
        cutoff = cutoff_for(day)
        # Every customer with a purchase before the cutoff: one-time buyers of long ago too.
        active = tx.filter(pl.col("ts") < cutoff)
        assert feats["customer_id"].is_unique().all()
        assert set(feats["customer_id"]) == set(active["customer_id"])
        # Recency is measured from the end of the day, so it is never negative.
        assert feats["recency_days"].min() >= 0


def test_model_beats_the_auc_floor_and_artifact_matches_its_checksum(e2e: PipelineRun) -> None:
    for key, magic in (("lgbm_model", b"tree"), ("torch_model", b"PK")):
        md = e2e.metadata(key)
        assert md["test_roc_auc"] >= ROC_AUC_FLOOR, (key, md["test_roc_auc"])
        assert 0 < md["test_pr_auc"] <= 1 and md["test_log_loss"] < 0.6 and 0 < md["test_brier"] < 0.25 and md["test_ece"] < 0.1, key
        # The headline is out of time: three cutoffs, each model beats both baselines on them.
        baselines = e2e.metadata("baseline_model")
        assert md["backtest_cutoffs"] == 3 and md["backtest_roc_auc"] > baselines["best_backtest_roc_auc"], key
        data = Path(md["artifact_uri"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == md["sha256"]
        # LightGBM text, or torch's zip of tensors: never a bare pickle stream.
        assert data.startswith(magic), key
    lgbm = e2e.metadata("lgbm_model")
    assert set(lgbm["chosen_params"]) >= {"num_leaves", "min_data_in_leaf"} and lgbm["best_iteration"] > 0
    torch_md = e2e.metadata("torch_model")
    assert torch_md["device"] == "cpu" and 1 <= torch_md["best_epoch"] <= torch_md["epochs_run"]
    # Both report on the same held-out rows.
    assert lgbm["test_rows"] == torch_md["test_rows"] > 0


def test_every_trained_model_is_a_registry_version(e2e: PipelineRun) -> None:
    registry = e2e.resources["registry"]
    versions = {v.version: v for v in registry.versions()}
    for key, kind in (("lgbm_model", "lightgbm"), ("torch_model", "torch")):
        md = e2e.metadata(key)
        v = versions[md["model_version"]]
        assert v.kind == kind and v.artifact_sha256 == md["sha256"] and v.run_id
        assert v.code_version and v.data_window["train"]["rows"] == md["train_rows"]
        assert v.metrics["test_roc_auc"] == pytest.approx(md["test_roc_auc"])
        assert v.metrics["backtest_roc_auc"] == pytest.approx(md["backtest_roc_auc"])
        assert v.parity_passed is True and v.onnx_sha256 == e2e.metadata(key.replace("_model", "_onnx"))["sha256"]
    champion = registry.champion()
    assert champion is not None and champion.status == "champion"
    assert [v.version for v in versions.values() if v.status == "champion"] == [champion.version]
    md = e2e.metadata("champion_model")
    assert md["champion_version"] == champion.version and md["decision"] == "promoted" and "first champion" in md["reason"]


def test_onnx_agrees_with_native_models(e2e: PipelineRun) -> None:
    from lib.export import onnx_churn_probability, onnx_session
    from lib.training import feature_matrix
    from ml_assets.assets.export import native_scores

    checks = {c.check_name: c for c in e2e.results["train"].get_asset_check_evaluations()}
    held_out = e2e.read("training_set").filter(pl.col("split").is_in(["valid", "test"]))
    x = feature_matrix(held_out)
    for kind, key in (("lightgbm", "lgbm"), ("torch", "torch")):
        check = checks[f"{key}_onnx_parity"]
        assert check.passed and check.metadata["max_abs_diff"].value <= ONNX_TOLERANCE
        assert check.metadata["golden_rows"].value > 4000
        # Independently of the check: score the held-out rows both ways.
        model, onnx_md = e2e.metadata(f"{key}_model"), e2e.metadata(f"{key}_onnx")
        architecture = e2e.read(f"{key}_model").architecture if key == "torch" else None
        native = native_scores(kind, Path(model["artifact_uri"]).read_bytes(), architecture, x)
        onnx = onnx_churn_probability(onnx_session(Path(onnx_md["artifact_uri"]).read_bytes()), x)
        assert np.max(np.abs(native - onnx)) <= ONNX_TOLERANCE, kind
    assert checks["lgbm_onnx_parity"].metadata["threshold_edges_rows"].value > 0


def _champion_and_challenger_sessions(e2e: PipelineRun):
    from lib.export import onnx_session

    return {key: onnx_session(Path(e2e.metadata(f"{key}_onnx")["artifact_uri"]).read_bytes()) for key in ("lgbm", "torch")}


def test_behaviour_longer_recency_raises_churn_probability(e2e: PipelineRun) -> None:
    from lib.export import onnx_churn_probability
    from lib.features import FEATURE_COLUMNS
    from lib.training import feature_matrix

    test = e2e.read("training_set").filter(pl.col("split") == "test")
    recent = test.filter(pl.col("recency_days") < 30)
    x = feature_matrix(recent)
    col = FEATURE_COLUMNS.index
    # The same customers after 30 more silent days: recency, age and the overdue ratio move together.
    later = x.copy()
    later[:, col("recency_days")] += 30
    later[:, col("tenure_days")] += 30
    repeat = recent["repeat_days"].to_numpy() > 0
    later[:, col("overdue_ratio")] = np.where(repeat, later[:, col("recency_days")] / np.maximum(x[:, col("mean_gap_days")], 1.0), 0.0)
    # Recency alone longer.
    longer = x.copy()
    longer[:, col("recency_days")] += 30
    for key, session in _champion_and_challenger_sessions(e2e).items():
        before, after = onnx_churn_probability(session, x), onnx_churn_probability(session, later)
        assert after.mean() > before.mean() + 0.05, key
        assert (after > before).mean() > 0.8, key
        if key == "lgbm":
            # A monotone constraint: a longer recency alone never lowers the score of any customer.
            assert (onnx_churn_probability(session, longer) >= before - 1e-7).all()


def test_behaviour_scores_do_not_depend_on_row_order(e2e: PipelineRun) -> None:
    from lib.export import onnx_churn_probability
    from lib.training import feature_matrix

    x = feature_matrix(e2e.read("training_set").filter(pl.col("split") == "test"))
    order = np.random.default_rng(5).permutation(len(x))
    for key, session in _champion_and_challenger_sessions(e2e).items():
        straight = onnx_churn_probability(session, x)
        shuffled = onnx_churn_probability(session, x[order])
        np.testing.assert_allclose(shuffled, straight[order], rtol=0, atol=1e-7, err_msg=key)
        # One row alone scores as it does inside a batch.
        np.testing.assert_allclose(onnx_churn_probability(session, x[:1]), straight[:1], rtol=0, atol=1e-7, err_msg=key)


def test_batch_predictions_score_every_active_customer_with_the_champion(e2e: PipelineRun) -> None:
    version = e2e.resources["registry"].champion().version
    for day in (*E2E_QUIET_DAYS, *E2E_DRIFT_DAYS):
        preds = e2e.read("batch_predictions", [day])
        feats = e2e.read("customer_features", [day])
        assert preds.height == feats.height > 0
        assert set(preds["customer_id"]) == set(feats["customer_id"])
        assert preds["churn_probability"].is_between(0, 1).all()
        assert (preds["model_version"] == version).all()
        assert (preds["snapshot_date"] == day).all()
        assert e2e.metadata("batch_predictions", day)["model_version"] == version


def test_the_champion_and_every_scored_day_carry_the_business_view(e2e: PipelineRun) -> None:
    """Precision, churn caught and lift at the contact budget on the test split, and the day's expected revenue at risk."""
    from lib.business import business_view
    from lib.settings import Settings

    budget = Settings().rollout.contact_budget
    champion = e2e.metadata("champion_model")
    assert "cumulative gains" in champion["gains_and_lift_test_split"]
    assert 0 < champion["test_recall_at_budget"] < 1 and champion["test_lift_at_budget"] > 1.5  # far better than a random list
    assert "churn caught" in champion["business_view_test_split"]
    # The model card: one self-contained page with every section, linked from the materialization.
    card = Path(champion["model_card_path"]).read_text()
    for section in ("Data window", "Out of time", "calibration", "contact list", "Top reasons overall", "Drift since training"):
        assert section in card, section
    assert card.count("data:image/png;base64,") == 3 and "<script" not in card
    assert champion["model_card"].startswith("file://") and champion["champion_version"] in card
    for day in E2E_DRIFT_DAYS:
        md = e2e.metadata("drift_report", day)
        scores = e2e.read("batch_predictions", [day]).join(e2e.read("customer_features", [day]), on=["customer_id", "snapshot_date"])
        expected = business_view(scores["churn_probability"].to_numpy(), scores["spend_90d"].to_numpy(), budget)
        assert md["contact_list_customers"] == round(scores.height * budget)
        assert md["expected_revenue_at_risk_top_k"] == pytest.approx(expected["expected_revenue_at_risk_top_k"], abs=0.01)
        # The list by P(churn) holds mostly customers long gone (no recent spend); the value-ranked list holds the revenue.
        assert 0 <= md["expected_revenue_at_risk_top_k"] < md["expected_revenue_at_risk_value_ranked"] < md["expected_revenue_at_risk_all"]


def test_drift_is_found_after_the_shift_and_not_before(e2e: PipelineRun) -> None:
    quiet = [e2e.metadata("drift_report", d) for d in E2E_QUIET_DAYS]
    drifted = [e2e.metadata("drift_report", d) for d in E2E_DRIFT_DAYS]
    for md in quiet:
        assert md["dataset_drift"] is False, md["drifted_columns"]
        assert md["drift_share"] < 0.2
    for md in drifted:
        assert md["dataset_drift"] is True
        assert {"spend_30d", "avg_basket", "mobile_share"} <= set(md["drifted_columns"])
        assert Path(md["report_path"]).read_bytes().lstrip().lower().startswith(b"<")
    # Judged against the same population four weeks earlier (ageing features reported, not counted).
    assert all(m["reference"].startswith("active customers on ") and m["drift_status"] == "judged" for m in quiet + drifted)
    assert not any(m["prediction_drift"] for m in quiet)
    table = e2e.read("drift_report", list(E2E_DRIFT_DAYS))
    assert table.filter(pl.col("column") == "spend_30d")["drifted"].all()


def test_every_day_links_a_page_full_reports_for_events_and_the_newest_day_and_on_demand(e2e: PipelineRun, tmp_path: Path) -> None:
    # A quiet day that is not the newest: the verdict page (every column, a few kB), no evidently page nobody opens.
    first, last = (e2e.metadata("drift_report", d) for d in E2E_QUIET_DAYS)
    reports = e2e.root / "artifacts" / "drift_reports"
    assert first["report"] == f"verdict page (no drift event); `churn report drift {E2E_QUIET_DAYS[0]}` adds evidently's plots"
    page = Path(first["report_path"])
    assert page == reports / f"{E2E_QUIET_DAYS[0]}.html" and first["report_url"] == f"file://{page}"
    assert first["report_bytes"] == page.stat().st_size < 10_000 and "<script" not in page.read_text()
    assert first["drift_reason"] in page.read_text().replace("&gt;", ">").replace("&lt;", "<")
    stored = json.loads(Path(first["verdict_path"]).read_text())
    assert stored["full_report"] is None and stored["reason"] == first["drift_reason"]
    assert stored["column_scores"] == pytest.approx(first["column_scores"], abs=1e-4)
    # The run's last day is the newest: its full report is one click away.
    assert last["report"] == "full report (the newest day; a verdict page once a newer day is reported)"
    assert Path(last["report_path"]) == reports / f"{E2E_QUIET_DAYS[1]}.html" and last["report_bytes"] > 10_000
    assert (reports / "latest-day.txt").read_text() == E2E_QUIET_DAYS[1].isoformat()
    assert all(e2e.metadata("drift_report", d)["report"] == "full report (drift event)" for d in E2E_DRIFT_DAYS)
    # Every full page finds evidently's bundle and font where it says they are (stored once, beside the reports).
    for page in [Path(last["report_path"]), *(Path(e2e.metadata("drift_report", d)["report_path"]) for d in E2E_DRIFT_DAYS)]:
        sources = re.findall(r'<script src="([^"]+)"></script>|url\(([^)]+\.woff2)\)', page.read_text())
        assert len(sources) == 2 and all((page.parent / (js or font)).is_file() for js, font in sources), (page, sources)
        assert page.stat().st_size < 1_000_000  # the verdict and a few plots, not evidently's whole page

    env, data, _ = copy_pipeline_env(e2e, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "ml_assets.cli", "report", "drift", E2E_QUIET_DAYS[0].isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    html = data / "artifacts" / "drift_reports" / f"{E2E_QUIET_DAYS[0]}.html"
    assert f"drift report for {E2E_QUIET_DAYS[0]}: {html}" in done.stdout and "<script src=" in html.read_text()
    assert json.loads(html.with_suffix(".json").read_text())["full_report"] == "asked"
    # The same seeded samples, so the same verdict as the day's first run.
    assert first["drift_reason"] in done.stdout
    assert pl.read_parquet(data / "lake" / "drift_report" / f"{E2E_QUIET_DAYS[0]}.parquet").equals(
        e2e.read("drift_report", [E2E_QUIET_DAYS[0]])
    )


def test_stage_runs_report_their_checks(e2e: PipelineRun) -> None:
    checks = e2e.results["ingest"].get_asset_check_evaluations()
    by_name = {c.check_name: c for c in checks}
    assert by_name["rows_conserved"].passed
    assert by_name["one_row_per_customer"].passed


def test_features_reach_training_and_scoring_through_feast(e2e: PipelineRun) -> None:
    from lib.features import FEATURE_COLUMNS

    # Training rows carry exactly the lake snapshot's values (point-in-time join on the snapshot instant).
    training = e2e.read("training_set")
    assert "Feast feature service churn_model" in e2e.metadata("training_set")["features_from"]
    day = training["snapshot_date"].max()
    lake = e2e.read("customer_features", [day])
    joined = training.filter(pl.col("snapshot_date") == day).join(lake, on="customer_id", suffix="_lake")
    assert joined.height == training.filter(pl.col("snapshot_date") == day).height > 0
    for col in FEATURE_COLUMNS:
        assert (joined[col] == joined[f"{col}_lake"]).all(), col

    # Scoring: the online store holds the newest scored day and the blocking skew check passed in both scoring runs.
    for stage in ("score_quiet", "score_drift"):
        skew = {c.check_name: c for c in e2e.results[stage].get_asset_check_evaluations()}["training_serving_skew"]
        assert skew.passed
        assert skew.metadata["mismatched_values"].value == 0 and skew.metadata["sampled_customers"].value > 0
    store = e2e.resources["feature_store"]
    newest = e2e.read("customer_features", [E2E_DRIFT_DAYS[1]])
    online = store.online(newest["customer_id"].head(20).to_list())
    assert online["spend_30d"].to_list() == newest["spend_30d"].head(20).to_list()


def test_every_customer_is_scored_by_the_champion_and_in_shadow_by_the_challenger(e2e: PipelineRun) -> None:
    from lib.rollout import CHAMPION_ARM

    registry = e2e.resources["registry"]
    champion = registry.champion().version
    challengers = [v.version for v in registry.challengers()]
    assert challengers and champion not in challengers  # after the first training: the best candidate not promoted
    for day in E2E_QUIET_DAYS:
        served = e2e.read("batch_predictions", [day])
        shadow = e2e.read("shadow_scores", [day])
        # The canary share is 0 by default: every served score is the champion's.
        assert set(served["arm"]) == {CHAMPION_ARM} and set(served["model_version"]) == {champion}
        for version, role in ((champion, "champion"), *((c, "challenger") for c in challengers)):
            part = shadow.filter(pl.col("model_version") == version)
            assert set(part["role"]) == {role} and set(part["customer_id"]) == set(served["customer_id"]), version
        own = shadow.filter(pl.col("model_version") == champion).sort("customer_id")["churn_probability"]
        assert own.to_list() == pytest.approx(served.sort("customer_id")["churn_probability"].to_list(), abs=1e-12)
        _reasons_are_the_champions(e2e, served, day)
        # Nothing has matured yet on these days: the evaluation says so and does nothing.
        md = e2e.metadata("rollout_evaluation", day)
        assert md["verdict"] == "none" and "no matured scores" in md["status"]


def _reasons_are_the_champions(e2e: PipelineRun, served: pl.DataFrame, day: dt.date) -> None:
    """The day's highest served scores (rollout.reasons_share) carry the champion's reasons, the rest none, and each
    explanation adds up to the served score."""
    from lib.explain import explain, explained_positions, reasons_frame
    from lib.features import feature_label
    from lib.settings import Settings
    from lib.training import feature_matrix
    from ml_assets.champion import explain_spec

    registry, artifacts = e2e.resources["registry"], e2e.resources["artifacts"]
    spec = explain_spec(registry.champion(), artifacts)
    labels = {feature_label(f) for f in spec.features}
    share = Settings().rollout.reasons_share
    top = explained_positions(served["churn_probability"].to_numpy(), served["customer_id"].to_list(), share)
    picked = served.with_row_index("_row").filter(pl.col("_row").is_in(top.tolist())).drop("_row")
    assert 0 < picked.height < served.height and picked.height == round(served.height * share)
    others = served.join(picked.select("customer_id"), on="customer_id", how="anti")
    assert others.select(pl.all_horizontal(pl.col("^reason_.*$", "^contribution_.*$").is_null()).all()).item()
    served = picked
    assert set(served["reason_1"].drop_nulls()) <= labels and served["reason_1"].null_count() < served.height / 2
    ranked = served.drop_nulls(["contribution_3"])
    assert ranked.height and (ranked["contribution_1"] >= ranked["contribution_2"]).all()
    assert (ranked["contribution_2"] >= ranked["contribution_3"]).all() and (ranked["contribution_3"] > 0).all()
    rows = e2e.read("customer_features", [day]).join(served.head(200), on="customer_id", how="inner", suffix="_served")
    x = feature_matrix(rows, spec.features)
    probability = 1 / (1 + np.exp(-explain(spec, x).raw))
    assert np.max(np.abs(probability - rows["churn_probability"].to_numpy())) < 1e-5
    again = reasons_frame(spec, x)
    assert again["reason_1"].to_list() == rows["reason_1"].to_list()
    assert again["contribution_1"].fill_null(np.nan).to_numpy() == pytest.approx(
        rows["contribution_1"].fill_null(np.nan).to_numpy(), abs=1e-9, nan_ok=True
    )


def test_a_canary_share_of_customers_is_served_by_the_challenger_and_stays_in_its_arm(e2e: PipelineRun, tmp_path: Path) -> None:
    import dagster as dg

    from lib.rollout import CANARY_ARM, arm_of
    from ml_assets.pipeline import SCORING, materialize_range
    from ml_assets_tests.conftest import copy_pipeline_env, resources_for

    env, data, home = copy_pipeline_env(e2e, tmp_path)
    resources = resources_for(data, env["CHURN_WAREHOUSE_URL"])
    day = E2E_QUIET_DAYS[0]
    # Every score explained here (the default share is checked in the shared run): the challenger's scores may all rank
    # below the champion's highest, and each arm's reasons are what this test is about.
    config = {"ops": {"batch_predictions": {"config": {"canary_share": 0.2, "reasons_share": 1.0}}}}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert materialize_range(SCORING, day, day, instance, resources, "CRITICAL", run_config=config).success
    served = resources["lake"].read_partitions(dg.AssetKey("batch_predictions"), [day.isoformat()])
    shadow = resources["lake"].read_partitions(dg.AssetKey("shadow_scores"), [day.isoformat()])
    registry = resources["registry"]
    champion, canary = registry.champion().version, registry.challengers()[0].version
    in_canary = served.filter(pl.col("arm") == CANARY_ARM)
    # The same customers as the hash says, near the share, each served by the challenger with its own score.
    assert set(in_canary["customer_id"]) == {c for c in served["customer_id"] if arm_of(c, 0.2) == CANARY_ARM}
    assert abs(in_canary.height / served.height - 0.2) < 0.03
    assert set(in_canary["model_version"]) == {canary} and set(served.filter(pl.col("arm") != CANARY_ARM)["model_version"]) == {champion}
    theirs = shadow.filter(pl.col("model_version") == canary).select("customer_id", pl.col("churn_probability").alias("theirs"))
    joined = in_canary.join(theirs, on="customer_id")
    assert joined.height == in_canary.height and (joined["churn_probability"] - joined["theirs"]).abs().max() < 1e-12
    # Each score's reasons are the model's that served it: the challenger's in the canary arm, the champion's elsewhere.
    from lib.explain import reasons_frame
    from lib.training import feature_matrix
    from ml_assets.champion import explain_spec

    features = resources["lake"].read_partitions(dg.AssetKey("customer_features"), [day.isoformat()])
    for version, rows in ((canary, in_canary), (champion, served.filter(pl.col("arm") != CANARY_ARM))):
        spec = explain_spec(registry.get(version), resources["artifacts"])
        ordered = rows.head(100).join(features, on="customer_id", how="left", suffix="_f")
        assert reasons_frame(spec, feature_matrix(ordered, spec.features))["reason_1"].to_list() == ordered["reason_1"].to_list(), version
    # With rollout.reasons off the same scores carry no reasons.
    config["ops"]["batch_predictions"]["config"]["reasons"] = False
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert materialize_range(SCORING, day, day, instance, resources, "CRITICAL", run_config=config).success
    plain = resources["lake"].read_partitions(dg.AssetKey("batch_predictions"), [day.isoformat()])
    assert plain["reason_1"].null_count() == plain.height and plain["contribution_3"].null_count() == plain.height
    assert plain["churn_probability"].to_list() == served["churn_probability"].to_list()
