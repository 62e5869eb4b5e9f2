"""Warehouse, lake and artifact store against real SQLite files and folders."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from lib.frames import split_by_day
from resources import ArtifactIntegrityError, ArtifactStore, Lake, LakeIOManager, MissingPartitionError, SourceSchemaError, SqlWarehouse


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def test_warehouse_reads_exactly_the_window(tmp_path: Path, small_transactions: pl.DataFrame) -> None:
    wh = SqlWarehouse(url=f"sqlite:///{tmp_path / 'w.sqlite'}")
    wh.create_table()
    assert wh.append(small_transactions) == small_transactions.height
    read = wh.read_transactions([dt.date(2025, 1, 5)])
    day = read.frame
    expected = small_transactions.filter(pl.col("ts").dt.date() == dt.date(2025, 1, 5))
    # SQLite holds text: the neighbouring days are fetched too (an offset can cross midnight) and set aside, counted.
    assert day.height == expected.height > 0 and read.conserved and read.source_rows == day.height + read.other_days
    assert day["_type_errors"].is_null().all()
    assert (day["partition_date"] == dt.date(2025, 1, 5)).all()
    assert day.drop("_type_errors", "partition_date").sort("transaction_id").equals(expected.sort("transaction_id"))


def test_warehouse_maps_a_users_own_column_names(tmp_path: Path, small_transactions: pl.DataFrame) -> None:
    mapping = {"ts": "created_at", "customer_id": "client", "amount": "total"}
    wh = SqlWarehouse(url=f"sqlite:///{tmp_path / 'w.sqlite'}", table="sales", column_map=mapping)
    wh.create_table()
    wh.append(small_transactions)
    with sa.create_engine(wh.url).connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("sales")}
    assert {"created_at", "client", "total"} <= cols and "ts" not in cols
    frame = wh.read_transactions(_days(dt.date(2025, 1, 1), dt.date(2025, 1, 31))).frame
    assert frame.columns[:4] == ["transaction_id", "customer_id", "ts", "amount"]
    assert frame.height == small_transactions.height


def test_missing_source_column_names_the_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("create table transactions (transaction_id integer, customer_id text, quantity integer)"))
    with pytest.raises(SourceSchemaError, match=r"'ts'.*'amount'.*churn init"):
        SqlWarehouse(url=url).read_transactions([dt.date(2025, 1, 1)])


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
    assert wh.read_transactions(_days(dt.date(2025, 1, 1), dt.date(2025, 1, 31))).frame.height == 10


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


def test_lake_reads_the_asked_columns_each_partition_has(tmp_path: Path) -> None:
    """The state rebuild asks for quantity and channel, which a source without them never wrote: null there, no error."""
    lake = Lake(root=str(tmp_path))
    key = dg.AssetKey("validated_transactions")
    lake.write_parquet(lake.path_for(key, "2025-01-01", ".parquet"), pl.DataFrame({"customer_id": ["a"], "amount": [1.0], "note": ["x"]}))
    lake.write_parquet(
        lake.path_for(key, "2025-01-02", ".parquet"), pl.DataFrame({"customer_id": ["b"], "amount": [2.0], "channel": ["web"]})
    )
    got = lake.read_partitions(key, ["2025-01-01", "2025-01-02"], columns=["customer_id", "amount", "channel"], where_present=True)
    assert got.columns == ["customer_id", "amount", "channel"] and got["channel"].to_list() == [None, "web"]
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        lake.read_partitions(key, ["2025-01-01"], columns=["customer_id", "channel"])


def test_split_by_day_keeps_every_row_in_its_day_and_order() -> None:
    ts = [dt.datetime(2025, 1, 2, 5), dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 2, 1), dt.datetime(2025, 1, 1, 3)]
    unsorted = pl.DataFrame({"ts": ts, "x": [1, 2, 3, 4]})
    days = split_by_day(unsorted, "ts")
    assert list(days) == [dt.date(2025, 1, 1), dt.date(2025, 1, 2)]
    assert days[dt.date(2025, 1, 1)]["x"].to_list() == [2, 4] and days[dt.date(2025, 1, 2)]["x"].to_list() == [1, 3]
    in_order = pl.DataFrame({"d": [dt.date(2025, 1, 1)] * 2 + [dt.date(2025, 1, 3)], "x": [1, 2, 3]})
    assert {d: f["x"].to_list() for d, f in split_by_day(in_order, "d").items()} == {dt.date(2025, 1, 1): [1, 2], dt.date(2025, 1, 3): [3]}
    with pytest.raises(ValueError, match="1 rows have no d"):
        split_by_day(pl.DataFrame({"d": [dt.date(2025, 1, 1), None]}), "d")


def test_a_range_run_writes_each_day_with_its_rows_and_refuses_rows_outside_it(tmp_path: Path) -> None:
    # The lake's split of one frame for a range of daily partitions: a file per day, an empty one for a day
    # without rows, rows out of order still land in their day, and a row outside the range fails the run.
    days = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-05")

    @dg.asset(partitions_def=days, metadata={"partition_expr": "day"}, backfill_policy=dg.BackfillPolicy.single_run())
    def daily(context) -> pl.DataFrame:
        late = context.run.tags.get("late") == "yes"
        d = [dt.date(2025, 1, 3), dt.date(2025, 1, 1), dt.date(2025, 1, 3), dt.date(2025, 1, 4 if late else 1)]
        return pl.DataFrame({"day": d, "x": [1, 2, 3, 4]})

    io = LakeIOManager(lake=Lake(root=str(tmp_path)))
    instance = dg.DagsterInstance.ephemeral()
    ok = dg.materialize(
        [daily],
        resources={"io_manager": io},
        instance=instance,
        tags={"dagster/asset_partition_range_start": "2025-01-01", "dagster/asset_partition_range_end": "2025-01-03"},
    )
    assert ok.success
    lake = Lake(root=str(tmp_path))
    got = {p: lake.read_partitions(dg.AssetKey("daily"), [p])["x"].to_list() for p in ("2025-01-01", "2025-01-02", "2025-01-03")}
    assert got == {"2025-01-01": [2, 4], "2025-01-02": [], "2025-01-03": [1, 3]}
    bad = dg.materialize(
        [daily],
        resources={"io_manager": io},
        instance=instance,
        raise_on_error=False,
        tags={"dagster/asset_partition_range_start": "2025-01-01", "dagster/asset_partition_range_end": "2025-01-03", "late": "yes"},
    )
    assert not bad.success
    assert "2025-01-04" in str(bad.all_events)


def test_an_input_that_names_columns_reads_only_those(tmp_path: Path) -> None:
    days = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-03")
    seen: dict[str, list[str]] = {}

    @dg.asset(partitions_def=days)
    def wide() -> pl.DataFrame:
        return pl.DataFrame({"day": [dt.date(2025, 1, 1)], "key": ["c1"], "big": ["x" * 1000]})

    @dg.asset(partitions_def=days, ins={"wide": dg.AssetIn(metadata={"columns": ["day", "key"]})})
    def narrow(wide: pl.DataFrame) -> None:
        seen["columns"] = wide.columns

    io = LakeIOManager(lake=Lake(root=str(tmp_path)))
    assert dg.materialize([wide, narrow], resources={"io_manager": io}, partition_key="2025-01-01").success
    assert seen["columns"] == ["day", "key"]
