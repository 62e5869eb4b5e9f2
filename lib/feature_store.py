"""The Feast feature repository: one definition of the model's features for training, batch and online serving (Feast only).

Objects:
- entity `customer` (join key `customer_id`);
- feature view `customer_features` over the `customer_features` Parquet
  partitions in the lake, event time `feature_timestamp` (end of the snapshot
  day), every model input column in `FEATURE_COLUMNS`;
- feature service `churn_model`: what every model reads, offline and online.

`repo_config` builds the `feature_store.yaml` content from the project's
configuration; nothing in it is hand-edited. Secrets never reach the file:
a Redis connection string or an SQL registry URL is written as a `${VAR}`
placeholder that Feast expands from the environment when it loads the file.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from lib.features import FEATURE_COLUMNS

if TYPE_CHECKING:
    import feast

PROJECT = "churn"
ENTITY = "customer"
JOIN_KEY = "customer_id"
FEATURE_VIEW = "customer_features"
FEATURE_SERVICE = "churn_model"
TIMESTAMP_FIELD = "feature_timestamp"
# A snapshot is the customer's whole state at the end of a day and is replaced
# by the next day's: a value older than one day is not a fact about today.
FEATURE_TTL = dt.timedelta(days=1)
# Environment variables Feast expands in the generated feature_store.yaml.
REDIS_ENV = "CHURN_FEAST_REDIS_URL"
REGISTRY_ENV = "CHURN_FEAST_REGISTRY_URL"
# The batch engine that loads the SQLite online store column-wise (resources/feast_engine.py).
BULK_ENGINE = "resources.feast_engine.BulkSqliteEngine"
ONLINE_WRITERS = ("bulk", "feast")

FEATURE_VIEW_DESCRIPTION = "End-of-day customer snapshot (recency, frequency, spend, trends, habits); see the customer_features asset."


# Feast's DuckDB engine reads an object-store lake through fsspec under a
# protocol of this project's own ("churns3://..." for "s3://..."): DuckDB's
# own S3 support is its httpfs extension, which it downloads at run time, and a
# pod without internet access cannot; fsspec uses the lake's own driver,
# credentials and endpoint (resources/feature_store.py registers it).
OFFLINE_PROTOCOL_PREFIX = "churn"


def remote_scheme(url: str) -> str | None:
    """The object-store scheme of a URL (s3, gs, ...), or None for a local path."""
    scheme, sep, _ = url.partition("://")
    return scheme if sep and scheme not in ("file", "local") else None


def offline_url(url: str) -> str:
    """The URL under which DuckDB reads `url`: unchanged for a local path, the project's fsspec protocol otherwise."""
    scheme = remote_scheme(url)
    return f"{OFFLINE_PROTOCOL_PREFIX}{scheme}://{url.partition('://')[2]}" if scheme else url


def source_path(lake_root: str) -> str:
    """Every daily partition file of the customer_features asset, as one Parquet source."""
    return f"{offline_url(lake_root).rstrip('/')}/customer_features/*.parquet"


def definitions(lake_root: str, columns: tuple[str, ...] = FEATURE_COLUMNS) -> list[Any]:
    """The Feast objects, built from the same column list the models use (so they cannot drift apart)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    customer = Entity(name=ENTITY, join_keys=[JOIN_KEY], value_type=ValueType.STRING, description="A customer of the shop.")
    source = FileSource(
        name="customer_features_lake",
        path=source_path(lake_root),
        timestamp_field=TIMESTAMP_FIELD,
        description="Daily Parquet partitions written by the customer_features asset.",
    )
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[customer],
        ttl=FEATURE_TTL,
        schema=[Field(name=c, dtype=Float64) for c in columns],
        source=source,
        online=True,
        description=FEATURE_VIEW_DESCRIPTION,
        owner="team:data-science",
        tags={"dagster_asset": "customer_features"},
    )
    service = FeatureService(name=FEATURE_SERVICE, features=[view], description="The inputs of every churn model, in model order.")
    return [customer, source, view, service]


# Seconds a Redis read or connect may take before the client gives up: without them a Redis that stops
# answering (without closing the connection) holds a reader forever. Long enough for a big pipelined write.
REDIS_SOCKET_TIMEOUT_S = 10


def with_socket_timeouts(connection_string: str) -> str:
    """Feast's Redis connection string (`host:port,key=value,...`) with socket timeouts, unless it sets its own."""
    extra = [f"{k}={REDIS_SOCKET_TIMEOUT_S}" for k in ("socket_timeout", "socket_connect_timeout") if f"{k}=" not in connection_string]
    return ",".join([connection_string, *extra])


def repo_config(
    *,
    registry_path: str,
    online_store: str,
    online_path: str,
    offline_store: str,
    registry_url: str | None = None,
    redis_url: str | None = None,
    for_file: bool = False,
    project: str = PROJECT,
    online_write_batch_rows: int | None = None,
    online_writer: str = "feast",
) -> dict[str, Any]:
    """The feature_store.yaml mapping.

    `registry_url` (an SQLAlchemy URL) selects the SQL registry over the file
    at `registry_path`; `redis_url` is the Redis connection string. With
    `for_file=True` both are written as `${VAR}` placeholders: they may hold
    passwords, and Feast expands them from the environment when it loads the file.
    `online_write_batch_rows` bounds how many rows a materialization converts
    and writes to the online store at once (None: all in one batch).
    `online_writer` "bulk" loads a SQLite online store through the project's
    column-wise engine (the same rows as Feast's writer, about 5x faster);
    "feast" keeps Feast's own writer. A Redis store always uses Feast's.
    """
    if online_writer not in ONLINE_WRITERS:
        raise ValueError(f"online_writer must be one of {ONLINE_WRITERS}, not {online_writer!r}")
    if online_store not in ("sqlite", "redis"):
        raise ValueError(f"online_store must be sqlite or redis, not {online_store!r}")
    if offline_store not in ("dask", "duckdb"):
        raise ValueError(f"offline_store must be dask or duckdb, not {offline_store!r}")
    if online_store == "redis" and not redis_url:
        raise ValueError(f"online_store redis needs a connection string ({REDIS_ENV}), e.g. 127.0.0.1:6379")
    registry: Any = (
        {
            "registry_type": "sql",
            "path": f"${{{REGISTRY_ENV}}}" if for_file else registry_url,
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
            "serve_features_while_materializing": True,
        }
        if registry_url
        else {"registry_type": "file", "path": registry_path, "cache_ttl_seconds": 60, "serve_features_while_materializing": True}
    )
    # serve_features_while_materializing: while one run materializes the online
    # store, Feast marks the view MATERIALIZING and by default refuses every
    # read of it, offline ones included, so a retrain (training_set) or a batch
    # scoring run concurrent with another day's online_features failed. Our
    # offline reads come from the lake and do not depend on that state. Found by
    # ml_assets_tests/system/test_faults.py::test_concurrent_scoring_runs_and_a_retrain_do_not_interfere.
    online: dict[str, Any] = (
        {"type": "redis", "connection_string": with_socket_timeouts(f"${{{REDIS_ENV}}}" if for_file else str(redis_url))}
        if online_store == "redis"
        else {"type": "sqlite", "path": online_path}
    )
    config: dict[str, Any] = {
        "project": project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": offline_store},
        # Feast turns every row of a materialization into protobuf values
        # before writing; in one batch that is about 16 KB per customer (a 4.5 GB
        # peak for a 280 k-customer snapshot). Batches bound it; the values written
        # are the same.
        "materialization": {"online_write_batch_size": online_write_batch_rows},
        "entity_key_serialization_version": 3,
    }
    if online_store == "sqlite" and online_writer == "bulk":
        config["batch_engine"] = {"type": BULK_ENGINE}
    return config


def registered_summary(store: feast.FeatureStore) -> dict[str, Any]:
    """What the registry holds: feature views with their columns, services, entities."""
    views = {
        v.name: {"features": [f.name for f in v.features], "ttl_seconds": int(v.ttl.total_seconds()) if v.ttl else None}
        for v in store.list_feature_views()
    }
    return {
        "feature_views": views,
        "feature_services": sorted(s.name for s in store.list_feature_services()),
        "entities": sorted(e.name for e in store.list_entities()),
    }
