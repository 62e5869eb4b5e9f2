"""Inference: daily churn scores for every customer, served by the champion (or, for the canary share, the challenger),
and every active challenger's score beside them in shadow."""

import datetime as dt
from collections.abc import Callable

import dagster as dg
import polars as pl
from pydantic import Field

from lib.frames import split_by_day
from lib.rollout import CANARY_ARM, CHAMPION_ARM
from ml_assets.assets.inference_days import SHADOW_COLUMNS, score_days
from ml_assets.champion import Champion, current_champion, load_champion, trusted_challengers
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, partition_days
from ml_assets.run_config import default_of
from resources import ArtifactStore, ComputeResource, FeatureStoreResource, Lake, ModelRegistry

BATCH, SHADOW = dg.AssetKey("batch_predictions"), dg.AssetKey("shadow_scores")
QUARANTINED, UNSCORED = dg.AssetKey("quarantined_transactions"), dg.AssetKey("unscored_customers")
FEATURES = dg.AssetKey("customer_features")


def prediction_descriptions(horizon_days: int | None) -> dict[str, str]:
    """Column descriptions; the score's horizon is the scoring model's own (its registry version), not a setting read again."""
    horizon = f"{horizon_days} days" if horizon_days else "label horizon of the scoring model"
    return {
        "customer_id": "Customer identifier.",
        "snapshot_date": "Day whose end-of-day features were scored.",
        "churn_probability": f"Probability that the customer buys nothing in the next {horizon} (the horizon the model was trained on).",
        "model_version": "Version of the model that produced the score.",
        "arm": "champion, or canary: the customer is in the canary share (a hash of the id) and the challenger served the score.",
        **{
            f"reason_{r}": f"The feature that pushed this customer's score up {rank} most, in words (none when no other did): "
            "from the scoring model's own explanation (docs/model-quality.md, reasons per customer)."
            for r, rank in ((1, "the"), (2, "second"), (3, "third"))
        },
        **{
            f"contribution_{r}": f"How much reason_{r} raised the log-odds of churn (the contributions and the model's base add up "
            "to its raw score)."
            for r in (1, 2, 3)
        },
    }


SHADOW_DESCRIPTIONS = {
    "customer_id": "Customer identifier.",
    "snapshot_date": "Day whose end-of-day features were scored.",
    "model_version": "The model that produced this score.",
    "role": "champion or challenger: every active model scores every customer; only batch_predictions is served.",
    "churn_probability": "That model's probability that the customer buys nothing within its label horizon.",
}


class ScoringConfig(dg.Config):
    shadow: bool = Field(
        default=default_of("batch_predictions", "shadow"),
        description="Score every customer with each active challenger too, stored in shadow_scores (rollout.shadow).",
    )
    canary_share: float = Field(
        default=default_of("batch_predictions", "canary_share"),
        ge=0.0,
        le=0.5,
        description="Share of customers, by a hash of the id, whose served score is the first challenger's (rollout.canary_share).",
    )
    reasons: bool = Field(
        default=default_of("batch_predictions", "reasons"),
        description="Store served scores' three reasons, from the serving model's own explanation (rollout.reasons).",
    )
    reasons_share: float = Field(
        default=default_of("batch_predictions", "reasons_share"),
        gt=0.0,
        le=1.0,
        description="Share of each day's highest served scores that get reasons; the rest hold none (rollout.reasons_share).",
    )


@dg.multi_asset(
    outs={
        "batch_predictions": dg.AssetOut(
            description="Churn probability for every customer on this day: the list retention teams work from.",
            group_name="inference",
            kinds={"onnx", "parquet"},
            owners=["team:ml-platform"],
            metadata={"partition_expr": "snapshot_date"},
        ),
        "shadow_scores": dg.AssetOut(
            description="Every active model's score for every customer on this day (champion and challengers, never served): "
            "what rollout_evaluation compares on the same customers once their outcomes mature.",
            group_name="inference",
            kinds={"onnx", "parquet"},
            owners=["team:ml-platform"],
            metadata={"partition_expr": "snapshot_date"},
        ),
    },
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    # online_features carries the blocking training/serving skew check: a
    # skewed feature store stops the run before anything is scored.
    deps=["champion_model", "online_features"],
    # Only the keys: the feature values themselves come through Feast.
    # Read by the asset from the lake: only the keys here, or the features themselves by Spark's executors (compute.engine).
    ins={"customer_features": dg.AssetIn(dagster_type=dg.Nothing)},
)
def batch_predictions(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    feature_store: FeatureStoreResource,
    lake: Lake,
    compute: ComputeResource,
):
    """Churn probability for every customer on this day, scored by the champion model's ONNX artifact in onnxruntime.

    This is the daily list retention teams work from: sort by
    `churn_probability` to find who to contact. `model_version` says which
    model produced each score: the registry's champion at the time of the run,
    or, for the `canary_share` of customers (`arm` = canary, chosen by a hash
    of the id so a customer stays in one arm), the first challenger. Every
    artifact is verified against its registered sha256 before load. The
    scored feature values are read through the Feast feature service
    `churn_model` (offline, at each snapshot's timestamp): the same definition
    the models were trained on. Each active challenger scores every customer
    too, into `shadow_scores`, never served. Known customers without a score
    (every source row of theirs quarantined so far) are listed per day with
    the reason (`unscored_customers` in the metadata, the list in the lake).
    """
    champion = current_champion(registry, artifacts, "batch_predictions", explain=config.reasons)
    challengers = (
        # The first challenger serves the canary share: its scores carry its reasons, so it is explained too.
        [
            load_champion(v, artifacts, explain=config.reasons and i == 0 and config.canary_share > 0)
            for i, v in enumerate(trusted_challengers(registry, "batch_predictions"))
        ]
        if config.shadow or config.canary_share
        else []
    )
    canary = challengers[0] if challengers and config.canary_share > 0 else None
    if compute.spark:
        from ml_assets.assets.inference_spark import spark_batch_predictions

        yield from spark_batch_predictions(
            context, compute, lake, artifacts, champion, challengers, canary, config.canary_share, config.reasons_share
        )
        return
    keys = context.asset_partition_keys_for_input("customer_features")
    customer_features = lake.read_partitions(
        FEATURES, keys, needed_by=" (needed by batch_predictions)", columns=["customer_id", "snapshot_date", "feature_timestamp"]
    )
    entities = customer_features.select("customer_id", "snapshot_date", pl.col("feature_timestamp").alias("event_timestamp"))
    versions = [c.version for c in challengers]

    def write(day: dt.date, frame: pl.DataFrame, scores: pl.DataFrame) -> None:
        write_day(context, lake, day, (frame, scores), champion, versions, canary)

    models = (champion, challengers, canary)
    written = score_days(context, feature_store, entities, models, config.canary_share, config.reasons_share, write)
    empty = _empty(entities, champion.version)
    for day in [d for d in partition_days(context) if d not in written]:  # a day without customers still has its (empty) files
        write(day, empty, empty.select(*SHADOW_COLUMNS[:2], "model_version", pl.lit("champion").alias("role"), "churn_probability"))
    by_day = split_by_day(customer_features.select("customer_id", "snapshot_date"), "snapshot_date")
    list_unscored(
        context, lake, lambda day, ids: ids.filter(ids.is_in(by_day[day]["customer_id"].implode())) if day in by_day else ids.clear()
    )
    # Each day is in the lake already (written as it completed): nothing is left for the IO manager.
    yield dg.Output(None, output_name="batch_predictions")
    yield dg.Output(None, output_name="shadow_scores")


def list_unscored(context: dg.AssetExecutionContext, lake: Lake, scored_among: Callable[[dt.date, pl.Series], pl.Series]) -> None:
    """Per scored day: the known customers with no score (all their rows quarantined), counted and written beside the scores.

    ``scored_among(day, ids)``: which of ``ids`` (customers with a quarantined row) were scored on that day.
    """
    from lib.unscored import unscored_customers

    days = partition_days(context)
    last = max(days)
    parts = []
    for key in lake.existing_partitions(QUARANTINED):
        day = dt.date.fromisoformat(key)
        if day <= last:
            part = lake.read_partitions(QUARANTINED, [key], columns=None)
            if part.height and "customer_id" in part.columns:
                parts.append(part.select("customer_id", "rejected_reasons").with_columns(pl.lit(day).alias("day")))
    quarantined = (
        pl.concat(parts, how="vertical_relaxed")
        if parts
        else pl.DataFrame(schema={"customer_id": pl.String, "rejected_reasons": pl.String, "day": pl.Date})
    )
    for day in days:
        candidates = quarantined.filter(pl.col("day") <= day)["customer_id"].cast(pl.String).drop_nulls().unique()
        unscored = unscored_customers(quarantined, scored_among(day, candidates), day)
        path = lake.path_for(UNSCORED, day.isoformat(), ".parquet")
        lake.write_parquet(path, unscored)
        if unscored.height:
            context.log.warning(
                f"batch_predictions {day}: {unscored.height} known customers have no score: every row of theirs was quarantined ({path})"
            )
        context.add_asset_metadata(
            {
                "unscored_customers": unscored.height,
                "unscored_by_reason": dg.MetadataValue.json(
                    {r: int(n) for r, n in unscored.group_by("reason").len().sort("reason").iter_rows()}
                ),
                "unscored_path": str(path),
            },
            asset_key=BATCH,
            partition_key=day.isoformat(),
        )


def _empty(entities: pl.DataFrame, version: str) -> pl.DataFrame:
    from lib.explain import served_reasons

    scores = (
        entities.clear()
        .select("customer_id", "snapshot_date")
        .with_columns(
            pl.lit(None, dtype=pl.Float64).alias("churn_probability"),
            pl.lit(version).alias("model_version"),
            pl.lit(CHAMPION_ARM).alias("arm"),
        )
    )
    return pl.concat([scores, served_reasons(0, [])], how="horizontal")


def write_day(
    context: dg.AssetExecutionContext,
    lake: Lake,
    day: dt.date,
    frames: tuple[pl.DataFrame, pl.DataFrame],
    champion: Champion,
    challengers: list[str],
    canary: Champion | None,
) -> None:
    """One day's served scores and shadow scores into the lake, with their metadata on the day's partitions."""
    part, shadow_part = frames
    key = day.isoformat()
    for asset, frame in ((BATCH, part), (SHADOW, shadow_part)):
        lake.write_parquet(lake.path_for(asset, key, ".parquet"), frame)
    context.add_asset_metadata(
        {
            **frame_metadata(part, prediction_descriptions(champion.horizon_days)),
            "lake_path": dg.MetadataValue.path(str(lake.path_for(BATCH, key, ".parquet"))),
            "label_horizon_days": champion.horizon_days or 0,
            "model_version": champion.version,
            "model_kind": champion.kind,
            "canary_version": canary.version if canary else "none",
            "canary_rows": int((part["arm"] == CANARY_ARM).sum()) if part.height else 0,
            "mean_churn_probability": float(part["churn_probability"].mean()) if part.height else 0.0,
            "share_above_0_5": float((part["churn_probability"] > 0.5).mean()) if part.height else 0.0,
        },
        asset_key=BATCH,
        partition_key=key,
    )
    context.add_asset_metadata(
        {
            **frame_metadata(shadow_part, SHADOW_DESCRIPTIONS),
            "lake_path": dg.MetadataValue.path(str(lake.path_for(SHADOW, key, ".parquet"))),
            "champion": champion.version,
            "challengers": dg.MetadataValue.json(challengers),
        },
        asset_key=SHADOW,
        partition_key=key,
    )
