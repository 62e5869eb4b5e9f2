"""`make bench` runs and prints its tables (a smoke run at quick sizes; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_benchmarks_print_their_tables() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--quick"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    for title in ("Code location load", "Per-step overhead", "Batch scoring", "PyTorch network", "Features:", "Drift report", "Feast point-in-time retrieval", "Online scoring service", "Backfill of"):
        assert title in out.stdout
    assert "ML libraries imported at load: none" in out.stdout
    assert "| vs baseline |" in out.stdout
