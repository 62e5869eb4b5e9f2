"""The lake's layout as Spark reads and writes it: the same Parquet file per day the polars path reads and writes.

Spark writes a folder of part files; a day of the lake is one file
(``<root>/<asset>/<day>.parquet``). So a day is written by Spark into a hidden
folder beside its target, as one part file (computed and sorted in parallel,
concatenated by one task), and that file is renamed onto the day's name: a
reader never sees a half-written day, and every reader downstream (the polars
assets, Feast's offline store, the scoring service) is unchanged.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from upath import UPath

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# fsspec names a scheme one way, Hadoop's connectors another.
_HADOOP_SCHEME = {"s3": "s3a", "gcs": "gs"}


def spark_url(path: UPath | str) -> str:
    """The URL Spark reads ``path`` under: a local path as it is, s3:// as s3a:// (Hadoop's S3 connector)."""
    text = str(path)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return str(UPath(text).absolute())
    if scheme == "file":
        return text
    return f"{_HADOOP_SCHEME.get(scheme, scheme)}://{rest}"


def read_days(spark: SparkSession, paths: list[UPath], columns: list[str] | None = None) -> DataFrame:
    """Day files of the lake as one DataFrame (a column added to the source later is null in older days)."""
    frame = spark.read.option("mergeSchema", "true").parquet(*[spark_url(p) for p in paths])
    return frame.select(*columns) if columns else frame


def write_day(frame: DataFrame, target: UPath, order_by: str | None = "customer_id") -> None:
    """Write ``frame`` as the single Parquet file ``target`` (replacing it), sorted by ``order_by``."""
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.spark")
    ordered = frame.orderBy(order_by) if order_by else frame
    # After the sort's shuffle, coalesce(1) only merges its sorted ranges in order: the work before stays parallel.
    ordered.coalesce(1).write.mode("overwrite").option("compression", "zstd").parquet(spark_url(staging))
    try:
        parts = sorted(p for p in staging.iterdir() if p.name.startswith("part-") and p.name.endswith(".parquet"))
        if len(parts) != 1:
            raise RuntimeError(f"Spark wrote {len(parts)} part files for {target.name}, expected one")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        parts[0].rename(target)
    finally:
        _remove(staging)


def _remove(folder: UPath) -> None:
    if not folder.exists():
        return
    for child in folder.iterdir():
        if child.is_dir():
            _remove(child)
        else:
            child.unlink()
    folder.rmdir()
