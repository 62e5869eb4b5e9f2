"""The Spark engine (compute.engine: spark) against the polars path: the same files, the same figures.

Spark runs in local mode (a real driver and executor threads, Java 17); `make test` installs the `spark` extra.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lib.datagen import GeneratorConfig, generate_transactions
from lib.features import cutoff_for, feature_columns, fold_snapshots
from lib.history import state_from_history
from ml_assets_tests.conftest import E2E_DRIFT_DAYS, PipelineRun, copy_pipeline_env

pytestmark = [pytest.mark.slow]


def same(polars_frame: pl.DataFrame, spark_frame: pl.DataFrame, key: tuple[str, ...] = ("customer_id",)) -> None:
    """Integers, strings, dates and instants exactly; floats within 1e-9 (sums in another order)."""
    assert polars_frame.schema == spark_frame.schema
    assert_frame_equal(polars_frame.sort(key), spark_frame.sort(key), check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture(scope="module")
def spark():
    from resources import ComputeResource

    return ComputeResource(engine="spark").session()


@pytest.mark.parametrize(
    ("channels", "drop", "population_days"),
    [(("web", "mobile", "store"), (), None), (("store", "web"), ("quantity", "category"), 60)],
    ids=["every-column", "no-quantity-or-category-population-60"],
)
def test_the_carried_state_and_every_feature_equal_the_polars_path(spark, channels, drop, population_days) -> None:
    from lib.spark import features as sf

    tx = generate_transactions(GeneratorConfig(start=dt.date(2024, 1, 1), end=dt.date(2024, 6, 30), customers=600, seed=3))
    tx = tx.drop(*drop).with_columns(pl.col("ts").cast(pl.Datetime("us")))
    # A purchase at the last microsecond of a day and at midnight: the day boundaries.
    edge = tx.head(2).with_columns(pl.Series("ts", [dt.datetime(2024, 6, 1, 23, 59, 59, 999_999), dt.datetime(2024, 6, 2)]))
    tx = pl.concat([tx, edge])
    days = [dt.date(2024, 6, 1), dt.date(2024, 6, 2), dt.date(2024, 6, 5)]
    columns = feature_columns(tx.columns, channels)
    first = cutoff_for(days[0] - dt.timedelta(days=1))
    frames, state = fold_snapshots(state_from_history(tx.filter(pl.col("ts") < first), channels), tx, days, columns, channels, (), population_days)
    stx = spark.createDataFrame(tx.to_pandas())
    start = sf.state_from_history(stx.filter(sf.F.col("ts") < sf.instant(first)), channels)
    sframes, sstate = sf.fold_snapshots(start, stx, days, columns, channels, (), population_days)
    for polars_frame, spark_frame in zip(frames, sframes, strict=True):
        same(polars_frame, pl.from_arrow(spark_frame.toArrow()))  # type: ignore[arg-type]
    same(state, pl.from_arrow(sstate.toArrow()))  # type: ignore[arg-type]


@pytest.mark.xdist_group("e2e")
def test_the_whole_graph_runs_on_spark_and_equals_the_polars_run(e2e: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end-to-end world on Spark over a copy of the polars run: two days of features (the state rebuilt from a year
    of validated days), their scores by the champion and the challenger, then the training set.
    Features, scores and the training set equal what the polars path wrote."""
    import dagster as dg

    from lib.settings import load_settings
    from ml_assets.pipeline import INGEST_TO_FEATURES, SCORING, materialize_range, materialize_unpartitioned, training_run_config
    from ml_assets_tests.conftest import E2E_TRAIN_UNTIL
    from resources import build_resources

    env, data, home = copy_pipeline_env(e2e, tmp_path)
    # As a deployment sets it: the environment, read by the settings, the resources built from them.
    for name, value in {**env, "CHURN_COMPUTE_ENGINE": "spark", "CHURN_SETTINGS_FILE": "none"}.items():
        if name.startswith("CHURN_"):
            monkeypatch.setenv(name, value)
    resources = build_resources(load_settings())
    assert resources["compute"].spark
    lake = resources["lake"]
    days = [d.isoformat() for d in E2E_DRIFT_DAYS]
    keys = ("customer_features", "batch_predictions", "shadow_scores")
    before = {k: lake.read_partitions(dg.AssetKey(k), days) for k in keys}
    training_before = lake.read_single(dg.AssetKey("training_set"))
    for key in keys:
        for day in days:
            lake.path_for(dg.AssetKey(key), day, ".parquet").unlink()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Ingest and validation again (single-node, per day), then the features on Spark.
        features = materialize_range(INGEST_TO_FEATURES, *E2E_DRIFT_DAYS, instance, resources, "CRITICAL")
        assert features.success
        checks = {c.check_name: c.passed for c in features.get_asset_check_evaluations() if c.asset_key.path == ["customer_features"]}
        assert checks == {"one_row_per_customer": True, "feature_expectations": True}
        assert materialize_range(SCORING, *E2E_DRIFT_DAYS, instance, resources, "CRITICAL").success
        meta = instance.fetch_materializations(dg.AssetKey("customer_features"), limit=1).records[0].asset_materialization.metadata
        config = {"ops": {"training_set": training_run_config(E2E_TRAIN_UNTIL)["ops"]["training_set"]}}
        assert materialize_unpartitioned(["training_set"], instance, config, resources, "CRITICAL").success
        training = instance.fetch_materializations(dg.AssetKey("training_set"), limit=1).records[0].asset_materialization.metadata
    assert "Spark" in training["features_from"].value
    same(training_before, lake.read_single(dg.AssetKey("training_set")), ("customer_id", "snapshot_date"))
    assert meta["state_from"].value.startswith("rebuilt from") and "Spark" in meta["engine"].value
    after = {k: lake.read_partitions(dg.AssetKey(k), days) for k in keys}
    same(before["customer_features"], after["customer_features"], ("customer_id", "snapshot_date"))
    assert after["shadow_scores"]["model_version"].n_unique() >= 2  # the champion and at least one challenger
    same(before["batch_predictions"], after["batch_predictions"], ("customer_id", "snapshot_date"))
    same(before["shadow_scores"], after["shadow_scores"], ("customer_id", "snapshot_date", "model_version"))
