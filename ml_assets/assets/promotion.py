"""Promotion: which registered model is the champion that scoring uses, decided by a gate, reversible by rollback."""

from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.governance import run_identity
from lib.promotion import GATE_METRICS, BestBaseline, decide, eligibility
from lib.records import BaselineRecord, ChampionDecision, ModelRecord
from lib.training import feature_matrix
from ml_assets.champion import load_onnx, trusted_champion
from ml_assets.metadata import markdown_table
from ml_assets.run_config import default_of
from resources import ArtifactStore, ExperimentTracker, FailureNotifier, Lake, ModelRegistry
from resources.registry import ModelVersion


class ChampionConfig(dg.Config):
    metric: str = Field(
        default="roc_auc",
        description=f"Metric that decides promotion, one of {sorted(GATE_METRICS)}: the backtest's picks the best candidate "
        "(roc_auc, pr_auc), the test split's compares it with the current champion on the same rows.",
    )
    min_improvement: float = Field(
        default=0.002, description="A candidate replaces the champion only if it is better on `metric` by at least this much."
    )
    baseline_margin: float = Field(
        default=default_of("champion_model", "baseline_margin"),
        description="A candidate is eligible only if its out-of-time backtest ROC-AUC beats the best baseline (recency, BG/NBD) "
        "by at least this much (baseline_margin).",
    )
    contact_budget: float = Field(
        default=default_of("champion_model", "contact_budget"),
        description="The business view on the test split: the top share of customers a retention team contacts (rollout.contact_budget).",
    )
    rollback_to: str | None = Field(
        default=None,
        description="Rollback: make this earlier model version (e.g. lgbm-0123456789ab) champion again, skipping the gate. "
        "Needs requested_by and reason.",
    )
    requested_by: str = Field(
        default="",
        description="Rollback: who asks for it, as they say (recorded as a claim in the reason; the registry's actor is the "
        "run's launcher from Dagster's own run tags).",
    )
    reason: str = Field(default="", description="Rollback: why (recorded in the registry).")


def _score(version: ModelVersion, x: Any, artifacts: ArtifactStore) -> Any:
    from lib.export import onnx_churn_probability

    return onnx_churn_probability(load_onnx(version, artifacts), x)


@dg.asset(
    group_name="registry",
    kinds={"onnx", "sql"},
    owners=["team:ml-platform"],
)
def champion_model(
    context: dg.AssetExecutionContext,
    config: ChampionConfig,
    lgbm_onnx: ModelRecord,
    torch_onnx: ModelRecord,
    stacked_onnx: ModelRecord,
    bgnbd_onnx: ModelRecord,
    baseline_model: BaselineRecord,
    training_set: pl.DataFrame,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    notifier: FailureNotifier,
    lake: Lake,
    tracker: ExperimentTracker,
) -> ChampionDecision:
    """The model that batch scoring and serving use now: the registry's champion.

    A learned candidate (LightGBM, the PyTorch network, LightGBM stacked with
    BG/NBD) is eligible only with a passed ONNX parity check and
    an out-of-time backtest ROC-AUC that beats the best baseline (recency or
    BG/NBD, on the same cutoffs) by `baseline_margin`: a model that loses to
    a classical baseline is never promoted. When none is eligible, the BG/NBD
    model (`bgnbd_onnx`) is the candidate instead. Eligible candidates and the
    current champion are scored with their
    ONNX artifacts on the same test rows. The best candidate is promoted only
    if it beats the champion on `metric` by `min_improvement`; the first model
    ever becomes champion. Otherwise the champion stays and the metadata says
    why. Every decision is recorded in the registry with the run id.

    The champion's model card (one HTML page) is linked here (`model_card`) and
    from `churn registry`, beside the contact list's business view.

    Rollback: materialize this asset alone with `rollback_to` (a version),
    `requested_by` and `reason` in the launchpad config; that version becomes
    champion again and the registry records who, when and why.
    """
    if config.metric not in GATE_METRICS:
        raise dg.Failure(f"champion_model: metric {config.metric!r} is not one of {sorted(GATE_METRICS)}")
    if config.rollback_to:
        return _rollback(context, config, registry, artifacts, tracker)

    test = training_set.filter(pl.col("split") == "test")
    features = lgbm_onnx.features
    # Every version as far as the registry's hash chain proves it: a digest swapped behind its back fails the run here.
    learned = [_trusted(registry, r.model_version) for r in (lgbm_onnx, torch_onnx, stacked_onnx)]
    fallback = _trusted(registry, bgnbd_onnx.model_version)
    candidates = [*learned, fallback]
    gate = eligibility(learned, fallback, BestBaseline(baseline_model.best, baseline_model.best_backtest_roc_auc), config.baseline_margin)
    refused = gate.refused
    current = trusted_champion(registry, "champion_model")
    if refused:
        key = ",".join(sorted(refused))
        notifier.alert("gate", key, f"churn: the promotion gate refused {key}: {refused}", {"refused": refused}, context.run.run_id)
    if not gate.eligible and current is None:
        raise dg.Failure(
            f"champion_model: no champion yet and no candidate may become one: {refused}. Scoring needs a champion that beats "
            "the baselines out of time: give the models more history (more labelled snapshots), or lower baseline_margin "
            "knowingly (settings file or CHURN_BASELINE_MARGIN)."
        )
    evaluated = _evaluate_on_test(gate.eligible, current, features, test, artifacts)
    verdict = decide(gate.eligible, current, evaluated, config.metric, config.min_improvement)
    decision, winner, previous = verdict.action, verdict.winner, (current.version if current else None)
    reason = verdict.reason if gate.eligible else f"no candidate is eligible ({refused}); the champion stays {previous}"
    if decision == "promoted":
        registry.promote(winner, actor=run_identity(context.run.run_id, context.run.tags), reason=reason, run_id=context.run.run_id)
        text = f"churn: {winner} promoted to champion (was {previous or 'none'}): {reason}"
        notifier.alert("promotion", f"{winner}:{previous}", text, {"champion": winner, "previous": previous}, context.run.run_id)
    else:
        registry.keep(previous, reason=reason, run_id=context.run.run_id, candidate=verdict.candidate)
    context.log.info(f"champion_model: {decision}: {reason}")
    champion = registry.champion()
    if champion is None or champion.version != winner:
        raise dg.Failure(
            f"champion_model: the registry champion changed under this run (expected {winner}, found {champion and champion.version})"
        )
    rows, backtest = _tables(registry, evaluated, winner, previous, baseline_model, candidates)
    views = {"comparison": rows, "refused": refused, "backtest": backtest}
    views["extra"] = _views(champion, decision, reason, test, backtest, config.contact_budget, artifacts, lake)
    views["extra"].update(tracker.mirror_aliases(registry, context.log.warning))  # MLflow's aliases follow the decision
    return _output(context, champion, decision, reason, previous, registry, evaluated, **views)


def _views(
    champion: ModelVersion,
    decision: str,
    reason: str,
    test: pl.DataFrame,
    backtest: list[dict[str, Any]],
    budget: float,
    artifacts: ArtifactStore,
    lake: Lake,
) -> dict[str, Any]:
    """The champion's business view on the test split and its model card, as metadata: its artifact loaded and the
    test rows scored once for both."""
    from lib.business import VALUE_COLUMN

    if test.is_empty():
        return {"business_view_test_split": "_no test rows_"}
    from lib.export import onnx_churn_probability
    from ml_assets.assets.card import write_card

    session = load_onnx(champion, artifacts)
    scores = onnx_churn_probability(session, feature_matrix(test, tuple(champion.features)))
    business, view_rows = _business(champion, test, scores, budget) if VALUE_COLUMN in test.columns else ({}, [])
    card = write_card(champion, decision, reason, test, scores, session, backtest, view_rows, budget, artifacts, lake)
    url = card if "://" in card else f"file://{card}"
    return business | {"model_card": dg.MetadataValue.url(url), "model_card_path": dg.MetadataValue.path(card)}


def _business(champion: ModelVersion, test: pl.DataFrame, scores: Any, budget: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What contacting the champion's top `budget` of the test split's customers finds and is worth (lib/business.py)."""
    from lib.business import VALUE_COLUMN, business_view, gains_figure, view_table
    from ml_assets.metadata import figure_markdown

    y = test["churned"].to_numpy()
    view = business_view(scores, test[VALUE_COLUMN].to_numpy(), budget, y)
    title = f"{champion.version} on the test split ({len(y):,} rows), contact budget {budget:.0%}"
    rows = view_table(view)
    return {
        "business_view_test_split": dg.MetadataValue.md(markdown_table(pl.DataFrame(rows))),
        "gains_and_lift_test_split": figure_markdown(gains_figure(y, scores, budget, title), "cumulative gains and lift"),
        **{f"test_{k}": round(view[k], 5) for k in ("precision_at_budget", "recall_at_budget", "lift_at_budget")},
        "test_expected_revenue_at_risk_top_k": round(view["expected_revenue_at_risk_top_k"], 2),
        "test_expected_revenue_at_risk_value_ranked": round(view["expected_revenue_at_risk_value_ranked"], 2),
    }, rows


def _evaluate_on_test(
    eligible: list[ModelVersion], current: ModelVersion | None, features: tuple[str, ...], test: pl.DataFrame, artifacts: ArtifactStore
) -> dict[str, dict[str, float]]:
    """Each eligible candidate and the current champion, scored by its ONNX artifact on the same test rows."""
    from lib.evaluation import classification_metrics

    y, x = test["churned"].to_numpy(), feature_matrix(test, features)
    evaluated: dict[str, dict[str, float]] = {}
    for model in [*eligible, *([current] if current and current.version not in {c.version for c in eligible} else [])]:
        if tuple(model.features) != features:
            raise dg.Failure(
                f"champion_model: {model.version} was trained on features {model.features}, the candidates on {list(features)}; "
                "they cannot be compared on the same rows. Roll back explicitly (rollback_to) if that is intended."
            )
        evaluated[model.version] = classification_metrics(y, _score(model, x, artifacts))
    return evaluated


def _tables(
    registry: ModelRegistry,
    evaluated: dict[str, dict[str, float]],
    winner: str,
    previous: str | None,
    baseline_model: BaselineRecord,
    candidates: list[ModelVersion],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The test-split comparison of the models evaluated, and the backtest of every candidate beside the baselines."""
    rows = [
        {
            "version": v,
            "kind": registry.get(v).kind,
            "role": "champion" if v == winner else ("previous champion" if v == previous else "candidate"),
            **{m: round(evaluated[v][m], 5) for m in ("roc_auc", "pr_auc", "log_loss", "brier", "ece")},
        }
        for v in evaluated
    ]
    backtest = [
        {
            "model": name,
            "kind": "baseline",
            "backtest_roc_auc": _round(b.get("backtest_roc_auc")),
            "backtest_pr_auc": _round(b.get("backtest_pr_auc")),
        }
        for name, b in baseline_model.baselines.items()
    ] + [
        {
            "model": c.version,
            "kind": c.kind,
            "backtest_roc_auc": _round(c.metrics.get("backtest_roc_auc")),
            "backtest_pr_auc": _round(c.metrics.get("backtest_pr_auc")),
        }
        for c in candidates
    ]
    return rows, backtest


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 5)


def _rollback(
    context: dg.AssetExecutionContext, config: ChampionConfig, registry: ModelRegistry, artifacts: ArtifactStore, tracker: ExperimentTracker
) -> ChampionDecision:
    from resources import ArtifactIntegrityError
    from resources.registry import RegistryError

    if not config.requested_by.strip() or not config.reason.strip():
        raise dg.Failure("champion_model rollback needs `requested_by` and `reason` in the run config; they are recorded in the registry")
    previous = registry.champion()
    try:
        target = registry.trusted(registry.get(config.rollback_to or ""))
        # The artifact must still be there and intact before it is made champion.
        artifacts.get(target.onnx_uri or "", target.onnx_sha256 or "")
        registry.promote(
            target.version,
            actor=run_identity(context.run.run_id, context.run.tags),
            reason=f"{config.reason} (requested by {config.requested_by!r}, as given in the run config)",
            run_id=context.run.run_id,
            action="rolled_back",
        )
    except (RegistryError, ArtifactIntegrityError) as exc:
        raise dg.Failure(f"champion_model: rollback to {config.rollback_to!r} refused: {exc}") from exc
    champion = registry.get(target.version)
    reason = f"rolled back to {target.version} by {config.requested_by}: {config.reason}"
    context.log.warning(f"champion_model: {reason}")
    aliases = tracker.mirror_aliases(registry, context.log.warning)
    return _output(context, champion, "rolled_back", reason, previous.version if previous else None, registry, {}, extra=aliases)


def _trusted(registry: ModelRegistry, version: str) -> ModelVersion:
    from resources.registry import ChainMismatch

    try:
        return registry.trusted(registry.get(version))
    except ChainMismatch as exc:
        raise dg.Failure(f"champion_model: {exc}", metadata={"chain_problems": "\n".join(exc.problems)}) from None


def _output(
    context: dg.AssetExecutionContext,
    champion: ModelVersion,
    decision: str,
    reason: str,
    previous: str | None,
    registry: ModelRegistry,
    evaluated: dict[str, dict[str, float]],
    comparison: list[dict[str, Any]] | None = None,
    refused: dict[str, str] | None = None,
    backtest: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> ChampionDecision:
    history = pl.DataFrame(
        [{k: e[k] for k in ("at", "action", "version", "previous_champion", "actor", "reason")} for e in registry.events(15)],
        schema={k: pl.String for k in ("at", "action", "version", "previous_champion", "actor", "reason")},
    )
    context.add_output_metadata(
        {
            "champion_version": champion.version,
            "champion_kind": champion.kind,
            "decision": decision,
            "reason": reason,
            "previous_champion": previous or "none",
            "onnx_uri": dg.MetadataValue.path(champion.onnx_uri or ""),
            "onnx_sha256": champion.onnx_sha256 or "",
            "comparison_on_test_split": dg.MetadataValue.md(markdown_table(pl.DataFrame(comparison)) if comparison else "_not evaluated_"),
            "backtest_vs_baselines": dg.MetadataValue.md(markdown_table(pl.DataFrame(backtest)) if backtest else "_not evaluated_"),
            "refused_candidates": dg.MetadataValue.json(refused or {}),
            "champion_is_baseline": champion.kind == "bgnbd",
            "registry_events": dg.MetadataValue.md(markdown_table(history)),
            **(extra or {}),
        }
    )
    return ChampionDecision(
        champion_version=champion.version,
        kind=champion.kind,
        decision=decision,
        reason=reason,
        previous_champion=previous,
        onnx_uri=champion.onnx_uri,
        onnx_sha256=champion.onnx_sha256,
        features=tuple(champion.features),
        horizon_days=champion.horizon_days,
        evaluated=evaluated,
    )
