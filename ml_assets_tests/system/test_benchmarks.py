"""`make bench` runs and prints its tables (a smoke run at quick sizes; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from benchmarks.attribution import attribute
from resources.lake import Lake, LakeIOManager

REPO = Path(__file__).resolve().parents[2]


# Each benchmark's quick smoke run and a title its table prints. One test each, so the runs spread over the test
# workers; the backfill and whole-pipeline benchmarks are left out (2+ minutes of Dagster runs at any size, and the
# same graph runs end to end in test_e2e.py and test_loop.py): `make bench` runs them, their harness is checked below.
QUICK = {
    "bench_load": "Code location load",
    "bench_steps": "Per-step overhead",
    "bench_scoring": "Batch scoring",
    "bench_explain": "The network's reasons on customer rows",
    "bench_backtest": "Same folds and scored rows as baseline_model's BG/NBD: yes",
    "bench_rollout": "Rollout verdict for one day",
    "bench_features": "Features for one day",
    "bench_quality": "Model quality out of time",
    "bench_drift": "Drift report",
    "bench_feast": "Feast point-in-time retrieval",
    "bench_online": "SQLite tables identical row by row (bulk vs Feast's writer): yes",
    "bench_service": "Online scoring service",
    "bench_erasure": "Erasure of one customer",
    "bench_chain": "The registry's hash chain",
    "bench_spark": "local Spark beside polars",
}


def test_make_bench_runs_every_benchmark() -> None:
    from benchmarks import run_all

    source = Path(run_all.__file__).read_text()
    assert all(f"{name}," in source for name in [*QUICK, "bench_backfill", "bench_pipeline"])


@pytest.mark.parametrize("name", sorted(QUICK))
def test_quick_benchmark_prints_its_table(name: str) -> None:
    out = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert QUICK[name] in out.stdout
    if name == "bench_load":
        assert "ML libraries imported at load: none" in out.stdout
    if name == "bench_scoring":
        assert "### PyTorch network" in out.stdout and "| vs baseline |" in out.stdout


def test_the_skipped_benchmarks_parse_their_arguments() -> None:
    for name in ("bench_backfill", "bench_pipeline"):
        out = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "--quick" in out.stdout, out.stderr[-2000:]


def test_attribution_counts_the_bodies_and_io_and_not_dagster() -> None:
    """The work clock behind the overhead figures: body and IO time counted once, per step; log calls are Dagster's."""
    spent: dict[str, float] = {}  # each body's own wall time, measured inside it

    @dg.asset
    def slow(context) -> pl.DataFrame:
        t0 = time.perf_counter()
        time.sleep(0.3)
        for _ in range(20):
            context.log.info("a log line is an event written by Dagster")
        spent["slow"] = time.perf_counter() - t0
        return pl.DataFrame({"x": [1, 2, 3]})

    @dg.asset
    def slower(slow: pl.DataFrame):
        t0 = time.perf_counter()
        ballast = bytearray(300 * 2**20)  # 300 MB held while this body runs: its peak must show it
        ballast[::4096] = b"x" * len(ballast[::4096])
        time.sleep(0.4)
        del ballast
        spent["slower"] = time.perf_counter() - t0
        yield dg.MaterializeResult(metadata={"rows": slow.height})

    with tempfile.TemporaryDirectory() as tmp, attribute() as clock:
        io = LakeIOManager(lake=Lake(root=tmp))
        assert dg.materialize([slow, slower], resources={"io_manager": io}).success
    assert set(clock.by_step) == {"slow", "slower"}
    # Each step's figure is its body (however long the machine made it take,
    # so a loaded CI machine cannot fail this) plus a few milliseconds of lake
    # IO; a body counted twice would exceed it by at least 0.3 s.
    for step, least in (("slow", 0.3), ("slower", 0.4)):
        assert least <= spent[step] <= clock.by_step[step] < spent[step] + 0.25, (step, spent[step], clock.by_step[step])
    assert clock.logging_s > 0
    assert clock.work_s == sum(clock.by_step.values()) - clock.logging_s
    assert set(clock.peak_mb_by_step) == {"slow", "slower"}
    assert clock.peak_mb_by_step["slower"] - clock.peak_mb_by_step["slow"] > 250
