"""Feast's SQLite online-store rows, computed a column at a time instead of one protobuf message per value.

Feast's SQLite store keeps one row per (entity, feature): the serialized
entity key, the feature name, the value as a serialized `feast.types.Value`
message, its text form, the event and created timestamps. Its own writer
builds a protobuf message per value in Python and upserts one row per
statement (about 100 s for 280 k customers x 25 features). For the double
features of the churn view the bytes are simple enough to compute with numpy
and polars for a whole column at once; `resources/feast_engine.py` writes
them with one SQL statement per batch, and checks a sample of every batch
against Feast's own conversion before it writes anything.

The layouts (feast 0.67):

- entity key, `serialize_entity_key` version 3: uint32 number of join keys,
  then per key uint32 type STRING (2), uint32 length, the name; then per
  value uint32 type, uint32 length, the bytes (a string's UTF-8);
- a double value: the `Value` message with only `double_val` (field 5, wire
  type 64-bit: tag byte 0x29) set, so 0x29 and the 8 little-endian bytes; a
  missing or NaN value is the empty message (b"") with no text;
- the text: Python's `str(float)` (Feast's `extract_text_and_num`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

ENTITY_KEY_VERSION = 3
STRING_TYPE = 2  # feast.value_type.ValueType.STRING
DOUBLE_TAG = 0x29  # (field 5 << 3) | wire type 1 (64-bit): Value.double_val
DOUBLE_BYTES = 9  # the tag and the 8 bytes of the double
# The longest text of a double: "-1.7976931348623157e+308" (24 characters).
TEXT_WIDTH = 24
# Python switches to exponent notation below 1e-4, polars only below 1e-5 (and
# writes "1e-5", not "1e-05"); both agree everywhere else, so only values
# below this size are formatted by Python itself.
_PYTHON_FORMATS_BELOW = 1e-4


def entity_key_prefix(join_key: str) -> bytes:
    """The bytes every serialized key of one string join key starts with (the count, type and name of the key)."""
    name = join_key.encode("utf-8")
    return struct.pack("<III", 1, STRING_TYPE, len(name)) + name + struct.pack("<I", STRING_TYPE)


def entity_keys(ids: list[str], join_key: str) -> list[bytes]:
    """`serialize_entity_key` (version 3) of each id, for a view with one string join key."""
    prefix = entity_key_prefix(join_key)
    return [prefix + len(b).to_bytes(4, "little") + b for b in (i.encode("utf-8") for i in ids)]


def double_texts(values: np.ndarray) -> pl.Series:
    """`str(float(v))` for each value, as polars strings: polars formats, Python only the values polars writes otherwise."""
    import numpy as np
    import polars as pl

    texts = pl.Series(values, dtype=pl.Float64).cast(pl.String)
    small = np.flatnonzero((np.abs(values) < _PYTHON_FORMATS_BELOW) & (values != 0))
    if small.size:
        listed = texts.to_list()
        for i in small.tolist():
            listed[i] = str(float(values[i]))
        texts = pl.Series(listed, dtype=pl.String)
    return texts


@dataclass(frozen=True)
class PackedRows:
    """A batch of entities, one row each, sorted by serialized key: what the SQL statement unpacks per feature.

    `values` holds every feature's 9 value bytes side by side (a first byte
    of 0 marks a missing value), `texts` every feature's text padded to
    `TEXT_WIDTH` (blank for a missing value), in the order of `features`.
    """

    features: tuple[str, ...]
    keys: list[bytes]
    values: list[bytes]
    texts: list[str]
    event_ts: list[int | None]
    created_ts: list[int | None]

    def rows(self) -> list[tuple[bytes, bytes, str, int | None, int | None]]:
        return list(zip(self.keys, self.values, self.texts, self.event_ts, self.created_ts, strict=True))


def pack(
    frame: pl.DataFrame,
    join_key: str,
    features: tuple[str, ...],
    event_ts: list[int | None],
    created_ts: list[int | None],
) -> PackedRows:
    """Pack the feature values of `frame` (one row per entity) for `unpack_sql`, sorted by serialized entity key.

    `event_ts` and `created_ts` are the stored timestamps of each row, in
    the frame's order (the caller converts them exactly as Feast does).
    """
    import numpy as np
    import polars as pl

    n = frame.height
    keys = entity_keys(frame[join_key].cast(pl.String).to_list(), join_key)
    packed = np.zeros((n, len(features), DOUBLE_BYTES), dtype=np.uint8)
    texts = []
    for j, name in enumerate(features):
        values = frame[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        present = ~np.isnan(values)
        packed[:, j, 0] = np.where(present, DOUBLE_TAG, 0)
        packed[:, j, 1:] = values.astype("<f8").view(np.uint8).reshape(n, 8)
        text = double_texts(values)
        texts.append(pl.select(pl.when(pl.Series(present)).then(text).otherwise(pl.lit("")).str.pad_end(TEXT_WIDTH)).to_series())
    joined = pl.select(pl.concat_str(texts)).to_series().to_list() if texts else [""] * n
    raw, width = packed.tobytes(), len(features) * DOUBLE_BYTES
    order = sorted(range(n), key=keys.__getitem__)
    return PackedRows(
        features=features,
        keys=[keys[i] for i in order],
        values=[raw[i * width : (i + 1) * width] for i in order],
        texts=[joined[i] for i in order],
        event_ts=[event_ts[i] for i in order],
        created_ts=[created_ts[i] for i in order],
    )


def quote(identifier: str) -> str:
    """An SQLite identifier, quoted as Feast quotes its table names."""
    return '"' + identifier.replace('"', '""') + '"'


# The staging tables live in the writer's connection only (TEMP), never in the store's file.
STAGE = "churn_online_stage"
NAMES = "churn_online_names"


def unpack_sql(table: str) -> str:
    """The upsert of every staged entity's features into Feast's table, in (key, feature) order.

    One statement per batch: SQLite unpacks each feature's bytes and text
    (substr of the packed columns) and upserts with the conflict clause of
    Feast's own writer, so an existing row is updated in place.
    """
    value = f"CASE WHEN substr(s.v, n.j * {DOUBLE_BYTES} + 1, 1) = x'{DOUBLE_TAG:02x}' THEN substr(s.v, n.j * {DOUBLE_BYTES} + 1, {DOUBLE_BYTES}) ELSE x'' END"
    text = f"NULLIF(rtrim(substr(s.x, n.j * {TEXT_WIDTH} + 1, {TEXT_WIDTH})), '')"
    return (
        # Identifiers only: this module's constants and Feast's table name, quoted; the values are bound.
        f"INSERT INTO {quote(table)} (entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts) "  # noqa: S608
        f"SELECT s.k, n.name, {value}, {text}, NULL, s.event_ts, s.created_ts FROM {STAGE} s CROSS JOIN {NAMES} n "
        # WHERE true: SQLite's parser needs it between a SELECT's join and ON CONFLICT.
        "WHERE true ORDER BY s.rowid, n.name "
        "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, value_text = excluded.value_text, "
        "vector_value = excluded.vector_value, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )


# The timestamps have no declared type, so each is copied as bound (an integer, as Feast binds it).
STAGE_DDL = f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (k BLOB, v BLOB, x TEXT, event_ts, created_ts)"
STAGE_INSERT = f"INSERT INTO {STAGE} VALUES (?, ?, ?, ?, ?)"  # noqa: S608 (a constant table name)
STAGE_CLEAR = f"DELETE FROM {STAGE}"  # noqa: S608 (a constant table name)
NAMES_DDL = f"CREATE TEMP TABLE IF NOT EXISTS {NAMES} (j INTEGER PRIMARY KEY, name TEXT)"
NAMES_INSERT = f"INSERT INTO {NAMES} VALUES (?, ?)"  # noqa: S608 (a constant table name)
NAMES_CLEAR = f"DELETE FROM {NAMES}"  # noqa: S608 (a constant table name)
