"""Rollout evaluation: the champion and its challengers judged on the same customers once their outcomes mature, and the
registry's own promotion or rollback when the evidence is confident."""

import datetime as dt
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.features import churn_labels
from lib.progress import Ticker
from lib.rollout import Comparison, Matured, RolloutPolicy, Verdict, compare, judge, rollout_verdict
from ml_assets.champion import trusted_champion
from ml_assets.partitions import daily_partitions, partition_days
from ml_assets.run_config import default_of
from resources import ExperimentTracker, FailureNotifier, Lake, ModelRegistry
from resources.registry import ModelVersion

SHADOW, CUSTOMER_FEATURES = dg.AssetKey("shadow_scores"), dg.AssetKey("customer_features")


class RolloutConfig(dg.Config):
    contact_budget: float = Field(
        default=default_of("rollout_evaluation", "contact_budget"), description="Precision at this share (rollout.contact_budget)."
    )
    min_matured_days: int = Field(
        default=default_of("rollout_evaluation", "min_matured_days"),
        description="Matured days pooled per verdict (rollout.min_matured_days).",
    )
    promote_margin: float = Field(default=default_of("rollout_evaluation", "promote_margin"), description="rollout.promote_margin.")
    rollback_floor: float = Field(default=default_of("rollout_evaluation", "rollback_floor"), description="rollout.rollback_floor.")
    rollback_margin: float = Field(default=default_of("rollout_evaluation", "rollback_margin"), description="rollout.rollback_margin.")
    confidence: float = Field(
        default=default_of("rollout_evaluation", "confidence"), description="Interval confidence (rollout.confidence)."
    )
    auto_promote: bool = Field(default=default_of("rollout_evaluation", "auto_promote"), description="rollout.auto_promote.")
    auto_rollback: bool = Field(default=default_of("rollout_evaluation", "auto_rollback"), description="rollout.auto_rollback.")
    resamples: int = Field(default=300, ge=50, description="Bootstrap resamples per interval.")

    def policy(self) -> RolloutPolicy:
        return RolloutPolicy(
            self.min_matured_days, self.promote_margin, self.rollback_floor, self.rollback_margin, self.auto_promote, self.auto_rollback
        )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"polars", "parquet"},
    owners=["team:ml-platform"],
    metadata={"partition_expr": "snapshot_date"},
    deps=["shadow_scores", "customer_features", "champion_model"],
)
def rollout_evaluation(
    context: dg.AssetExecutionContext,
    config: RolloutConfig,
    lake: Lake,
    registry: ModelRegistry,
    notifier: FailureNotifier,
    tracker: ExperimentTracker,
) -> pl.DataFrame:
    """The champion and each challenger on the same customers, once their outcomes are known: the evidence of safe rollout.

    On day D, the scores made a label horizon earlier (the champion's own
    horizon) have matured: a customer churned when they bought nothing since.
    Pooled over up to `min_matured_days` matured days, each challenger (scored
    in shadow on the same customers) is compared with the champion: ROC-AUC,
    log loss, calibration error and precision at the contact budget, each
    difference with a bootstrap confidence interval. The policy then acts, at
    most once per event: it rolls a champion back to the previous one when its
    matured ROC-AUC is confidently below the floor, or the previous champion
    beats it with confidence; it promotes a challenger that wins by the margin
    with confidence over enough matured days. A version it rolled back is never
    promoted by it again. Each action is a registry event with its evidence and
    an alert; scoring uses the new champion from the next partition.
    """
    rows: list[dict[str, Any]] = []
    days = partition_days(context)
    ticker = Ticker("rollout_evaluation", len(days), context.log.info)
    for done, day in enumerate(days):
        ticker.tick(done)
        champion = trusted_champion(registry, "rollout_evaluation")
        if champion is None:
            raise dg.Failure("rollout_evaluation: the registry has no champion; materialize training_job first")
        evaluated = _evaluate(day, champion, config, lake)
        metadata: dict[str, Any] = {"champion": champion.version, "label_horizon_days": champion.horizon_days or 0}
        if isinstance(evaluated, str):
            metadata.update(status=evaluated, verdict="none")
        else:
            own, comparisons = evaluated
            verdict = rollout_verdict(
                own, comparisons, registry.previous_champion(), registry.auto_blocked(), _promotable(registry), config.policy()
            )
            acted = _act(context, verdict, champion, registry, notifier)
            if acted != "nothing":  # MLflow's aliases follow the registry's new champion and challenger
                metadata.update(tracker.mirror_aliases(registry, context.log.warning))
            metadata.update(_figures(own, comparisons), status="evaluated", verdict=verdict.action, reason=verdict.reason, acted=acted)
            rows += [_row(day, c, m) for c in comparisons for m in c.difference]
        context.add_asset_metadata(metadata, partition_key=day.isoformat())
    schema = {"snapshot_date": pl.Date, "champion": pl.String, "challenger": pl.String, "metric": pl.String, "days": pl.Int64}
    schema |= {k: pl.Float64 for k in ("champion_value", "challenger_value", "difference", "low", "high")}
    return pl.DataFrame(rows, schema=schema)


def _evaluate(day: dt.date, champion: ModelVersion, config: RolloutConfig, lake: Lake) -> str | tuple[Matured, list[Comparison]]:
    """The pooled matured comparison for the champion as of ``day``, or why there is none yet."""
    horizon = champion.horizon_days
    if not horizon:
        return "the champion records no label horizon; retrain (training_job) to judge it on outcomes"
    scored, features = set(lake.existing_partitions(SHADOW)), set(lake.existing_partitions(CUSTOMER_FEATURES))
    pooled: list[pl.DataFrame] = []
    for i in range(config.min_matured_days):
        when, known = day - dt.timedelta(days=horizon + i), day - dt.timedelta(days=i)
        if when.isoformat() not in scored or known.isoformat() not in features:
            continue
        scores = lake.read_partitions(SHADOW, [when.isoformat()])
        own = scores.filter(pl.col("model_version") == champion.version)
        if own.is_empty():
            continue  # that day was scored by an earlier champion
        last = lake.read_partitions(CUSTOMER_FEATURES, [known.isoformat()], columns=["customer_id", "last_tx_ts"])
        labels = churn_labels(own.select("customer_id", "snapshot_date"), last, when).select("customer_id", "churned")
        wide = scores.pivot(on="model_version", index=["customer_id", "snapshot_date"], values="churn_probability")
        pooled.append(labels.join(wide, on="customer_id", how="inner"))
    if not pooled:
        return f"no matured scores of {champion.version} yet (its scores mature {horizon} days after they are made)"
    import numpy as np

    frame = pl.concat(pooled, how="diagonal_relaxed")
    y = frame["churned"].to_numpy()
    if len(np.unique(y)) < 2:
        return f"matured scores of {champion.version} have a single outcome class; nothing to rank yet"
    days = frame["snapshot_date"].n_unique()
    versions = [c for c in frame.columns if c not in ("customer_id", "snapshot_date", "churned", champion.version)]
    # Challengers scored on every pooled customer share the champion's bootstrap draws; one that started scoring
    # part-way through the pool is compared on its own customers.
    whole = [v for v in versions if frame[v].null_count() == 0]
    budget, confidence, resamples = config.contact_budget, config.confidence, config.resamples
    own, comparisons = judge(
        y,
        frame[champion.version].to_numpy(),
        {v: frame[v].to_numpy() for v in whole},
        champion=champion.version,
        days=days,
        budget=budget,
        confidence=confidence,
        resamples=resamples,
    )
    for version in [v for v in versions if v not in whole]:
        both = frame.filter(pl.col(version).is_not_null())
        yb = both["churned"].to_numpy()
        if both.height and len(np.unique(yb)) == 2:
            comparisons.append(
                compare(
                    yb,
                    both[champion.version].to_numpy(),
                    both[version].to_numpy(),
                    champion=champion.version,
                    challenger=version,
                    days=both["snapshot_date"].n_unique(),
                    budget=budget,
                    confidence=confidence,
                    resamples=resamples,
                )
            )
    return own, comparisons


def _promotable(registry: ModelRegistry) -> set[str]:
    return {v.version for v in registry.versions() if v.promotable}


def _act(
    context: dg.AssetExecutionContext, verdict: Verdict, champion: ModelVersion, registry: ModelRegistry, notifier: FailureNotifier
) -> str:
    """Apply the verdict through the registry (once per event) and alert; what was done."""
    run_id = context.run.run_id
    if verdict.action == "rollback" and verdict.target:
        if registry.auto_rollback(
            to=verdict.target, from_=champion.version, reason=verdict.reason, evidence=verdict.evidence, run_id=run_id
        ):
            context.log.warning(f"rollout_evaluation: rolled back {champion.version} -> {verdict.target}: {verdict.reason}")
            sent = notifier.alert(
                "rollback",
                champion.version,
                f"churn: automatic rollback {champion.version} -> {verdict.target}: {verdict.reason}",
                verdict.evidence,
                run_id,
            )
            return f"rolled back to {verdict.target} (alert: {sent})"
    if verdict.action == "promote" and verdict.target:
        if registry.auto_promote(verdict.target, over=champion.version, reason=verdict.reason, evidence=verdict.evidence, run_id=run_id):
            context.log.info(f"rollout_evaluation: promoted {verdict.target} over {champion.version}: {verdict.reason}")
            key = f"{verdict.target}:{champion.version}"
            sent = notifier.alert(
                "promotion",
                key,
                f"churn: {verdict.target} promoted over {champion.version} on live outcomes: {verdict.reason}",
                verdict.evidence,
                run_id,
            )
            return f"promoted {verdict.target} (alert: {sent})"
    return "nothing"


def _figures(own: Matured, comparisons: list[Comparison]) -> dict[str, Any]:
    return {
        "matured_days": own.days,
        "matured_rows": own.rows,
        "champion_matured_roc_auc": own.roc_auc.estimate,
        "champion_matured_roc_auc_low": own.roc_auc.low,
        "champion_matured_roc_auc_high": own.roc_auc.high,
        "challengers": dg.MetadataValue.json({c.challenger: c.as_dict() for c in comparisons}),
    }


def _row(day: dt.date, c: Comparison, metric: str) -> dict[str, Any]:
    d = c.difference[metric]
    return {
        "snapshot_date": day,
        "champion": c.champion,
        "challenger": c.challenger,
        "metric": metric,
        "days": c.days,
        "champion_value": c.champion_metrics[metric],
        "challenger_value": c.challenger_metrics[metric],
        "difference": d.estimate,
        "low": d.low,
        "high": d.high,
    }
