"""`make bench`: every benchmark, one results table each, with the machine described."""

from __future__ import annotations

import argparse
import sys

from benchmarks import (
    bench_backfill,
    bench_backtest,
    bench_chain,
    bench_drift,
    bench_erasure,
    bench_explain,
    bench_feast,
    bench_features,
    bench_load,
    bench_online,
    bench_pipeline,
    bench_quality,
    bench_rollout,
    bench_scoring,
    bench_service,
    bench_spark,
    bench_steps,
)
from benchmarks.common import machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every benchmark runs")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names to leave out, e.g. backfill,pipeline")
    args = parser.parse_args(argv)
    skip = {f"bench_{name.strip()}" for name in args.skip.split(",") if name.strip()}
    flags = ["--quick"] if args.quick else []
    print(f"machine: {machine()}")
    for bench in (
        bench_load,
        bench_steps,
        bench_scoring,
        bench_explain,
        bench_backtest,
        bench_rollout,
        bench_features,
        bench_quality,
        bench_drift,
        bench_feast,
        bench_online,
        bench_service,
        bench_erasure,
        bench_chain,
        bench_spark,
        bench_backfill,
        bench_pipeline,
    ):
        if bench.__name__.rsplit(".", 1)[-1] in skip:
            print(f"(skipped: {bench.__name__})")
            continue
        bench.main(flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
