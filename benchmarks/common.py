"""Shared helpers: repeated timing with median/min/max, peak memory of a child process, a results table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass
class Timing:
    label: str
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def row(self, baseline: Timing | None = None) -> str:
        ratio = f"{self.median / baseline.median:.2f}x" if baseline else "baseline"
        return f"| {self.label} | {self.median:.3f} | {min(self.samples):.3f} | {max(self.samples):.3f} | {ratio} |"


def repeat(label: str, fn: Callable[[], object], n: int) -> Timing:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing(label, samples)


def run_python(code: str) -> dict:
    """Run code in a fresh interpreter; it prints one JSON line, which is returned."""
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# The start of every pipeline benchmark's child process: imports timed apart
# (`imports`), the instance from DAGSTER_HOME, and the (mode, args) it was given.
PIPELINE_CHILD_PRELUDE = """
import datetime as dt, json, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import dagster as dg
from ml_assets.pipeline import INGEST_TO_FEATURES, SCORING, TRAINING, materialize_range, materialize_unpartitioned
from resources import build_resources
from benchmarks.common import peak_rss_mb
import __MODULES__  # noqa: F401 (the ML libraries a run will load, imported here so their cost is timed apart)
imports = time.perf_counter() - t0
instance = dg.DagsterInstance.get()
mode, args = __MODE__
"""


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB, for benchmark children to report."""
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child forked
    # from a benchmark process holding 10 M generated rows would report the parent's size.
    import re

    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def run_pipeline_child(body: str, mode: str, args: object, modules: str) -> dict:
    """Run `body` (it prints one JSON line) in a fresh interpreter after the prelude, as the run launcher would start a run."""
    prelude = PIPELINE_CHILD_PRELUDE.replace("__MODULES__", modules).replace("__MODE__", repr((mode, args)))
    return run_python(prelude + textwrap.dedent(body))


def table(title: str, rows: list[str]) -> str:
    head = ["", f"### {title}", "", "| what | median s | min s | max s | vs baseline |", "|---|---|---|---|---|"]
    return "\n".join(head + rows)


def machine() -> str:
    import os

    libs = {p: _version(p) for p in ("dagster", "polars", "lightgbm", "onnxruntime", "torch", "evidently", "great-expectations")}
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; " + ", ".join(
        f"{k} {v}" for k, v in libs.items()
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@contextmanager
def project_sandbox(prefix: str, **env: str) -> Iterator[Path]:
    """A throw-away Dagster instance (the project's dagster.yaml) and data folder; cwd, environment and files restored after.

    Sets DAGSTER_HOME and CHURN_DATA_DIR (plus `env`) and changes into the folder,
    because dagster.yaml's storage folders are relative.
    """
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    try:
        home = tmp / "home"
        home.mkdir()
        shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", home / "dagster.yaml")
        os.environ.update({"DAGSTER_HOME": str(home), "CHURN_DATA_DIR": str(tmp / "data"), **env})
        os.chdir(tmp)
        yield tmp
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
        shutil.rmtree(tmp, ignore_errors=True)


def feature_snapshot(day, ids: list[str], values: dict):
    """One customer_features partition as the asset writes it: the ids, `values` per feature column, the day's timestamps."""
    import polars as pl

    from lib.features import cutoff_for

    n = len(ids)
    return pl.DataFrame(
        {
            "customer_id": ids,
            "snapshot_date": [day] * n,
            **values,
            "feature_timestamp": [cutoff_for(day)] * n,
            "last_tx_ts": [cutoff_for(day)] * n,
        },
        schema_overrides={"feature_timestamp": pl.Datetime("us"), "last_tx_ts": pl.Datetime("us")},
    )
