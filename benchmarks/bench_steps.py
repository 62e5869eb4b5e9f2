"""Per-step overhead: the daily pipeline for one day through Dagster executors, against the same work called directly.

Setup (not timed): a small generated source, 60 days ingested and featurized,
a model trained.  Then, for the same day, alternating:

- direct: the library functions the five assets call (read, quarantine,
  features, scoring, drift), in this process, no Dagster;
- in_process executor: `execute_job` of `daily_pipeline_job` on a persistent
  instance, every step in the run's process (what this code location uses);
- multiprocess executor: the same job with a process per step (Dagster's default).

Added time per step = (executor time - direct time) / 5 steps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from benchmarks.common import Timing, project_sandbox, table

START, END = dt.date(2024, 7, 1), dt.date(2024, 8, 29)
DAY = END


def job_in_process():  # noqa: ANN201 (reconstructable targets must be module-level)
    import dagster as dg

    from ml_assets.definitions import defs

    return defs.resolve_job_def("daily_pipeline_job").with_executor_def(dg.in_process_executor)


def job_multiprocess():  # noqa: ANN201
    import dagster as dg

    from ml_assets.definitions import defs

    return defs.resolve_job_def("daily_pipeline_job").with_executor_def(dg.multiprocess_executor)


def _direct(resources: dict) -> None:
    import polars as pl

    from ml_assets.lib.drift import compute_drift
    from ml_assets.lib.expectations import quarantine
    from ml_assets.lib.export import onnx_churn_probability, onnx_session
    from ml_assets.lib.features import FEATURE_COLUMNS, snapshot_features
    from ml_assets.lib.training import feature_matrix

    wh, lake, store = resources["warehouse"], resources["lake"], resources["artifacts"]
    start = dt.datetime.combine(DAY, dt.time())
    raw = wh.read_transactions(start, start + dt.timedelta(days=1))
    result = quarantine(raw, [DAY], wh.ids_recorded_before(raw["transaction_id"].to_list(), start), dt.datetime.now())
    import dagster as dg

    history = lake.read_partitions(
        dg.AssetKey("validated_transactions"), [(DAY - dt.timedelta(days=i)).isoformat() for i in range(59, 0, -1)]
    )
    feats = snapshot_features(pl.concat([history, result.valid], how="vertical_relaxed"), DAY)
    champion = resources["registry"].champion()
    session = onnx_session(store.get(champion.onnx_uri, champion.onnx_sha256))
    scores = onnx_churn_probability(session, feature_matrix(feats))
    ref = lake.read_single(dg.AssetKey("training_set")).select(FEATURE_COLUMNS).to_pandas()
    ref["prediction"] = onnx_churn_probability(session, ref[list(FEATURE_COLUMNS)].to_numpy())
    cur = feats.select(FEATURE_COLUMNS).to_pandas()
    cur["prediction"] = scores
    compute_drift(ref, cur, [*FEATURE_COLUMNS, "prediction"])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = 1 if args.quick else 3
    with project_sandbox("bench_steps_"):
        return _measure(n, with_multiprocess=not args.quick)


def _measure(n: int, with_multiprocess: bool) -> str:
    import warnings

    import dagster as dg

    from ml_assets.lib.datagen import GeneratorConfig, generate_transactions
    from ml_assets.pipeline import INGEST_TO_FEATURES, TRAINING, materialize_range, materialize_unpartitioned, training_run_config
    from resources import build_resources, build_warehouse

    warnings.filterwarnings("ignore")
    wh = build_warehouse()
    wh.create_table(replace=True)
    wh.append(generate_transactions(GeneratorConfig(start=START, end=END, customers=800, seed=5)))
    instance = dg.DagsterInstance.get()
    assert materialize_range(INGEST_TO_FEATURES, START, END, instance, log_level="ERROR").success
    config = training_run_config(END - dt.timedelta(days=1))
    config["ops"]["training_set"]["config"].update({"min_history_days": 14, "horizon_days": 7, "snapshot_every_days": 3})
    # 800 customers over 60 days give a small, noisy test split; this measures overhead, not model quality.
    for model in ("lgbm_model", "torch_model"):
        config["ops"][model] = {"config": {"min_roc_auc": 0.5}}
    assert materialize_unpartitioned(TRAINING, instance, config, log_level="ERROR").success
    resources = build_resources()

    timings: dict[str, list[float]] = {"direct": [], "in_process": [], "multiprocess": []}
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    _direct(resources)  # warm the libraries' imports once, as a long-lived worker would have them
    for _ in range(n):
        t0 = time.perf_counter()
        _direct(resources)
        timings["direct"].append(time.perf_counter() - t0)
        # The quick smoke run skips the process-per-step variant: it alone takes a minute.
        variants = [("in_process", job_in_process), ("multiprocess", job_multiprocess)][: 2 if with_multiprocess else 1]
        for name, target in variants:
            t0 = time.perf_counter()
            with dg.execute_job(
                dg.reconstructable(target), instance, run_config=quiet, tags={"dagster/partition": DAY.isoformat()}
            ) as result:
                assert result.success, name
            timings[name].append(time.perf_counter() - t0)
    steps = 5
    base = Timing("direct calls of the same work (no Dagster)", timings["direct"])
    inproc = Timing("daily_pipeline_job, in_process executor", timings["in_process"])
    rows = [base.row(), inproc.row(base)]
    added = f"added per step: in_process {(inproc.median - base.median) / steps:.2f} s"
    if timings["multiprocess"]:
        multi = Timing("daily_pipeline_job, multiprocess executor", timings["multiprocess"])
        rows.append(multi.row(base))
        added += f", multiprocess {(multi.median - base.median) / steps:.2f} s"
    out = table(f"Per-step overhead, {steps} steps, one day (target: at most 0.3 s added per step)", rows) + "\n\n" + added
    print(out)
    return out


if __name__ == "__main__":
    main()
