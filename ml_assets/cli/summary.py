"""The summary `churn demo` and `churn run` print: rows per stage, model figures, drift days, where things are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

    from lib.settings import Settings


class Materializations:
    """The newest materialization metadata of an asset (or one of its partitions) in an instance."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance

    def latest(self, key: str, partition: str | None = None) -> dict[str, Any]:
        import dagster as dg

        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None), limit=1
        ).records
        return dict(records[0].asset_materialization.metadata) if records else {}

    def total_rows(self, key: str, start: dt.date, end: dt.date) -> int:
        n = 0
        for i in range((end - start).days + 1):
            md = self.latest(key, (start + dt.timedelta(days=i)).isoformat())
            n += int(md["dagster/row_count"].value) if "dagster/row_count" in md else 0
        return n


def summarize(
    instance: dg.DagsterInstance,
    data_root: Path,
    start: dt.date,
    end: dt.date,
    score_from: dt.date,
    loop: str = "",
    drift_note: str = "",
) -> str:
    """Rows per stage, model metrics, drift verdicts and where things are."""
    from lib.settings import load_settings
    from resources import build_registry

    md = Materializations(instance)
    loaded = load_settings()
    lines = ["Summary", "-------"]
    lines += _data_lines(md, start, end)
    lines += _model_lines(md, build_registry(resolve_env=True), end)
    lines += _scoring_lines(md, score_from, end, drift_note)
    if loop:
        lines.append(f"{'closed loop':28s} {loop}")
    lines += _where_lines(loaded, data_root)
    return "\n".join(lines)


def _data_lines(md: Materializations, start: dt.date, end: dt.date) -> list[str]:
    lines = [f"{key:28s} {md.total_rows(key, start, end):>10,} rows ({start}..{end})" for key in STAGE_KEYS]
    unplaceable = md.latest("unplaceable_transactions")
    if unplaceable:
        reasons = unplaceable["by_reason"].value or {}
        lines.append(
            f"{'unplaceable_transactions':28s} {int(unplaceable['dagster/row_count'].value):>10,} rows on no day of the calendar "
            f"{reasons if reasons else ''} ({unplaceable['path'].value})"
        )
    feats = md.latest("customer_features", end.isoformat())
    lines.append(f"{'customer_features':28s} {int(feats['dagster/row_count'].value):>10,} customers on {end}")
    ts = md.latest("training_set")
    lines.append(
        f"{'training_set':28s} {int(ts['dagster/row_count'].value):>10,} labelled snapshots, churn rate {ts['churn_rate'].value:.1%}"
    )
    return lines


STAGE_KEYS = ("raw_transactions", "validated_transactions", "quarantined_transactions")


def _model_lines(md: Materializations, registry: Any, end: dt.date) -> list[str]:
    lines = []
    base = md.latest("baseline_model")
    if base:
        lines.append(
            f"{'baseline_model':28s} backtest ROC-AUC recency {base['recency_backtest_roc_auc'].value:.3f}, "
            f"BG/NBD {base['bgnbd_backtest_roc_auc'].value:.3f} ranked by {base['bgnbd_ranking'].value if 'bgnbd_ranking' in base else '?'} "
            f"(out of time, {base['horizon_days'].value}-day horizon)"
            if "bgnbd_backtest_roc_auc" in base
            else f"{'baseline_model':28s} no backtest cutoff with matured labels"
        )
    for key in ("lgbm_model", "torch_model", "stacked_model"):
        model = md.latest(key)
        if model is None:
            continue  # a run from before the stack existed
        version = registry.get(model["model_version"].value)
        parity = version.parity or {}
        worst = max((v["max_abs_diff"] for v in parity.values() if isinstance(v, dict)), default=float("nan"))
        device = f", {model['device'].value}" if "device" in model else ""
        lines.append(
            f"{key:28s} backtest ROC-AUC {model['backtest_roc_auc'].value:.3f}  PR-AUC {model['backtest_pr_auc'].value:.3f}  "
            f"(test split: ROC-AUC {model['test_roc_auc'].value:.3f}, ECE {model['test_ece'].value:.3f})  "
            f"({version.version}{device}; ONNX parity max {worst:.1e}, {'passed' if version.parity_passed else 'FAILED'})"
        )
    fd = md.latest("feature_definitions")
    online = md.latest("online_features", end.isoformat())
    if fd and online:
        lines.append(
            f"{'feature store (Feast)':28s} {int(fd['feature_count'].value)} features in {fd['online_store'].value} online store, "
            f"snapshot {online['snapshot_date'].value} ({int(online['customers'].value):,} customers); training_set read them in "
            f"{md.latest('training_set')['feast_seconds'].value:.1f}s"
        )
    champion = md.latest("champion_model")
    lines.append(f"{'champion_model':28s} {champion['champion_version'].value}: {champion['decision'].value}, {champion['reason'].value}")
    lines.append(_champion_line(registry.get(champion["champion_version"].value)))
    if "test_precision_at_budget" in champion:
        lines.append(
            f"{'contact list, test split':28s} top of the contact budget by P(churn): precision "
            f"{champion['test_precision_at_budget'].value:.3f}, churn caught {champion['test_recall_at_budget'].value:.3f}, "
            f"lift {champion['test_lift_at_budget'].value:.2f}"
        )
    if "model_card_path" in champion:
        lines.append(f"{'model card':28s} {champion['model_card_path'].value}")
    return lines


def _champion_line(version: Any) -> str:
    """The figures of the model that scores (not of this run's candidates, which may have been refused)."""
    if version is None:
        return f"{'scoring with':28s} no champion"
    m = version.metrics
    figures = f"backtest ROC-AUC {m['backtest_roc_auc']:.3f}" if "backtest_roc_auc" in m else "no backtest figure"
    if "test_roc_auc" in m:
        figures += f", test split ROC-AUC {m['test_roc_auc']:.3f}"
    if "backtest_margin_vs_bgnbd" in m:
        low, high = m.get("backtest_margin_vs_bgnbd_low", float("nan")), m.get("backtest_margin_vs_bgnbd_high", float("nan"))
        figures += f", margin over BG/NBD {m['backtest_margin_vs_bgnbd']:+.4f} [{low:+.4f}, {high:+.4f}] (95 %, backtest)"
    return f"{'scoring with':28s} {version.version} ({version.kind}, trained in run {str(version.run_id)[:8]}): {figures}"


def _scoring_lines(md: Materializations, score_from: dt.date, end: dt.date, drift_note: str) -> list[str]:
    drift_days = []
    day = score_from
    while day <= end:
        report = md.latest("drift_report", day.isoformat())
        if report and report["dataset_drift"].value:
            drift_days.append(day)
        day += dt.timedelta(days=1)
    first = drift_days[0].isoformat() if drift_days else "none"
    return [
        f"{'batch_predictions':28s} {md.total_rows('batch_predictions', score_from, end):>10,} scores ({score_from}..{end})",
        f"{'drift_report':28s} dataset drift on {len(drift_days)} of {(end - score_from).days + 1} days, "
        f"first {first}" + (f" ({drift_note})" if drift_note else ""),
    ]


def _where_lines(loaded: Settings, data_root: Path) -> list[str]:
    import sqlalchemy as sa

    from resources import default_warehouse_url

    where = (
        "CHURN_WAREHOUSE_URL (from the environment)"
        if "CHURN_WAREHOUSE_URL" in loaded.environment
        else sa.make_url(loaded.source.url or default_warehouse_url(loaded)).render_as_string(hide_password=True)
    )
    registry_where = (
        "CHURN_REGISTRY_URL (from the environment)" if loaded.deployment.registry_url else loaded.deployment.data_path / "registry.sqlite"
    )
    return [
        "",
        f"lake:      {loaded.deployment.lake}",
        f"artifacts: {loaded.deployment.artifacts} (models, ONNX, drift_reports/DAY.html and DAY.json)",
        f"registry:  {registry_where} (model versions, champion, hash-chained history, API keys, prediction record)",
        f"source:    table {loaded.source.table!r} in {where}",
        f"feast:     {data_root / 'feast'} (registry, {loaded.deployment.online_store} online store); "
        f"CLI: .venv/bin/feast -c {loaded.deployment.feast_repo_path} feature-views list",
        "",
        "Open the UI on this instance with:  make ui   (then http://127.0.0.1:3000)",
        "Score online:  KEY=$(.venv/bin/churn apikey create me --scope predict)  then  make serve  "
        "(send Authorization: Bearer $KEY; docs/operations.md)",
    ]
