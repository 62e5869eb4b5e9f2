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


def same(polars_frame: pl.DataFrame, spark_frame: pl.DataFrame, key: tuple[str, ...] = ("customer_id",)) -> None:
    """Integers, strings, dates and instants exactly; floats within 1e-9 (sums in another order)."""
    assert polars_frame.schema == spark_frame.schema
    assert_frame_equal(polars_frame.sort(key), spark_frame.sort(key), check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture(scope="module")
def spark():
    from resources import ComputeResource

    return ComputeResource(engine="spark").session()


def test_the_engine_is_a_setting_and_the_connect_endpoint_a_secret(tmp_path: Path) -> None:
    import dagster as dg

    from lib.settings import SettingsError, load_settings
    from resources import build_resources

    env = {
        "CHURN_SETTINGS_FILE": "none",
        "CHURN_DATA_DIR": str(tmp_path),
        "CHURN_COMPUTE_ENGINE": "spark",
        "CHURN_SPARK_REMOTE": "sc://spark-connect:15002/;token=hunter2",
        "CHURN_SPARK_CONF": '{"spark.executor.instances": "4"}',
    }
    settings = load_settings(env)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    compute = build_resources(settings)["compute"]
    # Inside Dagster the endpoint is an EnvVar, resolved at run time, never shown in the UI.
    assert compute.spark and isinstance(compute.remote, dg.EnvVar) and compute.conf == {"spark.executor.instances": "4"}
    assert "hunter2" not in compute.describe()
    assert not build_resources(load_settings({"CHURN_SETTINGS_FILE": "none", "CHURN_DATA_DIR": str(tmp_path)}))["compute"].spark
    with pytest.raises(SettingsError, match="CHURN_SPARK_CONF.*spark"):
        load_settings({**env, "CHURN_SPARK_CONF": '{"executor.instances": "4"}'})
    with pytest.raises(SettingsError, match="CHURN_COMPUTE_ENGINE"):
        load_settings({**env, "CHURN_COMPUTE_ENGINE": "dask"})
    secret_in_file = tmp_path / "churn.yaml"
    secret_in_file.write_text("compute:\n  spark_remote: sc://spark-connect:15002/;token=hunter2\n")
    with pytest.raises(SettingsError, match="compute.spark_remote.*CHURN_SPARK_REMOTE") as refused:
        load_settings({"CHURN_SETTINGS_FILE": str(secret_in_file)})
    assert "hunter2" not in str(refused.value)


def test_a_training_sample_keeps_whole_customers_and_the_same_ones_every_time() -> None:
    from lib.labels import sample_customers

    labels = pl.DataFrame({"customer_id": [f"C{i % 500}" for i in range(2000)], "snapshot_date": [i // 500 for i in range(2000)]})
    kept, customers = sample_customers(labels, 100)
    assert customers == 500
    assert 70 <= kept["customer_id"].n_unique() <= 130
    # Every snapshot of a kept customer, none of the others'.
    assert kept.group_by("customer_id").len()["len"].unique().to_list() == [4]
    assert sample_customers(labels, 100)[0].equals(kept) and sample_customers(labels, 500)[0].equals(labels)


@pytest.mark.slow
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
    frames, state = fold_snapshots(
        state_from_history(tx.filter(pl.col("ts") < first), channels), tx, days, columns, channels, (), population_days
    )
    stx = spark.createDataFrame(tx.to_pandas())
    start = sf.state_from_history(stx.filter(sf.F.col("ts") < sf.instant(first)), channels)
    sframes, sstate = sf.fold_snapshots(start, stx, days, columns, channels, (), population_days)
    for polars_frame, spark_frame in zip(frames, sframes, strict=True):
        same(polars_frame, pl.from_arrow(spark_frame.toArrow()))  # type: ignore[arg-type]
    same(state, pl.from_arrow(sstate.toArrow()))  # type: ignore[arg-type]


@pytest.mark.slow
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


def test_the_spark_values_are_the_deployment_of_values_yaml_plus_the_engine() -> None:
    """Helm replaces lists: the overlay must repeat the user deployment whole (security contexts, volumes, secrets)."""
    import yaml

    from lib.settings import ENV, load_settings

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    base = yaml.safe_load((deploy / "helm" / "values.yaml").read_text())["dagster-user-deployments"]["deployments"]
    spark = yaml.safe_load((deploy / "helm" / "values-spark.yaml").read_text())["dagster-user-deployments"]["deployments"]
    assert len(base) == len(spark) == 1
    added = spark[0]["env"][len(base[0]["env"]) :]
    assert {**spark[0], "env": spark[0]["env"][: len(base[0]["env"])]} == base[0]
    assert {e["name"] for e in added} <= set(ENV) and {"CHURN_COMPUTE_ENGINE"} <= {e["name"] for e in added}
    settings = load_settings({"CHURN_SETTINGS_FILE": "none", **{e["name"]: e["value"] for e in added}})
    assert settings.compute.engine == "spark" and settings.compute.spark_conf["spark.executor.instances"] == "8"
    template = yaml.safe_load((deploy / "k8s" / "spark-executor-template.yaml").read_text())
    import kubernetes_validate

    from ml_assets_tests.system.test_k8s import K8S_VERSION

    kubernetes_validate.validate(template, K8S_VERSION, strict=True)
    container = template["spec"]["containers"][0]
    assert template["spec"]["automountServiceAccountToken"] is False and template["spec"]["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["readOnlyRootFilesystem"] and container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
