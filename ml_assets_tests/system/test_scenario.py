"""`churn scenario rollback` as a user runs it: a degraded champion rolled back by the policy, once, with one alert."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow]


def test_the_rollback_scenario_ends_with_ok(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    command = [sys.executable, "-m", "ml_assets.cli", "scenario", "rollback", "--dir", str(tmp_path / "world")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0 and last.startswith("scenario rollback: ok ("), f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "rolled back to" in last and "1 alert" in last
    # Its world is its own: nothing was written under the project's data folder.
    assert (tmp_path / "world" / "registry.sqlite").exists()
