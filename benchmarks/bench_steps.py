"""Per-step overhead: one day of the daily pipeline through Dagster, split into the work and what Dagster adds.

Setup (not timed): a small generated source (800 customers), 60 days ingested
and featurized, both models trained and a champion promoted. Then, for the
same day, alternating:

- in_process executor: `execute_job` of `daily_pipeline_job` (the executor
  this code location uses locally) on a persistent SQLite instance. The run's
  work, the time inside the asset and check functions and the IO manager, is
  measured in the run itself (`benchmarks.attribution`): the baseline is the
  same asset functions, timed where Dagster calls them;
- multiprocess executor: the same job with a process per step (Dagster's
  default executor), against the median work of the in-process runs.

Added per step = (run wall time - work) / steps: everything Dagster does for
the run (plan, run and step bookkeeping, events and metadata written to the
instance) charged to the steps. The time before the first step starts
(reconstructing the job, creating the run) is reported apart as well.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from dataclasses import dataclass

from benchmarks.common import project_sandbox

START, END = dt.date(2024, 7, 1), dt.date(2024, 8, 29)
DAY = END


def job_in_process():
    import dagster as dg

    from ml_assets.definitions import defs

    return defs.resolve_job_def("daily_pipeline_job").with_executor_def(dg.in_process_executor)


def job_multiprocess():
    import dagster as dg

    from ml_assets.definitions import defs

    return defs.resolve_job_def("daily_pipeline_job").with_executor_def(dg.multiprocess_executor)


@dataclass
class RunSplit:
    wall_s: float
    work_s: float
    steps: int
    before_first_step_s: float
    work_by_step: dict[str, float]
    wall_by_step: dict[str, float]

    @property
    def added_per_step(self) -> float:
        return (self.wall_s - self.work_s) / self.steps


def run_split(instance, run_id: str, wall_s: float, started: float, work_by_step: dict[str, float]) -> RunSplit:
    """Per-step wall times from the run's own STEP_START/STEP_SUCCESS events."""
    starts: dict[str, float] = {}
    walls: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or record.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[record.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            walls[record.step_key] = record.timestamp - starts[record.step_key]
    first = min(starts.values()) - started if starts else 0.0
    return RunSplit(wall_s, sum(work_by_step.values()), len(starts), first, dict(work_by_step), walls)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    n = 1 if args.quick else args.repeats
    with project_sandbox("bench_steps_"):
        return _measure(n, with_multiprocess=not args.quick)


def _setup():
    import dagster as dg

    from lib.datagen import GeneratorConfig, generate_transactions
    from ml_assets.pipeline import INGEST_TO_FEATURES, TRAINING, materialize_range, materialize_unpartitioned, training_run_config
    from resources import build_warehouse

    wh = build_warehouse()
    wh.create_table(replace=True)
    wh.append(generate_transactions(GeneratorConfig(start=START, end=END, customers=800, seed=5)))
    instance = dg.DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("feast_online", 1)
    if not materialize_range(INGEST_TO_FEATURES, START, END, instance, log_level="ERROR").success:
        raise RuntimeError("setup: ingest failed")
    config = training_run_config(END - dt.timedelta(days=1))
    config["ops"]["training_set"]["config"].update({"min_history_days": 14, "horizon_days": 7, "snapshot_every_days": 3})
    # 800 customers over 60 days give a small, noisy test split; this measures overhead, not model quality.
    for model in ("lgbm_model", "torch_model"):
        config["ops"][model] = {"config": {"min_roc_auc": 0.5}}
    if not materialize_unpartitioned(TRAINING, instance, config, log_level="ERROR").success:
        raise RuntimeError("setup: training failed")
    return instance


def _execute(instance, target, attribute_work: bool) -> RunSplit:
    import dagster as dg

    from benchmarks.attribution import attribute

    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with attribute() as clock:
        started = time.time()
        t0 = time.perf_counter()
        with dg.execute_job(dg.reconstructable(target), instance, run_config=quiet, tags={"dagster/partition": DAY.isoformat()}) as result:
            if not result.success:
                raise RuntimeError(f"{target.__name__} failed")
            run_id = result.run_id
        wall = time.perf_counter() - t0
    return run_split(instance, run_id, wall, started, clock.by_step if attribute_work else {})


def _measure(n: int, with_multiprocess: bool) -> str:
    import warnings

    warnings.filterwarnings("ignore")
    instance = _setup()
    _execute(instance, job_in_process, True)  # warm: the first run pays the ML libraries' imports
    inproc: list[RunSplit] = []
    multi: list[RunSplit] = []
    for _ in range(n):
        inproc.append(_execute(instance, job_in_process, True))
        # The quick smoke run skips the process-per-step variant: it alone takes a minute.
        if with_multiprocess:
            multi.append(_execute(instance, job_multiprocess, False))
    work = statistics.median(r.work_s for r in inproc)
    steps = inproc[0].steps

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"

    rows = [
        "",
        f"### Per-step overhead: one day of daily_pipeline_job, {steps} steps, {n} runs each (target: at most 0.3 s added per step)",
        "",
        "| executor | run wall s | work s (asset + check bodies, IO manager) | Dagster s | before the first step s | added per step s |",
        "|---|---|---|---|---|---|",
        f"| in_process | {cell([r.wall_s for r in inproc])} | {cell([r.work_s for r in inproc])} | "
        f"{cell([r.wall_s - r.work_s for r in inproc])} | {cell([r.before_first_step_s for r in inproc])} | "
        f"{cell([r.added_per_step for r in inproc])} |",
    ]
    if multi:
        rows.append(
            f"| multiprocess | {cell([r.wall_s for r in multi])} | {work:.2f} (in-process median) | "
            f"{cell([r.wall_s - work for r in multi])} | {cell([r.before_first_step_s for r in multi])} | "
            f"{cell([(r.wall_s - work) / steps for r in multi])} |"
        )
    rows += ["", "in_process, per step (median s): step wall / work inside it"]
    for step in inproc[0].wall_by_step:
        wall = statistics.median(r.wall_by_step.get(step, 0.0) for r in inproc)
        body = statistics.median(r.work_by_step.get(step, 0.0) for r in inproc)
        rows.append(f"- {step}: {wall:.2f} / {body:.2f}")
    out = "\n".join(rows)
    print(out)
    return out


if __name__ == "__main__":
    main()
