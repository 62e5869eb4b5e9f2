"""Settings errors as a user meets them: each names the file or variable, the key, the value and the rule, in a bounded
message and without a traceback; hostile files (aliases, huge, not UTF-8) are refused before they cost anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from lib.settings import SettingsError, load_settings
from ml_assets.cli import main as churn

ROOT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, content: str | bytes, **env: str) -> None:
    path = tmp_path / "churn.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    load_settings({"CHURN_SETTINGS_FILE": str(path), **env})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("partitions_start: 2025-02-30\n", ["'partitions_start' in", "churn.yaml", "'2025-02-30'", "day value is outside expected range"]),
        ("partitions_start: 1066-10-14\n", ["'partitions_start'", "'1066-10-14'", "greater than or equal to 1970-01-01"]),
        (b"source:\n  table: caf\xe9\n", ["churn.yaml is not UTF-8 text", "byte 0xe9 on line 2"]),
        (
            "deployment:\n  service:\n    max_body_bytes: 1000000000000000000000000000000\n",
            ["'deployment.service.max_body_bytes'", "67108864"],
        ),
        ("deployment:\n  service:\n    max_batch: 100000000\n", ["'deployment.service.max_batch'", "less than or equal to 100000"]),
        ("min_history_days: 1000000\n", ["'min_history_days'", "less than or equal to 3650"]),
        ("deployment:\n  demo_customers: 1e12\n", ["'deployment.demo_customers'"]),
        ("source:\n  columns: {ts: 'Purchase Date'}\n", ["'source.columns'", "'Purchase Date' is not a plain SQL identifier", "view"]),
        ("source:\n  columns: {when: ts}\n", ["'source.columns'", "unknown canonical column(s) ['when']"]),
        ("source:\n  table: 'orders; drop table x'\n", ["'source.table'", "not a plain SQL identifier"]),
        ("source:\n  customer_id_pattern: '[A-Z'\n", ["'source.customer_id_pattern'", "not a regular expression"]),
        (
            "deployment:\n  service:\n    customer_id_pattern: '(('\n",
            ["'deployment.service.customer_id_pattern'", "not a regular expression"],
        ),
        ("label_horizon_days: [1, 2\n", ["churn.yaml is not valid YAML at line"]),
        (
            "rollout:\n  contact_budget: 0.3\n",
            ["'rollout'", "rollout.reasons_share (0.2) is below rollout.contact_budget (0.3)", "CHURN_REASONS_SHARE"],
        ),
    ],
)
def test_each_error_names_the_file_key_value_and_rule(tmp_path: Path, content: str | bytes, expected: list[str]) -> None:
    with pytest.raises(SettingsError) as raised:
        _load(tmp_path, content)
    message = str(raised.value)
    assert all(part in message for part in expected), message
    assert len(message) < 1000 and "\n" not in message


def test_an_environment_variable_is_named_with_its_value(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"environment variable CHURN_SERVICE_MAX_BODY_BYTES: .* \(got '1e30'\)"):
        _load(tmp_path, "", CHURN_SERVICE_MAX_BODY_BYTES="1e30")


def test_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    """A few lines of nested aliases expand to billions of nodes (and once gave a 110 MB message)."""
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
        for i in range(9)
    )
    started = time.perf_counter()
    with pytest.raises(SettingsError, match=r"line 2: YAML aliases \(\*a\) are not allowed") as raised:
        _load(tmp_path, bomb)
    assert time.perf_counter() - started < 1.0 and len(str(raised.value)) < 300


def test_an_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="is 2,000,020 bytes; a settings file is at most 1,000,000 bytes"):
        _load(tmp_path, "# " + "x" * 2_000_000 + "\nmin_roc_auc: 0.7\n")


def test_a_huge_refused_value_is_quoted_bounded(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        _load(tmp_path, "label_horizon_days: [" + "1," * 20_000 + "1]\n")
    assert "'label_horizon_days'" in str(raised.value) and len(str(raised.value)) < 600 and "characters)" in str(raised.value)


def test_a_cli_refusal_is_one_line_without_a_traceback_and_debug_shows_it(tmp_path: Path) -> None:
    (tmp_path / "churn.yaml").write_text("partitions_start: 2025-02-30\n")
    env = {**os.environ, "CHURN_SETTINGS_FILE": str(tmp_path / "churn.yaml"), "CHURN_DATA_DIR": str(tmp_path / "data")}
    plain = subprocess.run([sys.executable, "-m", "ml_assets.cli", "registry"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        f"churn registry: invalid settings: 'partitions_start' in {tmp_path / 'churn.yaml'}: Input should be a valid date or "
        "datetime, day value is outside expected range (got '2025-02-30')"
    ]
    debug = subprocess.run(
        [sys.executable, "-m", "ml_assets.cli", "--debug", "registry"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_init_map_refuses_what_the_pipeline_would_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text('create table t (customer_no text, "Purchase Date" text, total real)'))
        conn.execute(sa.text("insert into t values ('a', '2025-01-10', 1.0)"))
    out = tmp_path / "x.yaml"
    assert churn(["init", "--url", url, "--table", "t", "--out", str(out), "--map", "ts=Purchase Date"]) == 2
    err = capsys.readouterr().err
    assert "--map ts: column 'Purchase Date' is not a plain SQL identifier" in err and "view" in err and not out.exists()
    assert (
        churn(["init", "--url", url, "--table", "t", "--out", str(out), "--map", "ts=customer_no", "--map", "customer_id=customer_no"]) == 2
    )
    assert "one column two meanings" in capsys.readouterr().err and not out.exists()
