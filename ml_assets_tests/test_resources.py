"""Warehouse, lake and artifact store against real SQLite files and folders."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from resources import ArtifactIntegrityError, ArtifactStore, Lake, MissingPartitionError, SourceSchemaError, SqlWarehouse


def test_warehouse_reads_exactly_the_window(tmp_path: Path, small_transactions: pl.DataFrame) -> None:
    wh = SqlWarehouse(url=f"sqlite:///{tmp_path / 'w.sqlite'}")
    wh.create_table()
    assert wh.append(small_transactions) == small_transactions.height
    day = wh.read_transactions(dt.datetime(2025, 1, 5), dt.datetime(2025, 1, 6))
    expected = small_transactions.filter(pl.col("ts").dt.date() == dt.date(2025, 1, 5))
    assert day.height == expected.height > 0
    assert day["_type_errors"].is_null().all()
    assert day.drop("_type_errors").sort("transaction_id").equals(expected.sort("transaction_id"))


def test_warehouse_maps_a_users_own_column_names(tmp_path: Path, small_transactions: pl.DataFrame) -> None:
    mapping = {"ts": "created_at", "customer_id": "client", "amount": "total"}
    wh = SqlWarehouse(url=f"sqlite:///{tmp_path / 'w.sqlite'}", table="sales", column_map=mapping)
    wh.create_table()
    wh.append(small_transactions)
    with sa.create_engine(wh.url).connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("sales")}
    assert {"created_at", "client", "total"} <= cols and "ts" not in cols
    frame = wh.read_transactions(dt.datetime(2025, 1, 1), dt.datetime(2025, 2, 1))
    assert frame.columns[:4] == ["transaction_id", "customer_id", "ts", "amount"]
    assert frame.height == small_transactions.height


def test_missing_source_column_names_the_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("create table transactions (transaction_id integer, customer_id text, ts timestamp, amount real)"))
    with pytest.raises(SourceSchemaError, match="quantity"):
        SqlWarehouse(url=url).read_transactions(dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 2))


def test_hostile_identifiers_are_refused_with_the_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    for settings, field in [
        ({"table": 'tx"; drop table keep; --'}, "table"),
        ({"db_schema": "public; drop"}, "db_schema"),
        ({"column_map": {"ts": "ts) or (1=1"}}, "column for 'ts'"),
        ({"column_map": {"price": "amount"}}, "unknown canonical column"),
        ({"column_map": {"ts": "x", "amount": "x"}}, "same source column"),
    ]:
        with pytest.raises(ValueError, match=re.escape(field)):
            SqlWarehouse(url=url, **settings)


def test_reserved_word_identifiers_are_quoted(tmp_path: Path, small_transactions: pl.DataFrame) -> None:
    # Plain identifiers pass validation even when they are SQL keywords; the dialect quotes them.
    wh = SqlWarehouse(url=f"sqlite:///{tmp_path / 'w.sqlite'}", table="select", column_map={"ts": "order", "amount": "from"})
    wh.create_table()
    wh.append(small_transactions.head(10))
    assert wh.read_transactions(dt.datetime(2025, 1, 1), dt.datetime(2025, 2, 1)).height == 10


def test_artifact_store_refuses_a_tampered_file(tmp_path: Path) -> None:
    store = ArtifactStore(root=str(tmp_path))
    ref = store.put("models", b"tree\nversion=v4\n", ".txt")
    assert store.get(ref.uri, ref.sha256) == b"tree\nversion=v4\n"
    assert store.put("models", b"tree\nversion=v4\n", ".txt") == ref  # idempotent
    Path(ref.uri).write_bytes(b"tree\nversion=v4\nmalicious")
    with pytest.raises(ArtifactIntegrityError, match="expected"):
        store.get(ref.uri, ref.sha256)
    Path(ref.uri).unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        store.get(ref.uri, ref.sha256)


def test_lake_names_missing_partitions(tmp_path: Path) -> None:
    lake = Lake(root=str(tmp_path))
    key = dg.AssetKey("customer_features")
    lake.write_parquet(lake.path_for(key, "2025-01-01", ".parquet"), pl.DataFrame({"a": [1]}))
    assert lake.read_partitions(key, ["2025-01-01"]).height == 1
    with pytest.raises(MissingPartitionError, match="2025-01-02"):
        lake.read_partitions(key, ["2025-01-01", "2025-01-02"])
    assert lake.existing_partitions(key) == ["2025-01-01"]
    assert not list(tmp_path.rglob("*.tmp"))
