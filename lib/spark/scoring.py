"""Batch scoring on Spark: every model's ONNX artifact run by onnxruntime inside each partition (``mapInArrow``).

The artifacts travel to the executors as bytes with the sha256 the registry
holds for them, and each executor checks the digest again before
onnxruntime parses a byte, then keeps one session per artifact for the life
of its Python worker. The served score and the arm (champion, or the canary
share chosen by a hash of the id, ``lib.rollout.arm_of``) are decided there
too, with the same functions as the single-node path, so both engines write
the same scores.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from lib.explain import REASONS, ExplainSpec, reason_columns
from lib.rollout import CANARY_ARM, CHAMPION_ARM, arm_of

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class ShippedModel:
    """A verified ONNX artifact as it is shipped to the executors."""

    version: str
    sha256: str
    onnx: bytes
    features: tuple[str, ...]
    # What explains its scores (the models that serve: the champion and the canary), checked by digest like the ONNX.
    explainer: ExplainSpec | None = None


class ArtifactDigestError(RuntimeError):
    """An artifact's bytes on an executor do not hash to the registry's sha256."""


# One onnxruntime session per artifact digest, per executor Python worker.
_SESSIONS: dict[str, Any] = {}


def _session(model: ShippedModel) -> Any:
    if model.sha256 not in _SESSIONS:
        digest = hashlib.sha256(model.onnx).hexdigest()
        if digest != model.sha256:
            raise ArtifactDigestError(f"model {model.version}: the executor received bytes hashing to {digest}, not {model.sha256}")
        from lib.export import onnx_session

        _SESSIONS[model.sha256] = onnx_session(model.onnx)
    return _SESSIONS[model.sha256]


def score_column(i: int) -> str:
    return f"_score_{i}"


def _scorer(models: list[ShippedModel], canary_index: int | None, canary_share: float):  # noqa: ANN202 (a closure Spark ships)
    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np
        import pyarrow as pa

        from lib.export import onnx_churn_probability

        for batch in batches:
            columns: dict[str, Any] = {"customer_id": batch.column("customer_id"), "snapshot_date": batch.column("snapshot_date")}
            for i, model in enumerate(models):
                x = np.column_stack([batch.column(f).to_numpy(zero_copy_only=False) for f in model.features]).astype(np.float32)
                x = x.reshape(batch.num_rows, len(model.features))
                columns[score_column(i)] = pa.array(onnx_churn_probability(_session(model), x, workers=1), type=pa.float64())
            ids = batch.column("customer_id").to_pylist()
            share = canary_share if canary_index is not None else 0.0
            arms = [arm_of(str(c), share) for c in ids]
            columns["arm"] = pa.array(arms, type=pa.string())
            yield pa.RecordBatch.from_pydict(columns)

    return score


def _explainer(models: list[ShippedModel], canary_index: int | None):  # noqa: ANN202 (a closure Spark ships)
    def explain(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np
        import pyarrow as pa

        for batch in batches:
            in_canary = np.asarray(batch.column("arm").to_pylist(), dtype=object) == CANARY_ARM
            columns: dict[str, Any] = {"customer_id": batch.column("customer_id"), "snapshot_date": batch.column("snapshot_date")}
            columns.update(_served_reasons(batch, models, canary_index, in_canary))
            yield pa.RecordBatch.from_pydict(columns)

    return explain


def _served_reasons(batch: pa.RecordBatch, models: list[ShippedModel], canary_index: int | None, in_canary: Any) -> dict[str, Any]:
    """reason_1..3 and contribution_1..3 of the model that served each row (``lib.explain.served_reasons``, as on a
    single node)."""
    import numpy as np
    import pyarrow as pa

    from lib.explain import served_reasons

    parts = []
    for model, mask in [(models[0], ~in_canary)] + ([(models[canary_index], in_canary)] if canary_index is not None else []):
        if model.explainer is not None and mask.any():
            rows = np.flatnonzero(mask)
            x = np.column_stack([batch.column(f).to_numpy(zero_copy_only=False)[rows] for f in model.explainer.features])
            parts.append((model.explainer, rows, x.astype(np.float32).reshape(len(rows), len(model.explainer.features))))
    frame = served_reasons(batch.num_rows, parts).to_arrow()
    # One array per column, typed as the mapInArrow schema says (polars gives large or view strings).
    return {
        name: frame.column(name).combine_chunks().cast(pa.string() if name.startswith("reason_") else pa.float64())
        for name in frame.column_names
    }


def _with_reasons(served: DataFrame, features: DataFrame, models: list[ShippedModel], canary_index: int | None, share: float) -> DataFrame:
    """``served`` with the reasons of the ``share`` of each day's highest scores (ties by customer id: the rows
    ``lib.explain.explained_positions`` picks on a single node), nulls on the rest."""
    from pyspark.sql import Window

    from lib.explain import explained_count

    serving = [models[0]] + ([models[canary_index]] if canary_index is not None else [])
    explained = [m for m in serving if m.explainer is not None]
    if not explained:  # rollout.reasons off
        return served.select(
            "*",
            *[F.lit(None).cast("string").alias(f"reason_{r}") for r in range(1, REASONS + 1)],
            *[F.lit(None).cast("double").alias(f"contribution_{r}") for r in range(1, REASONS + 1)],
        )
    spark = served.sparkSession
    counts = served.groupBy("snapshot_date").count().collect()
    quota = spark.createDataFrame([(r["snapshot_date"], explained_count(r["count"], share)) for r in counts], "snapshot_date date, _k long")
    order = Window.partitionBy("snapshot_date").orderBy(F.desc("churn_probability"), F.asc("customer_id"))
    top = (
        served.select("customer_id", "snapshot_date", "churn_probability", "arm")
        .withColumn("_rank", F.row_number().over(order))
        .join(F.broadcast(quota), on="snapshot_date")
        .filter(F.col("_rank") <= F.col("_k"))
        .select("customer_id", "snapshot_date", "arm")
    )
    needed = sorted({f for m in explained for f in m.explainer.features})  # type: ignore[union-attr]
    schema = ", ".join(
        ["customer_id string", "snapshot_date date"]
        + [f"reason_{r} string" for r in range(1, REASONS + 1)]
        + [f"contribution_{r} double" for r in range(1, REASONS + 1)]
    )
    reasons = top.join(features.select("customer_id", "snapshot_date", *needed), on=["customer_id", "snapshot_date"]).mapInArrow(
        _explainer(models, canary_index), schema
    )
    return served.join(reasons, on=["customer_id", "snapshot_date"], how="left")


def score_features(
    features: DataFrame,
    models: list[ShippedModel],
    canary_index: int | None = None,
    canary_share: float = 0.0,
    reasons_share: float = 1.0,
) -> tuple[DataFrame, DataFrame]:
    """(served, shadow) for the feature rows: ``models[0]`` is the champion, the others active challengers.

    served: customer_id, snapshot_date, churn_probability, model_version, arm (the champion's score, or in the
    canary arm the ``canary_index`` model's), and the reasons of the ``reasons_share`` of each day's highest scores.
    shadow: every model's score, role champion or challenger.
    """
    schema = ", ".join(
        [
            "customer_id string",
            "snapshot_date date",
            *[f"{score_column(i)} double" for i in range(len(models))],
            "arm string",
        ]
    )
    needed = sorted({f for m in models for f in m.features})
    # Scored once, kept on the executors: the served and the shadow scores are both read from it.
    wide = (
        features.select("customer_id", "snapshot_date", *needed)
        .mapInArrow(_scorer(models, canary_index, canary_share), schema)
        .localCheckpoint()
    )
    champion = models[0]
    if canary_index is None:
        served = wide.select(
            "customer_id",
            "snapshot_date",
            F.col(score_column(0)).alias("churn_probability"),
            F.lit(champion.version).alias("model_version"),
            F.lit(CHAMPION_ARM).alias("arm"),
        )
    else:
        in_canary = F.col("arm") == CANARY_ARM
        served = wide.select(
            "customer_id",
            "snapshot_date",
            F.when(in_canary, F.col(score_column(canary_index))).otherwise(F.col(score_column(0))).alias("churn_probability"),
            F.when(in_canary, F.lit(models[canary_index].version)).otherwise(F.lit(champion.version)).alias("model_version"),
            "arm",
        )
    served = _with_reasons(served, features, models, canary_index, reasons_share).select(
        "customer_id", "snapshot_date", "churn_probability", "model_version", "arm", *reason_columns()
    )
    shadow = functools.reduce(
        lambda a, b: a.unionByName(b),
        [
            wide.select(
                "customer_id",
                "snapshot_date",
                F.lit(model.version).alias("model_version"),
                F.lit("champion" if i == 0 else "challenger").alias("role"),
                F.col(score_column(i)).alias("churn_probability"),
            )
            for i, model in enumerate(models)
        ],
    )
    return served, shadow
