"""The bulk SQLite online load (resources/feast_engine.py) against Feast's own writer, on the same lake.

The bulk engine must leave the online store exactly as Feast's writer does:
every column of every row (key bytes, value message, text, timestamps, their
SQLite types), for awkward values and ids, a second day upserted over the
first and a customer who drops out of the newer snapshot; and Feast's own
read path must serve it.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from lib.feature_store import BULK_ENGINE, repo_config
from lib.features import FEATURE_COLUMNS, cutoff_for
from ml_assets_tests.conftest import feature_store_for

DAYS = [dt.date(2025, 3, 1), dt.date(2025, 3, 2)]
# Ids as real tables have them: numeric, UUID, non-ASCII, long, one with quotes.
IDS = ["1", "42", "0042", "7f9c2ba4-e88f-4a1b-9d3c-2f1e0c9a8b7d", "Zoë-Ålborg", "客户-17", "x" * 80, 'O\'Brien "quoted"']
# Values whose bytes or text are easy to get wrong: nulls, NaN, infinities, signed zero, sub-1e-4 and huge magnitudes.
AWKWARD = [
    None,
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    0.0,
    1e-4,
    9.99e-5,
    1e-5,
    3.2e-7,
    5e-324,
    1e16,
    1.7976931348623157e308,
    -2.5,
    3.0,
]
TABLE = "churn_customer_features"
ROWS = f"""SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, typeof(event_ts), created_ts, typeof(created_ts)
FROM {TABLE} ORDER BY entity_key, feature_name"""  # noqa: S608 (a constant)


def _snapshot(day: dt.date, ids: list[str], shift: int) -> pl.DataFrame:
    n = len(ids)
    columns = {c: [AWKWARD[(i + j + shift) % len(AWKWARD)] for i in range(n)] for j, c in enumerate(FEATURE_COLUMNS)}
    columns[FEATURE_COLUMNS[0]] = [float(i) / 7 + shift for i in range(n)]  # ordinary values too
    return pl.DataFrame(
        {
            "customer_id": ids,
            "snapshot_date": [day] * n,
            **columns,
            "feature_timestamp": [cutoff_for(day)] * n,
            "last_tx_ts": [cutoff_for(day)] * n,
        },
        schema_overrides={
            "feature_timestamp": pl.Datetime("us"),
            "last_tx_ts": pl.Datetime("us"),
            **dict.fromkeys(FEATURE_COLUMNS, pl.Float64),
        },
    )


def _lake(root: Path) -> str:
    folder = root / "lake" / "customer_features"
    folder.mkdir(parents=True)
    many = IDS + [f"C{i:05d}" for i in range(300)]
    _snapshot(DAYS[0], many, 0).write_parquet(folder / f"{DAYS[0]}.parquet")
    # The newer day: one customer dropped out (keeps the older row in both writers), one new.
    _snapshot(DAYS[1], [*many[1:], "new-customer"], 3).write_parquet(folder / f"{DAYS[1]}.parquet")
    return str(root / "lake")


def _load(root: Path, lake: str, writer: str, batch_rows: int = 25_000, progress=None):
    store = feature_store_for(root / writer, lake, online_writer=writer, online_write_batch_rows=batch_rows)
    store.apply()
    for day in DAYS:
        at = cutoff_for(day)
        store.materialize(at - dt.timedelta(hours=12), at + dt.timedelta(hours=12), progress)
    with sqlite3.connect(store.online_path) as connection:
        rows = connection.execute(ROWS).fetchall()
    return store, rows


def test_the_bulk_engine_stores_feasts_rows_byte_for_byte_and_feast_serves_them(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    lines: list[str] = []
    feast_store, feast_rows = _load(tmp_path, lake, "feast")
    bulk_store, bulk_rows = _load(tmp_path, lake, "bulk", batch_rows=64, progress=lines.append)
    assert bulk_store.store().config.batch_engine_config == {"type": BULK_ENGINE}
    assert feast_store.store().config.batch_engine_config == "local"
    assert len(feast_rows) == (len(IDS) + 300 + 1) * len(FEATURE_COLUMNS)
    assert bulk_rows == feast_rows
    # Feast's online read of both stores: the same values, including the customer who dropped out.
    ids = [*IDS, "new-customer", "C00299"]
    assert bulk_store.online(ids).equals(feast_store.online(ids))
    # The last batch always reports (customers written of the total), in the form the CLI shows as a step's progress.
    from ml_assets.cli.progress import TICKER_LINE

    assert lines and lines[-1].startswith("online_features: 308 of 308 customers") and TICKER_LINE.match(lines[-1])


def test_a_row_feast_would_store_differently_sends_the_load_through_feasts_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A format change (a Feast upgrade) must not store wrong bytes: the sample check finds it, and Feast's writer loads the view."""
    from lib import feast_rows

    lake = _lake(tmp_path)
    _, expected = _load(tmp_path, lake, "feast")
    monkeypatch.setattr(feast_rows, "double_texts", lambda values: pl.Series([f"{v:.3f}" for v in values]))
    with caplog.at_level(logging.WARNING, logger="churn.feast_engine"):
        _, rows = _load(tmp_path, lake, "bulk")
    assert rows == expected
    assert "through Feast's own writer" in caplog.text and "is stored differently by Feast" in caplog.text


def test_the_bulk_engine_is_configured_for_sqlite_only() -> None:
    from resources.feast_engine import BulkSqliteEngineConfig

    common = {"registry_path": "r.db", "online_path": "o.db", "offline_store": "duckdb"}
    assert repo_config(online_store="sqlite", online_writer="bulk", **common)["batch_engine"] == {"type": BULK_ENGINE}
    assert "batch_engine" not in repo_config(online_store="sqlite", online_writer="feast", **common)
    assert "batch_engine" not in repo_config(online_store="redis", redis_url="127.0.0.1:6379", online_writer="bulk", **common)
    assert BulkSqliteEngineConfig().type == BULK_ENGINE
    with pytest.raises(ValueError, match="online_writer"):
        repo_config(online_store="sqlite", online_writer="fast", **common)
