"""Static security lint in `make test`, and the rule that every deliberate exception says why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["lib", "ml_assets", "ml_assets_tests", "resources", "sensors", "benchmarks", "feature_repo"]


def test_bandit_rules_are_clean() -> None:
    # ruff's flake8-bandit rules (S), as configured in pyproject.toml, over every Python source of the project.
    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run(
        [str(ruff), "check", "--select", "S", "--output-format", "concise", *SOURCES], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, f"security lint findings:\n{out.stdout}{out.stderr}"


def test_the_lint_can_fail(tmp_path: Path) -> None:
    # The same command flags what it exists to flag: SQL built by formatting, and a pickle load.
    bad = tmp_path / "bad.py"
    bad.write_text(
        'import pickle\n\ndef f(conn, name):\n    conn.execute(f"select * from t where name = \'{name}\'")\n    return pickle.loads(b"")\n'
    )
    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run(
        [str(ruff), "check", "--isolated", "--select", "S", "--output-format", "concise", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 1 and "S608" in out.stdout and "S301" in out.stdout


def test_every_security_exception_is_justified() -> None:
    # A `noqa: S<digits>` (a bandit rule) must carry its reason on the same line or in a comment
    # just above it. Other rules that happen to start with S (SLF001, SIM...) are not security rules.
    unjustified = []
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                match = re.search(r"#\s*noqa:\s*([A-Z0-9, ]+)(.*)$", line)
                if not match or not any(re.fullmatch(r"S\d+", code.strip()) for code in match.group(1).split(",")):
                    continue
                reason_here = len(match.group(2).strip(" ()")) > 5
                reason_above = i > 0 and lines[i - 1].strip().startswith("#")
                if not (reason_here or reason_above):
                    unjustified.append(f"{path.relative_to(REPO)}:{i + 1}: {line.strip()}")
    assert not unjustified, "security lint exceptions without a reason:\n" + "\n".join(unjustified)
