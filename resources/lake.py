"""The lake: Parquet (and small JSON records) under one root, local or object store.

An input declared with ``dg.AssetIn(metadata={"columns": [...]})`` reads only
those columns of a partitioned asset.

Layout: ``<root>/<asset key path>/<partition key>.parquet`` for daily assets and
``<root>/<asset key path>.parquet`` (or ``.json``) for the others.  The root is
any fsspec URL (``/abs/path``, ``s3://bucket/prefix``, ``gs://...``): moving the
lake to an object store is a configuration change plus the fsspec driver.

An asset run over a range of days (single-run backfills) returns one frame for
the whole range; the IO manager splits it on the column named by the asset's
``partition_expr`` metadata and writes one file per day, including an empty
file for a day without rows, so "no data that day" and "never computed" stay
distinguishable.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field
from upath import UPath

from lib import records
from lib.frames import split_by_day


class MissingPartitionError(FileNotFoundError):
    """An upstream partition needed as input was never materialized."""


class Lake(dg.ConfigurableResource):
    """Parquet files and JSON records under one root, by asset key and partition."""

    root: str = Field(description="Lake root: a local folder or an fsspec URL such as s3://bucket/lake.")

    def _base(self, key: dg.AssetKey) -> UPath:
        return UPath(self.root).joinpath(*key.path)

    def path_for(self, key: dg.AssetKey, partition: str | None, suffix: str) -> UPath:
        base = self._base(key)
        return base / f"{partition}{suffix}" if partition is not None else base.with_name(base.name + suffix)

    def write_parquet(self, path: UPath, frame: pl.DataFrame) -> None:
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", statistics=True)
        self.write_bytes(path, buf.getvalue())

    @staticmethod
    def write_bytes(path: UPath, data: bytes) -> None:
        # Write beside the target and rename: a reader (or a killed run) never
        # sees a half-written file under the final name.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        tmp.rename(path)

    def read_partitions(
        self, key: dg.AssetKey, partitions: list[str], needed_by: str = "", columns: list[str] | None = None, where_present: bool = False
    ) -> pl.DataFrame:
        """Every partition's rows (``columns`` only, when given; with ``where_present`` those of them each file has)."""
        frames = []
        missing = []
        for partition in partitions:
            path = self.path_for(key, partition, ".parquet")
            try:
                data = path.read_bytes()
                wanted = columns
                if columns is not None and where_present:
                    wanted = [c for c in columns if c in pl.read_parquet_schema(io.BytesIO(data))]
                frames.append(pl.read_parquet(data, columns=wanted))
            except FileNotFoundError:
                missing.append(partition)
        if missing:
            raise _missing(key, missing, needed_by)
        if not frames:
            raise MissingPartitionError(f"no partition of {key.to_user_string()} was requested{needed_by}")
        # Diagonal: a column added to the source later (a further categorical) is null in older partitions.
        return pl.concat(frames, how="diagonal_relaxed")

    def partition_paths(self, key: dg.AssetKey, partitions: list[str], needed_by: str = "") -> list[UPath]:
        """The files of these partitions, for an engine that reads them itself (Spark); every one must exist."""
        paths = [self.path_for(key, p, ".parquet") for p in partitions]
        missing = [p for p, path in zip(partitions, paths, strict=True) if not path.exists()]
        if missing:
            raise _missing(key, missing, needed_by)
        return paths

    @staticmethod
    def head(path: UPath, rows: int = 5) -> pl.DataFrame:
        """The first rows of a Parquet file (its schema when it has none), read from its first row group only."""
        import pyarrow.parquet as pq

        with path.open("rb") as handle:
            reader = pq.ParquetFile(handle)
            batch = next(reader.iter_batches(batch_size=rows), None) if rows else None
            return pl.DataFrame(batch if batch is not None else reader.schema_arrow.empty_table())

    def existing_partitions(self, key: dg.AssetKey) -> list[str]:
        base = self._base(key)
        if not base.exists():
            return []
        return sorted(p.name.removesuffix(".parquet") for p in base.iterdir() if p.name.endswith(".parquet") and not p.name.startswith("."))

    def read_single(self, key: dg.AssetKey) -> Any:
        parquet = self.path_for(key, None, ".parquet")
        if parquet.exists():
            return pl.read_parquet(parquet.read_bytes())
        record = self.path_for(key, None, ".json")
        if record.exists():
            return records.load(record.read_bytes())
        raise MissingPartitionError(
            f"{key.to_user_string()} has not been materialized yet (looked in {parquet.parent}); materialize it first"
        )


def _missing(key: dg.AssetKey, missing: list[str], needed_by: str) -> MissingPartitionError:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return MissingPartitionError(
        f"{key.to_user_string()} partition(s) {shown} not found in the lake{needed_by}; "
        f"materialize them first (e.g. a backfill of {key.to_user_string()} over {missing[0]}...{missing[-1]})"
    )


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores asset outputs in the lake as Parquet (data frames) or JSON (records)."""

    lake: Lake

    # --- output -------------------------------------------------------------

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = context.asset_key
        if isinstance(obj, pl.DataFrame):
            if context.has_asset_partitions:
                keys = list(context.asset_partition_keys)
                parts = self._split(obj, keys, context)
                for partition, frame in parts.items():
                    self.lake.write_parquet(self.lake.path_for(key, partition, ".parquet"), frame)
                first = self.lake.path_for(key, keys[0], ".parquet")
                context.add_output_metadata({"lake_path": dg.MetadataValue.path(str(first.parent))})
            else:
                path = self.lake.path_for(key, None, ".parquet")
                self.lake.write_parquet(path, obj)
                context.add_output_metadata({"lake_path": dg.MetadataValue.path(str(path))})
        elif isinstance(obj, (dict, *records.RECORD_CLASSES)):
            if context.has_asset_partitions:
                raise TypeError(f"{key.to_user_string()}: partitioned assets must return a polars DataFrame")
            path = self.lake.path_for(key, None, ".json")
            data = (
                records.dump(obj)
                if isinstance(obj, records.RECORD_CLASSES)
                else json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
            )
            self.lake.write_bytes(path, data)
            context.add_output_metadata({"lake_path": dg.MetadataValue.path(str(path))})
        else:
            raise TypeError(f"{key.to_user_string()}: the lake stores polars DataFrames, model records and dicts, not {type(obj).__name__}")

    def _split(self, frame: pl.DataFrame, keys: list[str], context: dg.OutputContext) -> dict[str, pl.DataFrame]:
        if len(keys) == 1:
            return {keys[0]: frame}
        column = (context.definition_metadata or {}).get("partition_expr")
        if not column or column not in frame.columns:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: a run over {len(keys)} partitions needs the asset's "
                f"'partition_expr' metadata to name a date column of its output (got {column!r})"
            )
        groups = {day.isoformat(): part for day, part in split_by_day(frame, column).items()}
        unexpected = set(groups) - set(keys)
        if unexpected:
            raise ValueError(f"{context.asset_key.to_user_string()}: rows dated {sorted(unexpected)[:5]} fall outside the run's partitions")
        empty = frame.clear()
        return {k: groups.get(k, empty) for k in keys}

    # --- input --------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            # An input declared with `AssetIn(metadata={"columns": [...]})` reads only those columns.
            columns = (context.definition_metadata or {}).get("columns")
            return self.lake.read_partitions(key, keys, needed_by=_describe(context), columns=columns)
        return self.lake.read_single(key)


def _describe(context: dg.InputContext) -> str:
    try:
        who = context.step_context.op_def.name if context.step_context else ""
    except Exception:  # only used to word an error message
        who = ""
    return f" (needed by {who})" if who else ""
