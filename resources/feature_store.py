"""The Feast feature store as a Dagster resource: offline (point-in-time) reads, the online store, the registry.

Local default: the local provider, the lake's Parquet files as the offline
store (read by DuckDB), SQLite as the online store and a file registry, all
under `.data/feast/`. Production: Redis as the online store and an SQL
registry on PostgreSQL, both given through `dg.EnvVar` (they may carry
passwords) and written to `feature_store.yaml` only as `${VAR}` placeholders.

`feast` is imported inside the methods: loading the code location must not
pay for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import dagster as dg
from pydantic import Field, PrivateAttr

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import feast
    import polars as pl


def tcp_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts connections there (used to skip or report a missing Redis, not as a health check)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _quiet_serve_while_materializing(record: logging.LogRecord) -> bool:
    # Feast warns that serve_features_while_materializing "typically has no
    # effect" on a file registry; it does take effect there (feast/infra/registry/
    # registry.py reads it), and we set it on purpose (lib/feature_store.py).
    return "serve_features_while_materializing" not in record.getMessage()


def register_offline_filesystem(lake_root: str) -> None:
    """Let Feast's DuckDB engine read an object-store lake through fsspec (see lib/feature_store.offline_url).

    Registered once per process on ibis's default DuckDB connection, the one Feast's offline store uses.
    """
    from lib.feature_store import OFFLINE_PROTOCOL_PREFIX, remote_scheme

    scheme = remote_scheme(lake_root)
    if scheme is None:
        return
    import fsspec
    import ibis

    protocol = f"{OFFLINE_PROTOCOL_PREFIX}{scheme}"
    connection = ibis.get_backend().con
    if connection.filesystem_is_registered(protocol):
        return
    driver = type(fsspec.filesystem(scheme))
    # The lake's own driver (s3fs for s3://), answering to the project's protocol name.
    alias = type(f"Offline{driver.__name__}", (driver,), {"protocol": (protocol,)})
    connection.register_filesystem(alias())


class FeatureStoreError(RuntimeError):
    """The feature store could not answer (online store down, registry unreachable, definitions not applied)."""


class FeatureStoreResource(dg.ConfigurableResource):
    """Feast, configured from the project's settings; `feature_store.yaml` is generated into `repo_path`."""

    repo_path: str = Field(description="The Feast repository folder: feature_store.yaml is written here for the feast CLI.")
    lake_root: str = Field(description="Lake root holding the customer_features Parquet partitions (the offline source).")
    registry_path: str = Field(description="File registry path (used when registry_url is not set).")
    online_path: str = Field(description="SQLite online store file (used when online_store is sqlite).")
    online_store: str = Field(default="sqlite", description="sqlite (default) or redis.")
    offline_store: str = Field(default="duckdb", description="duckdb (default) or dask: the engine reading the Parquet source.")
    redis_url: str | None = Field(default=None, description="Redis connection string, e.g. 127.0.0.1:6379 (set through an EnvVar).")
    registry_url: str | None = Field(default=None, description="SQLAlchemy URL of an SQL registry (set through an EnvVar).")
    project: str = Field(default="churn", description="Feast project name (namespace in the registry and online store).")
    historical_chunk_rows: int = Field(
        default=500_000,
        description="Entity rows per Feast point-in-time read: bigger reads (a month of daily scoring at scale) are split, "
        "which bounds memory; each row's values do not depend on the others, so the result is the same. 10 days x 280 k "
        "customers: 2 M rows a read peaked 2.2 GB above the process, 1 M 1.7 GB (5% slower), 500 k 1.2 GB (25% slower); "
        "batch scoring holds every model's scores of one read besides, so 500 k keeps a 30-day run at 10 M transactions a "
        "year under 4 GB.",
    )

    online_write_batch_rows: int = Field(
        default=25_000,
        gt=0,
        description="Rows Feast converts and writes to the online store at a time when it materializes a snapshot: "
        "bounds memory (one batch of 280 k customers peaked at 4.5 GB); the store ends up the same.",
    )
    online_writer: str = Field(
        default="bulk",
        description="bulk: a SQLite online store is loaded column-wise by resources/feast_engine.py (Feast's table and rows, "
        "about 5x faster); feast: Feast's own writer. Redis always uses Feast's.",
    )
    online_lock_wait_s: float = Field(
        default=1800.0,
        gt=0,
        description="How long a run waits for another run's online-store load to finish before failing "
        "(a load of 280 k customers takes about 100 s here).",
    )

    _store: Any = PrivateAttr(default=None)
    _service: Any = PrivateAttr(default=None)  # (FeatureService, fetched at)
    _redis_client: Any = PrivateAttr(default=None)

    # Looking the feature service up in the registry costs ~10 ms, and Feast
    # caches its online request plan per service object: reusing one object
    # turns a 20 ms online read into 1 ms. Re-read after this many seconds so
    # a re-applied definition is picked up, as Feast's own registry cache does.
    SERVICE_TTL_SECONDS: ClassVar[float] = 60.0

    def config_dict(self, for_file: bool = False) -> dict[str, Any]:
        from lib.feature_store import repo_config

        return repo_config(
            registry_path=self.registry_path,
            online_store=self.online_store,
            online_path=self.online_path,
            offline_store=self.offline_store,
            registry_url=self.registry_url,
            redis_url=self.redis_url,
            for_file=for_file,
            project=self.project,
            online_write_batch_rows=self.online_write_batch_rows,
            online_writer=self.online_writer,
        )

    def write_config(self) -> Path:
        """Write feature_store.yaml (placeholders for secrets) so `feast -c <repo_path> ...` sees this store."""
        import yaml

        path = Path(self.repo_path) / "feature_store.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "# Generated by the churn project from its configuration (resources/feature_store.py); do not edit.\n"
        text = header + yaml.safe_dump(self.config_dict(for_file=True), sort_keys=False)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    def store(self) -> feast.FeatureStore:
        if self._store is None:
            from feast import FeatureStore
            from feast.repo_config import RepoConfig

            Path(self.registry_path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.online_path).parent.mkdir(parents=True, exist_ok=True)
            logging.getLogger("feast.repo_config").addFilter(_quiet_serve_while_materializing)
            register_offline_filesystem(self.lake_root)
            self.write_config()
            config = RepoConfig(**self.config_dict(for_file=False))
            config.repo_path = Path(self.repo_path)
            self._store = FeatureStore(repo_path=self.repo_path, config=config)
        return self._store

    def definitions(self, columns: tuple[str, ...] | None = None) -> list[Any]:
        from lib.feature_store import definitions

        return definitions(self.lake_root, columns) if columns else definitions(self.lake_root)

    def apply(self, columns: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Register the definitions (idempotent); returns what the registry holds afterwards."""
        from lib.feature_store import registered_summary

        store = self.store()
        store.apply(self.definitions(columns))
        store.refresh_registry()
        self._service = None
        return registered_summary(store)

    def summary(self) -> dict[str, Any]:
        from lib.feature_store import registered_summary

        store = self.store()
        store.refresh_registry()
        return registered_summary(store)

    def feature_service(self) -> Any:
        """The model's feature service, cached (see SERVICE_TTL_SECONDS); a clear error when it was never applied."""
        from lib.feature_store import FEATURE_SERVICE

        cached = self._service
        if cached is not None and time.monotonic() - cached[1] < self.SERVICE_TTL_SECONDS:
            return cached[0]
        try:
            service = self._through_registry_rewrites(lambda: self.store().get_feature_service(FEATURE_SERVICE))
        except Exception as exc:  # noqa: BLE001 (Feast raises its own not-found type per registry backend)
            raise FeatureStoreError(
                f"feature service {FEATURE_SERVICE!r} is not registered: materialize feature_definitions first ({exc})"
            ) from exc
        self._service = (service, time.monotonic())
        return service

    def historical(self, entities: pl.DataFrame) -> pl.DataFrame:
        """Point-in-time features for (customer_id, event_timestamp) rows, through the model's feature service.

        Each row gets the newest feature values whose `feature_timestamp` is
        at or before its `event_timestamp` (and within the view's TTL); other
        columns of `entities` (labels, split) are carried through. Row order is
        not preserved by Feast: join back on the entity columns.
        """
        import polars as pl

        if entities.is_empty():
            served = [f.name for projection in self.feature_service().feature_view_projections for f in projection.features]
            return entities.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in served)
        return pl.concat([served for _, served in self.historical_chunks(entities)], how="vertical_relaxed")

    def historical_chunks(self, entities: pl.DataFrame) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        """`historical` one chunk at a time: (the chunk's entity rows, their features), `historical_chunk_rows` rows each.

        Entities are sorted by time first, so each chunk covers few snapshot
        days. A caller that reduces each chunk (scoring) holds one chunk of
        features at a time: at 8.4 M rows (30 days x 280 k customers) one read
        of everything peaked at about 10 GB.
        """
        import polars as pl

        store, service = self.store(), self.feature_service()
        for chunk in entities.sort("event_timestamp").iter_slices(max(1, self.historical_chunk_rows)):
            entity_df = chunk.with_columns(pl.col("event_timestamp").dt.replace_time_zone("UTC")).to_pandas()
            # Arrow straight into polars: the same columns, types and values as through pandas, one copy fewer.
            served = pl.DataFrame(store.get_historical_features(entity_df=entity_df, features=service).to_arrow())
            del entity_df
            yield chunk, served.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None).dt.cast_time_unit("us"))

    def materialize(self, start: dt.datetime, end: dt.datetime, progress: Callable[[str], None] | None = None) -> None:
        """Load the newest feature values with event time in [start, end] into the online store.

        `progress` receives a line at least every 10 s while the bulk SQLite
        engine writes (customers written, elapsed).
        """
        from lib.feature_store import FEATURE_VIEW

        utc = dt.UTC
        store = self.store()

        def load() -> None:
            store.materialize(start_date=start.replace(tzinfo=utc), end_date=end.replace(tzinfo=utc), feature_views=[FEATURE_VIEW])

        if self.online_store == "sqlite" and self.online_writer == "bulk":
            from resources.feast_engine import reporting

            with reporting(progress):
                self._through_registry_rewrites(load)
        else:
            self._through_registry_rewrites(load)

    def _through_registry_rewrites(self, action: Any, attempts: int = 4) -> Any:
        """Run a call that reads the registry, again after a fresh read when it found no definitions.

        Feast's file registry is rewritten in place by every apply (truncated,
        then written: feast/infra/registry/file.py), so a process that reads it
        at that moment (a scoring run while a retraining applies the same
        definitions) sees an empty or half-written registry for a few
        milliseconds. An SQL
        registry commits atomically and never gets here. Definitions that are
        really missing still fail, after about 3 s.
        """
        from feast.errors import FeatureServiceNotFoundException, FeatureViewNotFoundException
        from google.protobuf.message import DecodeError

        for attempt in range(attempts):
            try:
                return action()
            except (FeatureViewNotFoundException, FeatureServiceNotFoundException, DecodeError):
                if self.registry_url or attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
                self.store().refresh_registry()
        return None

    @contextlib.contextmanager
    def exclusive_online_writes(self) -> Iterator[None]:
        """Hold the online store's writer lock: one snapshot load (and its check) at a time, across processes and machines.

        SQLite: a file lock beside the database (the store is on this
        machine). Redis: a lock in Redis itself, so runs on different
        Kubernetes nodes exclude each other. Dagster's pool `feast_online`
        queues such runs too, but its slot claim is not atomic across
        processes (two claims at the same instant both won in 3 of 14 tries
        on SQLite instance storage, 5 of 24 on PostgreSQL:
        benchmarks/probe_pool_claims.py), so correctness rests on this lock.
        """
        from lib.locks import LockLost, LockTimeout, file_lock, redis_lock

        lock: contextlib.AbstractContextManager[Any]
        if self.online_store == "redis":
            lock = redis_lock(self._redis(), f"{self.project}:churn:online_writer", wait_s=self.online_lock_wait_s)
        else:
            lock = file_lock(f"{self.online_path}.lock", wait_s=self.online_lock_wait_s)
        try:
            with lock:
                yield
        except LockLost as exc:
            raise FeatureStoreError(
                f"the online store's writer lock was lost during the load, which may have overlapped another: {exc}"
            ) from exc
        except LockTimeout as exc:
            raise FeatureStoreError(f"another run is still loading the online store: {exc}") from exc

    def served_snapshot(self) -> dt.date | None:
        """The snapshot day the online store holds, as recorded by the last load (None: never loaded or loaded before this was recorded)."""
        if self.online_store == "redis":
            value = self._redis().get(self._snapshot_key)
            return dt.date.fromisoformat(value.decode()) if value else None
        with self._snapshot_db() as conn:
            row = conn.execute("SELECT day FROM churn_served_snapshot WHERE project = ?", (self.project,)).fetchone()
        return dt.date.fromisoformat(row[0]) if row else None

    def record_served_snapshot(self, day: dt.date) -> None:
        """Record which snapshot day the online store now holds; call it under `exclusive_online_writes`, after the load."""
        if self.online_store == "redis":
            self._redis().set(self._snapshot_key, day.isoformat())
            return
        with self._snapshot_db() as conn:
            conn.execute(
                "INSERT INTO churn_served_snapshot (project, day) VALUES (?, ?) ON CONFLICT(project) DO UPDATE SET day = excluded.day",
                (self.project, day.isoformat()),
            )

    def clear_hint(self) -> str:
        """How a user empties this online store, record included (shown in errors)."""
        if self.online_store == "redis":
            return f"`feast -c {self.repo_path} teardown`, then `redis-cli DEL {self._snapshot_key}`"
        return f"delete {self.online_path}"

    @property
    def _snapshot_key(self) -> str:
        return f"{self.project}:churn:served_snapshot"

    @contextlib.contextmanager
    def _snapshot_db(self) -> Iterator[sqlite3.Connection]:
        # The record lives in the online database itself, in a table of ours
        # that Feast does not touch: deleting the store deletes the record with it.
        Path(self.online_path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.online_path, timeout=60)
        try:
            with conn:
                conn.execute("CREATE TABLE IF NOT EXISTS churn_served_snapshot (project TEXT PRIMARY KEY, day TEXT NOT NULL)")
                yield conn
        finally:
            conn.close()

    def _redis(self) -> Any:
        # The client Feast itself builds from the connection string (plain or
        # cluster, password, ssl), so the lock and the record sit where the features do.
        if self._redis_client is None:
            from feast.infra.online_stores.redis import RedisOnlineStore

            self._redis_client = RedisOnlineStore()._get_client(self.store().config.online_store)  # noqa: SLF001 (Feast's own client factory)
        return self._redis_client

    def erase_online(self, customer_id: str) -> int:
        """Delete one customer's features from the online store (every feature view); returns the rows or keys removed.

        Feast has no per-entity delete, so this removes what Feast wrote for the
        entity: the Redis hash under its serialized key, or its rows in each
        view's SQLite table. Under the writer lock: a load running alongside
        cannot write the customer back between the read and the delete.
        """
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import _redis_key, compute_table_id
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        from lib.feature_store import JOIN_KEY

        store = self.store()
        version = store.config.entity_key_serialization_version
        key = EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=customer_id)])
        with self.exclusive_online_writes():
            if self.online_store == "redis":
                return int(self._redis().delete(_redis_key(store.project, key, entity_key_serialization_version=version)))
            removed = 0
            with self._snapshot_db() as conn:
                for view in store.list_feature_views():
                    table = compute_table_id(store.project, view)
                    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
                    if exists:
                        quoted = '"' + table.replace('"', '""') + '"'
                        removed += conn.execute(
                            f"DELETE FROM {quoted} WHERE entity_key = ?",  # noqa: S608 (a quoted Feast table name; the key is a parameter)
                            (serialize_entity_key(key, entity_key_serialization_version=version),),
                        ).rowcount
            return removed

    def online(self, customer_ids: list[str]) -> pl.DataFrame:
        """The online store's current features for these customers, with each value's event timestamp.

        A customer the online store does not know comes back with nulls.
        """
        import polars as pl

        return pl.DataFrame(self.online_dict(customer_ids), strict=False)

    def online_dict(self, customer_ids: list[str]) -> dict[str, list[Any]]:
        """`online` as Feast returns it: column name -> values (`<feature>__ts` event seconds); the serving hot path."""
        from lib.feature_store import JOIN_KEY

        service = self.feature_service()
        try:
            response = self.store().get_online_features(features=service, entity_rows=[{JOIN_KEY: c} for c in customer_ids])
            return response.to_dict(include_event_timestamps=True)
        except Exception as exc:  # noqa: BLE001 (redis, sqlite and registry errors differ per backend)
            raise FeatureStoreError(f"online store ({self.online_store}) did not answer: {type(exc).__name__}: {exc}") from exc
