"""The Feast feature store on real stores: point-in-time joins, online vs offline equality, idempotent apply, generated config.

Each test builds a small lake of customer_features partitions (the same
Parquet layout the asset writes) and a Feast repository in a temporary folder.
Redis tests run against 127.0.0.1:6379 (running here and in CI) under their
own Feast project name, and clean up after themselves.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest

from lib.feature_store import FEATURE_VIEW
from lib.features import FEATURE_COLUMNS, cutoff_for
from ml_assets_tests.conftest import feature_store_for, redis_up

DAYS = [dt.date(2025, 3, 1) + dt.timedelta(days=i) for i in range(3)]
CUSTOMERS = [f"C{i:08d}" for i in range(1, 41)]


def _snapshot(day: dt.date, customers: list[str], offset: float = 0.0) -> pl.DataFrame:
    """A customer_features partition: every feature = customer number + day number / 100 + offset (so any mix-up shows)."""
    base = [int(c[1:]) + (day - DAYS[0]).days / 100 + offset for c in customers]
    return pl.DataFrame(
        {
            "customer_id": customers,
            "snapshot_date": [day] * len(customers),
            **{col: [b + i / 1000 for b in base] for i, col in enumerate(FEATURE_COLUMNS)},
            "feature_timestamp": [cutoff_for(day)] * len(customers),
            "last_tx_ts": [cutoff_for(day) - dt.timedelta(hours=3)] * len(customers),
        },
        schema_overrides={"feature_timestamp": pl.Datetime("us"), "last_tx_ts": pl.Datetime("us")},
    )


def _lake(root: Path, days: list[dt.date] = DAYS) -> str:
    """A lake under `root` holding a customer_features partition for each of `days`; returns its root."""
    folder = root / "lake" / "customer_features"
    folder.mkdir(parents=True)
    for day in days:
        _snapshot(day, CUSTOMERS).write_parquet(folder / f"{day.isoformat()}.parquet")
    return str(root / "lake")


@pytest.fixture
def store(tmp_path: Path):
    fs = feature_store_for(tmp_path, _lake(tmp_path))
    fs.apply()
    return fs


def test_point_in_time_join_never_sees_a_later_value(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    folder = Path(lake) / "customer_features"
    snapshot = DAYS[1]
    at = cutoff_for(snapshot)
    # Planted rows for a customer absent from the daily snapshots: one value
    # one second before the snapshot instant, a different one a second after.
    planted = "C99999999"
    before = _snapshot(snapshot, [planted], offset=0.25).with_columns(
        pl.lit(at - dt.timedelta(seconds=1)).cast(pl.Datetime("us")).alias("feature_timestamp")
    )
    after = _snapshot(snapshot, [planted], offset=0.75).with_columns(
        pl.lit(at + dt.timedelta(seconds=1)).cast(pl.Datetime("us")).alias("feature_timestamp")
    )
    before.write_parquet(folder / "planted-before.parquet")
    after.write_parquet(folder / "planted-after.parquet")
    fs = feature_store_for(tmp_path, lake)
    fs.apply()

    entities = pl.DataFrame(
        {"customer_id": [planted, CUSTOMERS[0], CUSTOMERS[0]], "event_timestamp": [at, at, cutoff_for(DAYS[0])], "label": [1, 0, 1]},
        schema_overrides={"event_timestamp": pl.Datetime("us")},
    )
    got = fs.historical(entities).sort("customer_id", "event_timestamp")
    assert got.height == 3
    assert got["label"].to_list() == [1, 0, 1]  # C00000001 day 0, day 1, then the planted customer: labels carried through
    planted_row = got.filter(pl.col("customer_id") == planted)
    assert planted_row["recency_days"].item() == before["recency_days"].item()  # the value one second before
    assert planted_row["recency_days"].item() != after["recency_days"].item()  # never the one a second after
    # A regular customer on two snapshot instants gets each day's own values, not the newest.
    regular = got.filter(pl.col("customer_id") == CUSTOMERS[0]).sort("event_timestamp")
    assert regular["spend_30d"].to_list() == [_snapshot(d, CUSTOMERS[:1])["spend_30d"].item() for d in DAYS[:2]]


def test_a_value_older_than_the_ttl_is_not_served_offline(store) -> None:
    # Two days after the last snapshot the 1-day TTL has passed: no stale features.
    late = cutoff_for(DAYS[-1]) + dt.timedelta(days=2)
    got = store.historical(
        pl.DataFrame({"customer_id": [CUSTOMERS[0]], "event_timestamp": [late]}, schema_overrides={"event_timestamp": pl.Datetime("us")})
    )
    assert got["recency_days"].to_list() == [None]


def _online_equals_offline(fs) -> None:
    from ml_assets.assets.feature_store import skew

    at = cutoff_for(DAYS[-1])
    fs.materialize(at - dt.timedelta(hours=12), at + dt.timedelta(hours=12))
    entities = pl.DataFrame(
        {"customer_id": CUSTOMERS, "feature_timestamp": [at] * len(CUSTOMERS)}, schema_overrides={"feature_timestamp": pl.Datetime("us")}
    )
    assert skew(fs, entities).is_empty()
    online = fs.online(CUSTOMERS[:2] + ["C00000000-unknown"])
    assert online["recency_days"].to_list()[:2] == pytest.approx(_snapshot(DAYS[-1], CUSTOMERS[:2])["recency_days"].to_list())
    assert online["recency_days"].to_list()[2] is None  # unknown customer: nulls, not an error

    # The check can fail: a value written behind Feast's back (newer timestamp,
    # different number) for one customer is reported, value and timestamp.
    tampered = _snapshot(DAYS[-1], CUSTOMERS[:1], offset=0.5).with_columns(
        pl.lit(at + dt.timedelta(seconds=1)).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("feature_timestamp")
    )
    fs.store().write_to_online_store(FEATURE_VIEW, df=tampered.to_pandas())
    mismatches = skew(fs, entities)
    assert set(mismatches["customer_id"]) == {CUSTOMERS[0]}
    assert set(mismatches["feature"]) == {*FEATURE_COLUMNS, "event_timestamp"}


def _erase_one(fs) -> None:
    """`churn erase`'s online part: one customer gone from the store, everyone else still served."""
    gone, kept = CUSTOMERS[1], CUSTOMERS[2]
    assert fs.erase_online(gone) > 0
    online = fs.online([gone, kept])
    assert online["recency_days"].to_list()[0] is None and online["recency_days"].to_list()[1] is not None
    assert fs.erase_online(gone) == 0


def test_online_store_serves_what_the_offline_store_holds_sqlite(store) -> None:
    _online_equals_offline(store)
    _erase_one(store)


@pytest.mark.skipif(not redis_up(), reason="Redis is not running at 127.0.0.1:6379")
def test_online_store_serves_what_the_offline_store_holds_redis(tmp_path: Path) -> None:
    project = f"churn_test_{uuid.uuid4().hex[:8]}"
    fs = feature_store_for(tmp_path, _lake(tmp_path), online_store="redis", redis_url="127.0.0.1:6379", project=project)
    fs.apply()
    try:
        assert fs.store().config.online_store.type == "redis"
        _online_equals_offline(fs)
        _erase_one(fs)
    finally:
        fs.store().teardown()  # drops this project's keys from Redis


def test_reapplying_is_idempotent_and_a_changed_definition_shows_in_the_registry(store) -> None:
    first = store.apply()
    again = store.apply()
    assert first == again
    assert list(first["feature_views"]) == [FEATURE_VIEW]
    assert first["feature_views"][FEATURE_VIEW]["features"] == list(FEATURE_COLUMNS)
    assert first["feature_services"] == ["churn_model"] and first["entities"] == ["customer"]

    changed = store.apply(columns=FEATURE_COLUMNS[:-1])
    assert changed["feature_views"][FEATURE_VIEW]["features"] == list(FEATURE_COLUMNS[:-1])
    # A new resource reading the same registry file sees the change too.
    reread = feature_store_for(Path(store.repo_path).parent, store.lake_root).summary()
    assert reread["feature_views"][FEATURE_VIEW]["features"] == list(FEATURE_COLUMNS[:-1])


def test_generated_config_keeps_secrets_as_placeholders(tmp_path: Path) -> None:
    secret_registry = "postgresql+psycopg://churn:s3cret@127.0.0.1:5432/test"  # noqa: S105 (a planted fake secret the test looks for)
    fs = feature_store_for(
        tmp_path, str(tmp_path / "lake"), online_store="redis", redis_url="127.0.0.1:6379,password=s3cret", registry_url=secret_registry
    )
    text = fs.write_config().read_text()
    assert "s3cret" not in text
    assert "${CHURN_FEAST_REDIS_URL}" in text and "${CHURN_FEAST_REGISTRY_URL}" in text
    runtime = fs.config_dict()
    assert runtime["registry"]["path"] == secret_registry
    assert runtime["online_store"]["connection_string"] == "127.0.0.1:6379,password=s3cret,socket_timeout=10,socket_connect_timeout=10"
    assert "${CHURN_FEAST_REDIS_URL},socket_timeout=10" in text  # a Redis that stops answering cannot hold a reader forever
    with pytest.raises(ValueError, match="sqlite or redis"):
        feature_store_for(tmp_path, "x", online_store="memcached").config_dict()


def test_feast_cli_lists_the_registered_views(store) -> None:
    feast = Path(sys.executable).with_name("feast")
    out = subprocess.run(
        [str(feast), "-c", store.repo_path, "feature-views", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert FEATURE_VIEW in out.stdout


def test_a_registry_rewritten_in_place_under_a_reader_is_read_again(store) -> None:
    """Feast rewrites its file registry in place (truncate, then write) on every apply: a load or a lookup that reads it
    at that moment finds it empty. Both read it again and go on once the writer is done."""
    import threading

    from lib.feature_store import FEATURE_SERVICE

    registry = Path(store.registry_path)
    whole = registry.read_bytes()
    at = cutoff_for(DAYS[-1])
    for call in (store.feature_service, lambda: store.materialize(at - dt.timedelta(hours=12), at + dt.timedelta(hours=12))):
        store._service = None
        registry.write_bytes(b"")  # what a reader sees between the truncate and the write
        store.store().refresh_registry()
        writer = threading.Timer(0.3, registry.write_bytes, args=(whole,))
        writer.start()
        call()
        writer.join()
    assert store.feature_service().name == FEATURE_SERVICE
    assert store.online(CUSTOMERS[:1])["recency_days"].to_list() == pytest.approx(
        _snapshot(DAYS[-1], CUSTOMERS[:1])["recency_days"].to_list()
    )


@pytest.mark.postgres
@pytest.mark.xdist_group("postgres")
def test_sql_registry_on_postgresql(tmp_path: Path, pg_schema: str) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{pg_schema}"
    fs = feature_store_for(tmp_path, _lake(tmp_path), registry_url=url)
    summary = fs.apply()
    assert summary["feature_views"][FEATURE_VIEW]["features"] == list(FEATURE_COLUMNS)
    assert feature_store_for(tmp_path / "other", fs.lake_root, registry_url=url).summary() == summary


def test_a_big_read_in_chunks_returns_what_one_read_returns(store) -> None:
    """historical() splits big entity frames (bounded memory): every row still gets its own point-in-time values."""
    entities = pl.DataFrame(
        {
            "customer_id": CUSTOMERS * len(DAYS),
            "event_timestamp": [cutoff_for(d) for d in DAYS for _ in CUSTOMERS],
            "row": list(range(len(CUSTOMERS) * len(DAYS))),
        },
        schema_overrides={"event_timestamp": pl.Datetime("us")},
    ).sample(fraction=1.0, shuffle=True, seed=3)
    whole = store.historical(entities).sort("row")
    chunked = store.model_copy(update={"historical_chunk_rows": 7}).historical(entities).sort("row")
    assert chunked.height == whole.height == entities.height
    assert chunked.select("row", "customer_id", *FEATURE_COLUMNS).equals(whole.select("row", "customer_id", *FEATURE_COLUMNS))
    expected = pl.concat([_snapshot(d, CUSTOMERS) for d in DAYS])["spend_30d"].sort().to_list()
    assert chunked["spend_30d"].sort().to_list() == expected


def test_a_materialization_in_batches_writes_what_one_batch_writes(tmp_path: Path) -> None:
    """online_write_batch_rows bounds memory only: batches of 7 rows leave the online store as one batch does."""
    lake = _lake(tmp_path)
    at = cutoff_for(DAYS[-1])
    served = {}
    for rows in (7, 10_000):
        fs = feature_store_for(tmp_path / f"batch{rows}", lake, online_write_batch_rows=rows)
        fs.apply()
        assert fs.store().config.materialization_config.online_write_batch_size == rows
        fs.materialize(at - dt.timedelta(hours=12), at + dt.timedelta(hours=12))
        served[rows] = fs.online(CUSTOMERS)
    assert served[7].height == len(CUSTOMERS)
    assert served[7].select(FEATURE_COLUMNS).null_count().sum_horizontal().item() == 0  # every customer of every batch written
    assert served[7].equals(served[10_000])
    assert served[7]["spend_30d"].to_list() == pytest.approx(_snapshot(DAYS[-1], CUSTOMERS)["spend_30d"].to_list())


LOADER = """
import datetime as dt, json, sys
from ml_assets.assets.feature_store import load_online_snapshot
from ml_assets_tests.conftest import feature_store_for
from pathlib import Path
from resources import Lake
root, lake, days, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), json.loads(sys.argv[4])
fs = feature_store_for(root, lake, **overrides)
skewed = 0
for day in days:  # what online_features does, once per day
    skewed += not load_online_snapshot(fs, Lake(root=lake), [dt.date.fromisoformat(day)], skew_sample=40, seed=1).mismatches.is_empty()
print(skewed)
"""


def _concurrent_loads(root: Path, **overrides: object) -> None:
    """Two processes load interleaved days (0, 2, 4, ... and 1, 3, 5, ...), each checking its load as online_features does.

    Under the writer lock no check sees the other process's day, and the
    store ends on the newest day whoever loads last. (Without the lock,
    checks saw the other's day in most rounds on SQLite and in some on Redis.)
    """
    import json

    days = [DAYS[0] + dt.timedelta(days=i) for i in range(12)]
    lake = _lake(root, days)
    fs = feature_store_for(root, lake, **overrides)
    fs.apply()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", LOADER, str(root), lake, ",".join(d.isoformat() for d in days[first::2]), json.dumps(overrides)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for first in (0, 1)
    ]
    outs = [c.communicate(timeout=300)[0] for c in children]
    assert [c.returncode for c in children] == [0, 0]
    assert [int(o.strip().splitlines()[-1]) for o in outs] == [0, 0]  # skewed checks per process (Feast prints above)
    assert fs.served_snapshot() == days[-1]
    online = fs.online(CUSTOMERS)
    assert online["spend_30d"].to_list() == pytest.approx(_snapshot(days[-1], CUSTOMERS)["spend_30d"].to_list())


def test_concurrent_loads_of_different_days_never_mix_sqlite(tmp_path: Path) -> None:
    _concurrent_loads(tmp_path)


@pytest.mark.skipif(not redis_up(), reason="Redis is not running at 127.0.0.1:6379")
def test_concurrent_loads_of_different_days_never_mix_redis(tmp_path: Path) -> None:
    project = f"churn_test_{uuid.uuid4().hex[:8]}"
    overrides = {"online_store": "redis", "redis_url": "127.0.0.1:6379", "project": project}
    try:
        _concurrent_loads(tmp_path, **overrides)
    finally:
        fs = feature_store_for(tmp_path, str(tmp_path / "lake"), **overrides)
        fs.store().teardown()
        fs._redis().delete(f"{project}:churn:served_snapshot")  # noqa: SLF001 (a test cleaning up its own key)


def test_an_older_day_loaded_after_a_newer_one_keeps_the_newer_snapshot(tmp_path: Path) -> None:
    """The store's own record of what it serves wins over an instance that never saw the newer load (a second Dagster instance, a wiped one)."""
    import dagster as dg

    from ml_assets.assets.feature_store import online_features
    from resources import Lake

    lake = _lake(tmp_path)
    fs = feature_store_for(tmp_path, lake)
    fs.apply()
    resources = {"feature_store": fs, "lake": Lake(root=lake)}
    assert fs.served_snapshot() is None
    snapshots = []
    for day in (DAYS[2], DAYS[1]):  # each in a fresh instance: Dagster does not know the other load
        with dg.instance_for_test() as instance:
            result = dg.materialize([online_features], partition_key=day.isoformat(), resources=resources, instance=instance)
            assert result.success
            snapshots.append(result.asset_materializations_for_node("online_features")[0].metadata["snapshot_date"].value)
    assert snapshots == [DAYS[2].isoformat(), DAYS[2].isoformat()]
    assert fs.served_snapshot() == DAYS[2]
    assert fs.online(CUSTOMERS[:3])["spend_30d"].to_list() == pytest.approx(_snapshot(DAYS[2], CUSTOMERS[:3])["spend_30d"].to_list())


def test_a_store_serving_a_day_this_lake_lacks_fails_with_how_to_fix_it(tmp_path: Path) -> None:
    """A lake rebuilt over older dates against a store that serves a newer day: a clear error, and the store keeps its day."""
    from ml_assets.assets.feature_store import load_online_snapshot
    from resources import Lake
    from resources.feature_store import FeatureStoreError

    fs = feature_store_for(tmp_path, _lake(tmp_path))
    fs.apply()
    load_online_snapshot(fs, Lake(root=str(tmp_path / "lake")), [DAYS[2]], skew_sample=10, seed=1)
    older = _lake(tmp_path / "older", DAYS[:2])
    with pytest.raises(
        FeatureStoreError, match=rf"serves the snapshot of {DAYS[2]}, newer than {DAYS[1]}.*CHURN_FEAST_PROJECT.*delete .*online_store\.db"
    ):
        load_online_snapshot(fs, Lake(root=older), [DAYS[1]], skew_sample=10, seed=1)
    assert fs.served_snapshot() == DAYS[2]
    assert fs.online(CUSTOMERS[:2])["spend_30d"].to_list() == pytest.approx(_snapshot(DAYS[2], CUSTOMERS[:2])["spend_30d"].to_list())
