"""`churn erase CUSTOMER_ID --reason ...`: remove one customer from everything the pipeline writes.

- every Parquet file under the lake root (raw, validated, quarantined and
  set-aside rows, features and their incremental state, training sets, batch
  predictions: any table with a customer_id column), rewritten atomically;
- the Feast online store (Redis or SQLite), under its writer lock;
- the service's prediction record (prediction_log);

then the registry keeps the sha256 of the id (not the id), ingestion drops
that customer's rows if the source still has them, and an `erased` event
records who, why and how many rows went where. Model artifacts hold no
customer ids (drift references are feature values only), so models stay
as registered. Previews in Dagster's event metadata carry no customer ids
(ml_assets/metadata.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from upath import UPath

from lib.erasure import ID_COLUMN, customer_mask, without_customer


@dataclass
class ErasureReport:
    files_rewritten: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    online_removed: int = 0
    id_sha256: str = ""

    @property
    def lake_rows(self) -> int:
        return sum(self.rows_by_table.values())


def erase_from_lake(lake_root: str, customer_id: str) -> tuple[int, dict[str, int]]:
    """Rewrite every Parquet file under `lake_root` that holds the customer's rows; (files rewritten, rows by table)."""
    from resources.lake import Lake

    root = UPath(lake_root)
    if not root.exists():
        return 0, {}
    rewritten, by_table = 0, {}
    for path in sorted(root.rglob("*.parquet")):
        if path.name.startswith("."):
            continue  # a write in flight (Lake.write_bytes' temporary name)
        data = path.read_bytes()
        if ID_COLUMN not in pl.read_parquet_schema(io.BytesIO(data)):
            continue
        # The id column alone first: most files do not hold the customer and are never decoded whole.
        if not customer_mask(pl.read_parquet(data, columns=[ID_COLUMN]), customer_id).any():
            continue
        kept, removed = without_customer(pl.read_parquet(data), customer_id)
        if removed:
            buf = io.BytesIO()
            kept.write_parquet(buf, compression="zstd", statistics=True)
            Lake.write_bytes(path, buf.getvalue())
            table = str(path.parent.relative_to(root)) if path.parent != root else path.stem
            by_table[table] = by_table.get(table, 0) + removed
            rewritten += 1
    return rewritten, by_table


def erase_customer(customer_id: str, reason: str, actor: str, registry: Any, feature_store: Any, lake_root: str) -> ErasureReport:
    """Erase one customer everywhere; the registry event is written last, once every store has been cleaned."""
    if not reason.strip():
        raise ValueError("an erasure needs a reason (--reason), recorded in the registry")
    report = ErasureReport()
    report.files_rewritten, report.rows_by_table = erase_from_lake(lake_root, customer_id)
    report.online_removed = feature_store.erase_online(customer_id)
    removed = {"lake_rows": report.lake_rows, "lake_files": report.files_rewritten, "online_store": report.online_removed}
    report.id_sha256 = registry.record_erasure(customer_id, actor=actor, reason=reason, removed=removed)
    return report


def expire_lake(lake_root: str, retention_days: int, today: Any, apply: bool) -> list[tuple[str, str, str]]:
    """Raw, validated and quarantined partition files older than the retention, as (table, partition, path);
    deleted with `apply`."""
    from lib.erasure import RETAINED_TABLES, expired_partitions

    root, found = UPath(lake_root), []
    for table in RETAINED_TABLES:
        folder = root / table
        if not folder.exists():
            continue
        files = {p.stem: p for p in folder.glob("*.parquet") if not p.name.startswith(".")}
        for stem in expired_partitions(sorted(files), today, retention_days):
            found.append((table, stem, str(files[stem])))
            if apply:
                files[stem].unlink()
    return found


@dataclass
class RetentionReport:
    files: list[tuple[str, str, str]] = field(default_factory=list)
    predictions_deleted: int = 0
    wiped: bool | None = None  # expired partitions wiped from Dagster's event log (None: not asked)


def apply_retention(
    lake_root: str, registry: Any, retention_days: int | None, prediction_days: int | None, apply: bool, instance: Any = None
) -> RetentionReport:
    """Expire transaction partitions and prediction records past their retention. With a Dagster instance whose event
    log can wipe partitions, they are wiped there too, so the UI shows them as missing rather than materialized."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    report = RetentionReport()
    if retention_days:
        report.files = expire_lake(lake_root, retention_days, now.date(), apply)
        if apply and instance is not None:
            import dagster as dg

            by_table: dict[str, list[str]] = {}
            for table, partition, _ in report.files:
                by_table.setdefault(table, []).append(partition)
            try:
                for table, partitions in by_table.items():
                    instance.wipe_asset_partitions(dg.AssetKey(table), partitions)
                report.wiped = True
            except NotImplementedError:
                # Dagster OSS's SQL event logs cannot wipe single partitions (Dagster+ can): the UI keeps showing
                # them materialized, and a run that reads one fails with MissingPartitionError naming the day.
                report.wiped = False
    if prediction_days and apply:
        report.predictions_deleted = registry.expire_predictions(now - dt.timedelta(days=prediction_days))
    return report
