"""One description of the user's problem: the settings file, the environment over it, `churn init`, and the checks that catch a lost row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from lib.contract import propose_mapping
from lib.datagen import RetailConfig, generate_retail
from lib.settings import SettingsError, load_settings
from ml_assets.cli import main as churn
from ml_assets_tests.conftest import resources_for
from resources import SqlWarehouse
from resources.warehouse import DayRead, write_frame


def _file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "churn.yaml"
    path.write_text(text)
    return {"CHURN_SETTINGS_FILE": str(path)}


def test_the_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env = _file(
        tmp_path, "source:\n  table: purchases\n  columns: {ts: purchase_date}\nlabel_horizon_days: 90\npartitions_start: 2023-01-01\n"
    )
    loaded = load_settings(env)
    assert loaded.source.table == "purchases" and loaded.source.columns == {"ts": "purchase_date"}
    assert loaded.label_horizon_days == 90 and loaded.partitions_start == dt.date(2023, 1, 1)
    over = load_settings({**env, "CHURN_LABEL_HORIZON_DAYS": "60", "CHURN_COLUMN_MAP": '{"ts": "sold_at"}'})
    assert over.label_horizon_days == 60 and over.source.columns == {"ts": "sold_at"} and over.source.table == "purchases"


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("max_rejected_share: 2.0\n", {}, "'max_rejected_share' in"),
        ("max_rejected_share: .nan\n", {}, "'max_rejected_share' in"),
        ("", {"CHURN_MAX_REJECTED_SHARE": "NaN"}, "environment variable CHURN_MAX_REJECTED_SHARE"),
        ("", {"CHURN_PARTITIONS_START": "July 1st"}, "environment variable CHURN_PARTITIONS_START"),
        ("label_horizon_days: 0\n", {}, "'label_horizon_days'"),
        ("horizon: 90\n", {}, "'horizon'"),
        ("", {"CHURN_COLUMN_MAP": "{ts: x}"}, "CHURN_COLUMN_MAP is not valid JSON"),
        ("- a list\n", {}, "must hold a mapping"),
    ],
)
def test_a_bad_setting_is_refused_with_where_it_came_from(tmp_path: Path, text: str, env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace(".", r"\.").replace("(", r"\(")):
        load_settings({**_file(tmp_path, text), **env})


def test_a_named_settings_file_that_does_not_exist_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="churn init"):
        load_settings({"CHURN_SETTINGS_FILE": str(tmp_path / "missing.yaml")})


def test_the_code_location_takes_its_run_defaults_from_the_file(tmp_path: Path) -> None:
    """What a schedule or the drift sensor launches runs with these defaults: a fresh process loads the definitions."""
    env = {
        **os.environ,
        **_file(
            tmp_path,
            "label_horizon_days: 90\nmin_history_days: 120\nmax_rejected_share: 0.2\nmin_roc_auc: 0.65\npartitions_start: 2023-03-01\n",
        ),
    }
    probe = (
        "from ml_assets.definitions import defs\n"
        "from ml_assets.assets.training_set import TrainingSetConfig\n"
        "from ml_assets.partitions import daily_partitions\n"
        "ops = lambda config: {op: c['config'] for op, c in config['ops'].items()}\n"
        "daily = defs.resolve_job_def('daily_pipeline_job').partitioned_config.get_run_config_for_partition_key('2024-01-05')\n"
        "t, d = ops(defs.resolve_job_def('training_job').run_config), ops(daily)\n"
        "print(t['training_set']['horizon_days'], t['training_set']['min_history_days'], d['validated_transactions']['max_rejected_share'], "
        "t['lgbm_model']['min_roc_auc'], t['torch_model']['min_roc_auc'], daily_partitions.start.date(), TrainingSetConfig().horizon_days)\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=True)
    # The jobs carry the file's values; the config class keeps the built-in default (importing it reads no file).
    assert out.stdout.split() == ["90", "120", "0.2", "0.65", "0.65", "2023-03-01", "30"]


def test_a_day_outside_the_calendar_names_the_setting() -> None:
    from ml_assets.pipeline import materialize_range

    with dg.instance_for_test() as instance, pytest.raises(ValueError, match=r"partitions_start \(CHURN_PARTITIONS_START\)"):
        materialize_range(["raw_transactions"], dt.date(2001, 1, 1), dt.date(2001, 1, 2), instance, {})


def test_mapping_proposals_follow_names_types_and_samples() -> None:
    columns = [
        {"name": "InvoiceNo", "family": "integer", "samples": ["536365"]},
        {"name": "CustomerID", "family": "number", "samples": ["17850.0"]},
        {"name": "Note", "family": "text", "samples": ["2010-12-01 is a date in a note"]},
        {"name": "InvoiceDate", "family": "text", "samples": ["2010-12-01 08:26:00", "2010-12-01"]},
        {"name": "Quantity", "family": "integer", "samples": ["6"]},
        {"name": "UnitPrice", "family": "number", "samples": ["2.55"]},
    ]
    assert propose_mapping(columns) == {"customer_id": "CustomerID", "ts": "InvoiceDate", "amount": "UnitPrice", "quantity": "Quantity"}
    assert propose_mapping(columns, {"amount": "Quantity"})["amount"] == "Quantity"


def test_churn_init_writes_a_settings_file_the_pipeline_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    log = generate_retail(RetailConfig(start=dt.date(2024, 3, 1), end=dt.date(2024, 6, 30), customers=300))
    # An order-lines log: the order number repeats, so it is not a transaction id.
    write_frame(url, "orders", log.with_columns((pl.int_range(pl.len()) // 2).alias("transaction_id")))
    out = tmp_path / "churn.yaml"
    # Four months cannot label a 60-day horizon twice (train and held out): refused, naming the longest that works.
    assert churn(["init", "--url", url, "--table", "orders", "--out", str(out), "--horizon-days", "60"]) == 2
    assert "longest horizon this span labels is" in capsys.readouterr().err
    assert churn(["init", "--url", url, "--table", "orders", "--out", str(out), "--horizon-days", "45"]) == 0
    printed = capsys.readouterr().out
    assert "'transaction_id' repeats values" in printed and "purchase_date" in printed
    loaded = load_settings({"CHURN_SETTINGS_FILE": str(out)})
    assert loaded.source.columns == {"customer_id": "customer_no", "ts": "purchase_date"}
    assert loaded.partitions_start == log["purchase_date"].min() and loaded.label_horizon_days == 45
    # A further categorical column is named, not guessed.
    extra = tmp_path / "extra.yaml"
    assert churn(["init", "--url", url, "--table", "orders", "--out", str(extra), "--categorical", "quantity"]) == 0
    loaded_extra = load_settings({"CHURN_SETTINGS_FILE": str(extra)}).source
    assert loaded_extra.categoricals == ["quantity"] and "quantity" not in loaded_extra.columns.values()
    # Refuses to overwrite, refuses a bad gate, never writes a password.
    assert churn(["init", "--url", url, "--table", "orders", "--out", str(out)]) == 2
    assert churn(["init", "--url", url, "--table", "orders", "--out", str(tmp_path / "b.yaml"), "--max-rejected-share", "2"]) == 2


def test_churn_init_never_writes_a_password(tmp_path: Path, pg_schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    from ml_assets_tests.conftest import PG_URL

    # PostgreSQL here trusts local connections: the password is accepted and ignored, as a real one would be used.
    secret = sa.make_url(PG_URL).set(password="hunter2").render_as_string(hide_password=False)  # noqa: S106 (a planted test value)
    log = generate_retail(RetailConfig(start=dt.date(2024, 3, 1), end=dt.date(2024, 4, 30), customers=100))
    write_frame(secret, "purchases", log, db_schema=pg_schema)
    out = tmp_path / "churn.yaml"
    assert churn(["init", "--url", secret, "--table", "purchases", "--schema", pg_schema, "--out", str(out), "--horizon-days", "14"]) == 0
    assert "hunter2" not in out.read_text() and "hunter2" not in capsys.readouterr().out
    assert load_settings({"CHURN_SETTINGS_FILE": str(out)}).source.url is None


def test_churn_init_names_what_it_could_not_find(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("create table t (who text, what text)"))
        conn.execute(sa.text("insert into t values ('a', 'b')"))
    assert churn(["init", "--url", url, "--table", "t", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "no column found for ['customer_id', 'ts', 'amount']" in capsys.readouterr().err


class LossyWarehouse(SqlWarehouse):
    """A reader with a bug: it drops the last row it fetched. The conservation check must catch it."""

    def read_transactions(self, days, source=None) -> DayRead:
        read = super().read_transactions(days, source)
        return dataclasses.replace(read, frame=read.frame.head(read.frame.height - 1))


def test_the_source_count_check_fails_when_a_row_is_lost(tmp_path: Path) -> None:
    from ml_assets.definitions import ALL_ASSETS

    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    write_frame(url, "purchases", generate_retail(RetailConfig(start=dt.date(2025, 1, 1), end=dt.date(2025, 1, 31), customers=400)))
    settings = {"table": "purchases", "column_map": {"customer_id": "customer_no", "ts": "purchase_date"}}
    day = "2025-01-20"
    keys = ["raw_transactions", "validated_transactions", "quarantined_transactions"]
    honest = dg.materialize(ALL_ASSETS, selection=keys, partition_key=day, resources=resources_for(tmp_path / "a", url, **settings))
    assert honest.success
    lossy = {**resources_for(tmp_path / "b", url, **settings), "warehouse": LossyWarehouse(url=url, **settings)}
    result = dg.materialize(ALL_ASSETS, selection=keys, partition_key=day, resources=lossy, raise_on_error=False)
    assert not result.success
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "source_rows_accounted")
    md = {k: v.value for k, v in check.metadata.items()}
    assert check.passed is False and md["source_rows_in_window"] == md["rows_kept"] + md["rows_of_neighbouring_days"] + 1
    assert "the source counts" in check.description


def test_no_file_means_the_defaults_and_the_demo_never_touches_a_users_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load_settings({"CHURN_SETTINGS_FILE": "none"}).source.table == "transactions"
    monkeypatch.setenv("CHURN_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'mine.sqlite'}")
    assert churn(["demo"]) == 2
    assert not (tmp_path / "mine.sqlite").exists()


def test_the_settings_table_of_the_guide_is_the_settings_object() -> None:
    """The guides list every setting once, with its environment variable and its default: the problem in
    docs/data-contract.md, the deployment section in docs/own-database.md, the compute engine in docs/spark.md."""
    import json
    import re
    from pathlib import Path

    from lib.settings import ENV, Settings

    docs = Path(__file__).resolve().parents[2] / "docs"
    found = [
        (m.group(1), (m.group(2), m.group(3)))
        for name in ("data-contract.md", "own-database.md", "spark.md")
        for m in re.finditer(
            r"^\| `([a-z0-9_.]+)` \| `(CHURN_[A-Z0-9_]+)`(?: \(JSON\))? \| ([^|]+) \|", (docs / name).read_text(), re.MULTILINE
        )
    ]
    rows = dict(found)
    assert len(rows) == len(found), "a setting is listed twice"
    assert {dotted: var for var, dotted in ENV.items()} == {k: v[0] for k, v in rows.items()}
    defaults = Settings().model_dump(mode="json")
    for dotted, (_, shown) in rows.items():
        value = defaults
        for part in dotted.split("."):
            value = value[part]
        shown = shown.strip()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert shown.strip("`") and float(shown.strip("`")) == value, (dotted, shown, value)
        elif isinstance(value, (list, dict, bool)) and value not in ({}, []):
            assert shown == f"`{json.dumps(value)}`", (dotted, shown, value)  # as in YAML and the environment: true, false
        elif value is None or value in ({}, []):
            assert shown in ("none", "all", "`{}`", "`[]`", "the embedded SQLite demo warehouse"), (dotted, shown)
        else:
            assert shown == f"`{value}`" or dotted == "source.url", (dotted, shown, value)


def test_secrets_come_from_the_environment_only_and_never_print(tmp_path: Path) -> None:
    from lib.settings import SettingsError, load_settings
    from resources import build_registry, build_resources

    leaky = tmp_path / "churn.yaml"
    leaky.write_text("deployment:\n  registry_url: postgresql://me:hunter2@db/registry\n")
    with pytest.raises(SettingsError, match="deployment.registry_url.*CHURN_REGISTRY_URL") as refused:
        load_settings({"CHURN_SETTINGS_FILE": str(leaky)})
    assert "hunter2" not in str(refused.value)
    env = {"CHURN_SETTINGS_FILE": "none", "CHURN_REGISTRY_URL": "postgresql://me:hunter2@db/registry", "CHURN_DATA_DIR": str(tmp_path)}
    loaded = load_settings(env)
    assert "hunter2" not in repr(loaded) and "hunter2" not in str(loaded.model_dump())
    # Inside Dagster the URL is an EnvVar (resolved at run time, never in the UI); the CLI resolves it.
    assert isinstance(build_resources(loaded)["registry"].url, dg.EnvVar)
    assert build_registry(resolve_env=True, settings=loaded).url.endswith("hunter2@db/registry")
    with pytest.raises(SettingsError, match="CHURN_SERVICE_MAX_BATCH") as bad:
        load_settings({**env, "CHURN_SERVICE_MAX_BATCH": "0", "CHURN_FEAST_REDIS_URL": ":hunter2@redis:6379"})
    assert "hunter2" not in str(bad.value)


def test_nothing_but_the_settings_module_reads_the_environment() -> None:
    """The settings object is the one description of the configuration: no other production module reads os.environ."""
    import ast

    root = Path(__file__).resolve().parents[2]
    readers = []
    for package in ("lib", "ml_assets", "resources", "sensors", "feature_repo"):
        for path in (root / package).rglob("*.py"):
            if path.name == "settings.py" and path.parent.name == "lib":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and getattr(node.value, "id", "") == "os":
                    readers.append(f"{path.relative_to(root)}:{path.read_text().splitlines()[node.lineno - 1].strip()}")
    # Libraries' own variables (CUDA, pyspark, the MLflow client) are set through lib.settings.set_library_defaults.
    assert readers == [], readers
