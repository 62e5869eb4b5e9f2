"""lib/feast_rows.py: the column-wise forms of Feast's entity keys and double values equal Feast's own, value for value."""

from __future__ import annotations

import numpy as np
import pytest

from lib import feast_rows


def test_entity_keys_are_feasts_serialization() -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    ids = ["C00000001", "", "7f9c2ba4-e88f-4a1b-9d3c-2f1e0c9a8b7d", "Zoë", "客户", "x" * 300]
    expected = [serialize_entity_key(EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=i)]), 3) for i in ids]
    assert feast_rows.entity_keys(ids, "customer_id") == expected


def test_double_values_and_texts_are_feasts() -> None:
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.protos.feast.types.Value_pb2 import Value

    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.random(2000) * 10.0 ** rng.integers(-12, 20, 2000),
            -rng.random(500),
            np.round(rng.random(500) * 1000),
            [
                0.0,
                -0.0,
                1e-4,
                9.999999999999999e-5,
                1e-5,
                5e-324,
                1e16,
                9999999999999998.0,
                1.7976931348623157e308,
                float("inf"),
                float("-inf"),
            ],
        ]
    )
    texts = feast_rows.double_texts(values).to_list()
    for value, text in zip(values.tolist(), texts, strict=True):
        message = Value(double_val=value)
        assert text == extract_text_and_num(message, False)[0] == str(value)
        assert len(text) <= feast_rows.TEXT_WIDTH
        assert message.SerializeToString() == bytes([feast_rows.DOUBLE_TAG]) + np.float64(value).astype("<f8").tobytes()


@pytest.mark.parametrize("ids", [["b", "a", "aa", "ab"], ["10", "9", "100", "09"]])
def test_packed_rows_are_in_serialized_key_order_and_keep_their_values(ids: list[str]) -> None:
    """Keys sort by their bytes (the length prefix first, as SQLite compares the BLOBs); a null and a NaN are both missing."""
    import polars as pl

    values = [1.5, None, float("nan"), 2.0]
    frame = pl.DataFrame({"customer_id": ids, "f": values}, schema={"customer_id": pl.String, "f": pl.Float64})
    keys = feast_rows.entity_keys(ids, "customer_id")
    packed = feast_rows.pack(frame, "customer_id", ("f",), list(range(4)), [None] * 4)
    assert packed.keys == sorted(keys)
    for key, value, text, stamp in zip(packed.keys, packed.values, packed.texts, packed.event_ts, strict=True):
        i = keys.index(key)
        assert stamp == i
        if values[i] is None or values[i] != values[i]:
            assert value[0] == 0 and text.strip() == ""
        else:
            assert value == bytes([feast_rows.DOUBLE_TAG]) + np.float64(values[i]).tobytes() and text.rstrip() == str(values[i])
