"""Code location load: `import ml_assets.definitions` + resolving every job, against bare `import dagster`.

Each sample is a fresh interpreter, so nothing is cached between them.
"""

from __future__ import annotations

import argparse

from benchmarks.common import Timing, run_python, table

BARE = "import json, time; t = time.perf_counter(); import dagster; print(json.dumps({'s': time.perf_counter() - t}))"
FULL = (
    "import json, sys, time; t = time.perf_counter(); import ml_assets.definitions as d; d.defs.resolve_all_job_defs(); "
    "heavy = [m for m in ('torch', 'lightgbm', 'feast', 'great_expectations', 'evidently', 'onnx', 'onnxruntime', 'pandas') if m in sys.modules]; "
    "print(json.dumps({'s': time.perf_counter() - t, 'heavy': heavy}))"
)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = 2 if args.quick else 7
    bare, full, heavy = [], [], set()
    for _ in range(n):  # interleaved, so drift in machine load hits both alike
        bare.append(run_python(BARE)["s"])
        result = run_python(FULL)
        full.append(result["s"])
        heavy.update(result["heavy"])
    b, f = Timing("bare `import dagster`", bare), Timing("`import ml_assets.definitions` + resolve jobs", full)
    out = table("Code location load (target: at most 1.5x bare dagster)", [b.row(), f.row(b)])
    out += f"\n\nML libraries imported at load: {sorted(heavy) or 'none'}"
    print(out)
    return out


if __name__ == "__main__":
    main()
