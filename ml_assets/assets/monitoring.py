"""Monitoring: daily data, prediction and (once labels mature) performance drift against the champion's training reference."""

import datetime as dt
import io
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.drift import DriftResult, active_customers, compute_drift, judged, sample_rows
from lib.drift_report import (
    LIB_DIR,
    demoted_latest,
    lib_files,
    read_verdict,
    render_report,
    report_placement,
    verdict_page,
    verdict_record,
)
from lib.export import onnx_churn_probability
from lib.features import WINDOW_DAYS
from lib.progress import Ticker
from ml_assets.champion import Champion, current_champion
from ml_assets.metadata import markdown_table
from ml_assets.partitions import daily_partitions, partition_days
from ml_assets.run_config import default_of
from resources import ArtifactStore, Lake, MissingPartitionError, ModelRegistry
from resources.registry import ModelVersion, RegistryError

CUSTOMER_FEATURES = dg.AssetKey("customer_features")
BATCH_PREDICTIONS = dg.AssetKey("batch_predictions")
# Where each day's page (DAY.html) and verdict (DAY.json) go; LATEST_MARKER names the newest day with a full report
# for being the newest. LEGACY_LATEST: where an earlier version kept that day's report (emptied on the next run).
REPORTS, LATEST_MARKER, LEGACY_LATEST = "drift_reports", "latest-day.txt", "drift_reports/latest"


class DriftConfig(dg.Config):
    column_threshold: float = Field(default=0.1, description="A column drifts when its normed Wasserstein distance reaches this.")
    drift_share_threshold: float = Field(
        default=default_of("drift_report", "drift_share_threshold"),
        description="The day shows dataset drift when this share of feature columns (ageing features excluded) drift (drift_share_threshold).",
    )
    reference_lag_days: int = Field(
        default=default_of("drift_report", "reference_lag_days"),
        description="The reference is the population this many days earlier (drift_reference_lag_days); the champion's training "
        "sample until that day exists.",
    )
    max_reference_rows: int = Field(default=5_000, description="Rows (seeded sample) of the reference.")
    max_current_rows: int = Field(default=5_000, description="Rows sampled (seeded) from the day's features.")
    render_every_day: bool = Field(
        default=False,
        description="The full HTML drift report (evidently's plots) for every day; by default drift events and the newest "
        "day have one, every other day a verdict page (`churn report drift DAY` adds the plots on demand).",
    )
    report_plots: int = Field(
        default=6,
        ge=0,
        description="A full report plots at most this many of the columns that reached the threshold, the farthest first "
        "(about a quarter of a second each); 0 plots every one, as `churn report drift DAY` does. The verdict table names all.",
    )
    max_roc_auc_drop: float = Field(
        default=0.05, description="Performance drift when matured ROC-AUC falls this far below the scoring model's backtest ROC-AUC."
    )
    contact_budget: float = Field(
        default=default_of("drift_report", "contact_budget"),
        description="The business view: the top share of customers by score a retention team contacts (rollout.contact_budget).",
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"evidently", "parquet"},
    owners=["team:ml-platform"],
    metadata={"partition_expr": "snapshot_date"},
    deps=["champion_model"],
    # Read by the asset a day at a time (features and scores of 30 days at 10 M transactions a year are 8.4 M rows
    # each): the IO manager would load every day of both at once.
    ins={"customer_features": dg.AssetIn(dagster_type=dg.Nothing), "batch_predictions": dg.AssetIn(dagster_type=dg.Nothing)},
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    lake: Lake,
) -> pl.DataFrame:
    """How far this day's customers and churn scores have moved from the same population a few weeks earlier.

    One row per monitored column: its drift score (normed Wasserstein distance,
    in reference standard deviations) and whether it drifted; `prediction` is
    the churn score. Compared are the day's active customers and the active
    customers `reference_lag_days` (28) earlier, scored by the same champion
    (its training sample until that day exists), so the ageing of a
    whole-history population does not count. A column drifts when its distance
    reaches the threshold and a permutation test says sampling alone could not
    give it (tails capped first; lib/drift.py); ageing features are scored but
    not counted, and no verdict is given while the windows fill. The metadata
    carries the share, the verdict, `drift_reason` (why the day did or did not
    count) and a link to the day's page (lib/drift_report.py): the full report
    for events and the newest day, else the verdict. Once scores are a horizon old
    (the champion's own), matured ROC-AUC and calibration against the scoring
    model's figures are added (performance drift). The business view: each
    day's contact list (the top `contact_budget` of customers by score) and
    its expected revenue at risk; once matured, what that list caught
    (precision, recall, lift, the churners' spend) with the gains and lift plot.
    """
    champion = current_champion(registry, artifacts, "drift_report")
    features = list(champion.features)
    references = _References(champion, config, lake, artifacts)
    validated = lake.existing_partitions(dg.AssetKey("validated_transactions"))
    first_day = dt.date.fromisoformat(validated[0]) if validated else None
    columns = [*features, "prediction"]
    keys = ["customer_id", "snapshot_date"]
    days = partition_days(context)
    read = _DayReader(lake, [d.isoformat() for d in days], keys)
    rows = []
    reported = lake.existing_partitions(dg.AssetKey("drift_report"))
    ticker = Ticker("drift_report", len(days), context.log.info)
    for done, day in enumerate(days):
        ticker.tick(done)
        key = day.isoformat()
        day_features, day_scores = read.day(key)
        if day_features.is_empty() or day_scores.is_empty():
            raise dg.Failure(f"drift_report {key}: no scored customers on this day; there is nothing to compare")
        part = active_customers(day_features.join(day_scores, on=keys, how="inner"))
        current = sample_rows(
            part.select(*features, pl.col("churn_probability").alias("prediction")).to_pandas(), config.max_current_rows, seed=13
        )
        ref_frame, reference_name = references.for_day(day)
        verdict = judged(first_day, day - dt.timedelta(days=config.reference_lag_days), WINDOW_DAYS)
        result = compute_drift(ref_frame, current, columns, config.column_threshold, config.drift_share_threshold, verdict)
        latest = day == days[-1] and key >= max(reported, default="")
        samples = (ref_frame, current, reference_name)
        report = _report(artifacts, key, result, samples, config.render_every_day, latest, config.report_plots)
        # Labels need every customer scored that day, not only the active ones.
        performance = matured_performance(
            day, day_features, champion.horizon_days, config.max_roc_auc_drop, lake, registry, config.contact_budget
        )
        business = todays_list(day_features, day_scores, keys, config.contact_budget)
        rows += [(day, c, result.column_scores[c], result.drifted(c)) for c in columns]
        metadata = {
            **_verdict_metadata(result, config.drift_share_threshold),
            "reference": reference_name,
            **report,
            "current_rows": len(current),
            "reference_rows": len(ref_frame),
            "model_version": champion.version,
            **business,
            **performance,
        }
        context.add_asset_metadata(metadata, partition_key=key)
        # The reason names only column names and figures: no client value reaches the log.
        (context.log.warning if result.dataset_drift else context.log.info)(f"drift_report {key}: {result.reason}")
    return pl.DataFrame(
        rows, schema={"snapshot_date": pl.Date, "column": pl.String, "drift_score": pl.Float64, "drifted": pl.Boolean}, orient="row"
    )


def _report(
    artifacts: ArtifactStore,
    key: str,
    result: DriftResult,
    samples: tuple[Any, Any, str],
    asked: bool,
    latest: bool,
    plots: int = 0,
) -> dict[str, Any]:
    """The day's page, so the UI's link works for every day (lib.drift_report).

    Drift events, asked-for days and the newest day get the full report
    (the verdict and evidently's plots of at most `report_plots` columns;
    building it is most of a day's drift work); every other day gets the verdict page, a few kB. Each day's
    verdict is stored beside its page as JSON, which is what turns the
    previous newest day's full report into a verdict page once a newer day
    is reported, without its samples. evidently's bundle and font are
    stored once, under `drift_reports/_lib/`, for every full report.
    """
    reference, current, reference_name = samples
    full = report_placement(result.dataset_drift, asked, latest)
    if full == "latest":
        _demote_previous_latest(artifacts, key)
    if full is None:
        page = verdict_page(result, key, reference_name)
    else:
        stored = set(artifacts.list_named(f"{REPORTS}/{LIB_DIR}"))
        for name, data in lib_files().items():
            if name not in stored:
                artifacts.put_named(f"{REPORTS}/{LIB_DIR}", name, data)
        page = render_report(reference, current, result, key, f"{LIB_DIR}/", plots)
    verdict = artifacts.put_named(REPORTS, f"{key}.json", verdict_record(result, key, reference_name, full))
    report = artifacts.put_named(REPORTS, f"{key}.html", page)
    if full == "latest":
        artifacts.put_named(REPORTS, LATEST_MARKER, key.encode())
    for name in artifacts.list_named(LEGACY_LATEST):  # the folder an earlier version kept the newest quiet day in
        artifacts.remove_named(LEGACY_LATEST, name)
    described = {
        "drift event": "full report (drift event)",
        "asked": "full report (asked for)",
        "latest": "full report (the newest day; a verdict page once a newer day is reported)",
        None: f"verdict page (no drift event); `churn report drift {key}` adds evidently's plots",
    }
    return {
        "report": described[full],
        "report_path": dg.MetadataValue.path(report.uri),
        "report_url": dg.MetadataValue.url(_file_url(report.uri)),
        "report_bytes": report.size_bytes,
        "verdict_path": dg.MetadataValue.path(verdict.uri),
    }


def _demote_previous_latest(artifacts: ArtifactStore, key: str) -> None:
    """The day that was the newest reported loses the full report it had for being the newest (lib.drift_report.demoted_latest)."""
    marker = artifacts.read_named(REPORTS, LATEST_MARKER)
    try:
        previous = dt.date.fromisoformat(marker.decode().strip()).isoformat() if marker else None
    except ValueError:  # not a day: nothing of ours to demote
        previous = None
    stored = artifacts.read_named(REPORTS, f"{previous}.json") if previous else None
    if previous is None or stored is None:
        return
    result, record = read_verdict(stored)
    had = record.get("full_report")
    if demoted_latest(previous, str(had) if had else None, key):
        reference = str(record.get("reference", ""))
        artifacts.put_named(REPORTS, f"{previous}.html", verdict_page(result, previous, reference))
        artifacts.put_named(REPORTS, f"{previous}.json", verdict_record(result, previous, reference, None))


class _DayReader:
    """The run's days of features and scores from the lake, one day at a time; before any, the check that every
    customer with features was scored (keys only, every day: fails before anything is reported)."""

    NEEDED = " (needed by drift_report)"

    def __init__(self, lake: Lake, days: list[str], keys: list[str]) -> None:
        self.lake, self.keys = lake, keys
        unscored = (
            lake.read_partitions(CUSTOMER_FEATURES, days, needed_by=self.NEEDED, columns=keys)
            .join(lake.read_partitions(BATCH_PREDICTIONS, days, needed_by=self.NEEDED, columns=keys), on=keys, how="anti")
            .height
        )
        if unscored:
            raise dg.Failure(
                f"drift_report: {unscored} customers have features but no prediction; re-materialize batch_predictions for these days"
            )

    def day(self, key: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the day's features, its scores: customer_id, snapshot_date, churn_probability)."""
        features = self.lake.read_partitions(CUSTOMER_FEATURES, [key], needed_by=self.NEEDED)
        return features, self.lake.read_partitions(
            BATCH_PREDICTIONS, [key], needed_by=self.NEEDED, columns=[*self.keys, "churn_probability"]
        )


class _References:
    """The population a day is compared with: the active customers `reference_lag_days` earlier, scored by the same
    champion, or the champion's own training sample until that day exists."""

    def __init__(self, champion: Champion, config: DriftConfig, lake: Lake, artifacts: ArtifactStore) -> None:
        model = champion.model
        if not model.reference_uri or not model.reference_sha256:
            raise dg.Failure(
                f"drift_report: champion {champion.version} has no stored training reference; retrain (training_job) to create one"
            )
        self.champion, self.config, self.lake = champion, config, lake
        self.training = pl.read_parquet(io.BytesIO(artifacts.get(model.reference_uri, model.reference_sha256)))
        self.existing = set(lake.existing_partitions(CUSTOMER_FEATURES))

    def for_day(self, day: dt.date) -> tuple[Any, str]:
        features = list(self.champion.features)
        lagged = (day - dt.timedelta(days=self.config.reference_lag_days)).isoformat()
        frame, name = self.training, f"training sample of {self.champion.version}"
        if lagged in self.existing:
            frame, name = self.lake.read_partitions(CUSTOMER_FEATURES, [lagged], columns=features), f"active customers on {lagged}"
        ref = sample_rows(active_customers(frame).select(features).to_pandas(), self.config.max_reference_rows, seed=11)
        ref["prediction"] = onnx_churn_probability(self.champion.session, ref[features].to_numpy())
        return ref, name


def _verdict_metadata(result: DriftResult, drift_share_threshold: float) -> dict[str, Any]:
    """The day's drift verdicts as the sensor and the UI read them; `dataset_drift` is the one verdict on the share."""
    return {
        "drift_share": result.drift_share,
        "drift_share_threshold": drift_share_threshold,
        "dataset_drift": result.dataset_drift,
        "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
        "ageing_drifted_columns": dg.MetadataValue.json(result.ageing_drifted),
        "drift_status": "judged" if result.judged else f"warming up: the {WINDOW_DAYS}-day windows of the reference day are not full yet",
        "drift_reason": result.reason,
        "chance_columns": dg.MetadataValue.json(result.chance_columns),
        "column_p_values": dg.MetadataValue.json({c: round(v, 4) for c, v in result.p_values.items()}),
        "n_drifted_columns": len(result.drifted_columns),
        "prediction_drift_score": float(result.prediction_score or 0.0),
        "prediction_drift": result.prediction_drift,
        "column_scores": dg.MetadataValue.json({c: round(v, 4) for c, v in result.column_scores.items()}),
    }


def todays_list(features: pl.DataFrame, scores: pl.DataFrame, keys: list[str], budget: float) -> dict[str, Any]:
    """The day's contact list (every scored customer): its size and the expected revenue at risk on it (lib/business.py)."""
    from lib.business import VALUE_COLUMN, business_view

    if VALUE_COLUMN not in features.columns:
        return {}
    joined = scores.join(features.select(*keys, VALUE_COLUMN), on=keys, how="left")
    view = business_view(joined["churn_probability"].to_numpy(), joined[VALUE_COLUMN].to_numpy(), budget)
    if not view:
        return {}
    return {
        "contact_budget": budget,
        "contact_list_customers": int(view["contacted"]),
        "expected_revenue_at_risk_top_k": round(view["expected_revenue_at_risk_top_k"], 2),
        "expected_revenue_at_risk_value_ranked": round(view["expected_revenue_at_risk_value_ranked"], 2),
        "expected_revenue_at_risk_all": round(view["expected_revenue_at_risk_all"], 2),
    }


def matured_business(scored: pl.DataFrame, today: pl.DataFrame, when: dt.date, lake: Lake, budget: float) -> dict[str, Any]:
    """What the contact list of ``when`` caught once its outcomes matured: precision, recall (churn caught), lift, revenue,
    and the cumulative gains and lift plot."""
    from lib.business import VALUE_COLUMN, business_view, gains_figure, view_table
    from lib.features import churn_labels
    from ml_assets.metadata import figure_markdown

    try:
        spend = lake.read_partitions(dg.AssetKey("customer_features"), [when.isoformat()], columns=["customer_id", VALUE_COLUMN])
    except MissingPartitionError:
        return {"matured_business_view": f"_the features of {when} are no longer in the lake (retention); no business view_"}
    labelled = churn_labels(scored, today.select("customer_id", "last_tx_ts"), when).join(spend, on="customer_id", how="left")
    y, scores = labelled["churned"].to_numpy(), labelled["churn_probability"].to_numpy()
    view = business_view(scores, labelled[VALUE_COLUMN].to_numpy(), budget, y)
    title = f"scores of {when} with their matured outcomes ({len(y):,} customers), contact budget {budget:.0%}"
    return {
        **{f"matured_{k}": round(view[k], 5) for k in ("precision_at_budget", "recall_at_budget", "lift_at_budget")},
        "matured_revenue_of_churners_caught": round(view["revenue_of_churners_caught"], 2),
        "matured_value_ranked_precision": round(view["value_ranked_precision"], 5),
        "matured_value_ranked_revenue_of_churners_caught": round(view["value_ranked_revenue_of_churners_caught"], 2),
        "matured_business_view": dg.MetadataValue.md(markdown_table(pl.DataFrame(view_table(view)))),
        # Every matured day carries one: smaller than the model pages' plots, it keeps the event log lean.
        "matured_gains_and_lift": figure_markdown(gains_figure(y, scores, budget, title), "cumulative gains and lift, matured", dpi=50),
    }


def matured_performance(
    day: dt.date,
    today: pl.DataFrame,
    horizon_days: int | None,
    max_roc_auc_drop: float,
    lake: Lake,
    registry: ModelRegistry,
    budget: float | None = None,
) -> dict[str, Any]:
    """The verdict (lib/performance.py) on the scores made a horizon before ``day``, with the horizon of the model scoring now.

    Scores of that day by a model of another horizon mature on another day and are left out.
    """
    from lib.performance import performance_verdict, promised_roc_auc, scored_day

    if horizon_days is None:
        return {"performance_status": "the champion records no label horizon; retrain (training_job) to judge matured scores"}
    when = scored_day(day, horizon_days)
    key = BATCH_PREDICTIONS
    if when.isoformat() not in set(lake.existing_partitions(key)):
        return {"performance_status": f"no scores on {when} to evaluate yet", "label_horizon_days": horizon_days}
    scored = lake.read_partitions(key, [when.isoformat()])
    models: dict[str, ModelVersion | None] = {}
    for version in scored["model_version"].unique().to_list() if scored.height else []:
        try:
            models[version] = registry.get(version)
        except RegistryError:  # scored by a version this registry never saw: nothing to compare with
            models[version] = None
    other = [v for v, m in models.items() if m is not None and m.horizon_days not in (None, horizon_days)]
    if other:
        scored = scored.filter(~pl.col("model_version").is_in(other))
    kept = [m for v, m in models.items() if v not in other]
    promise = promised_roc_auc(kept[0].metrics) if len(kept) == 1 and kept[0] is not None else None
    verdict = performance_verdict(scored, today, when, promise, max_roc_auc_drop)
    if budget is not None and verdict.get("performance_status") == "evaluated":
        verdict.update(matured_business(scored, today, when, lake, budget))
    return {"label_horizon_days": horizon_days, **verdict}


def _file_url(uri: str) -> str:
    return uri if "://" in uri else f"file://{uri}"
