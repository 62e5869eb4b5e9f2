"""Batch scoring on one machine, a day at a time: Feast's rows in chunks, every active model's scores, each day's
reasons on its highest served scores, and the day written as soon as its last row is scored.

A range run (30 days at 10 M transactions a year: 8.4 M served scores and four times as many shadow scores) holds
one chunk of feature values and the days not yet complete, never the whole range: the IO manager would receive every
day's rows at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import dagster as dg
import numpy as np
import polars as pl

from lib.export import score_frame
from lib.progress import Ticker
from lib.rollout import CANARY_ARM, CHAMPION_ARM, arm_of
from ml_assets.champion import Champion
from resources import FeatureStoreResource

SHADOW_COLUMNS = ["customer_id", "snapshot_date", "model_version", "role", "churn_probability"]

# (day, served scores with reasons, every model's scores): what is done with a complete day.
DayWriter = Callable[[dt.date, pl.DataFrame, pl.DataFrame], None]


def score_days(
    context: dg.AssetExecutionContext,
    feature_store: FeatureStoreResource,
    entities: pl.DataFrame,
    models: tuple[Champion, list[Champion], Champion | None],
    canary_share: float,
    reasons_share: float,
    write: DayWriter,
) -> set[dt.date]:
    """Score ``entities`` (customer_id, snapshot_date, event_timestamp) through Feast, a chunk of rows at a time, and
    ``write`` each day once complete; the days written. ``models``: the champion, the challengers, the canary."""
    champion, challengers, canary = models
    arms: dict[str, str] = {}
    missing, done, written = 0, 0, set()
    ticker = Ticker("batch_predictions", entities.height, context.log.info, unit="rows")
    days = DayBuffer(entities, [m for m in (champion, canary) if m is not None and m.explainer is not None], reasons_share)
    reasons = Ticker("batch_predictions: reasons", days.to_explain, context.log.info, unit="rows")
    # A chunk of Feast rows at a time (in time order): a range run holds its predictions, not every day's feature values.
    for chunk, rows in feature_store.historical_chunks(entities):
        features = chunk.join(rows.drop("snapshot_date", strict=False), on=["customer_id", "event_timestamp"], how="left")
        missing += features.filter(pl.any_horizontal(pl.col(list(champion.features)).is_null())).height
        if not missing:
            scores = {
                m.version: score_frame(m.session, features, m.features, m.version) for m in [champion, *scorable(challengers, features)]
            }
            shadow = pl.concat(
                [s.with_columns(pl.lit("champion" if v == champion.version else "challenger").alias("role")) for v, s in scores.items()]
            ).select(SHADOW_COLUMNS)
            # A day's reasons go to its highest scores, known once its last row is scored; at scale (a network champion)
            # they are the slow part and report how far they are.
            for day in days.add(served_scores(scores, champion, canary, canary_share, arms), features, shadow):
                served, shadow_day = days.explained(day, champion, canary, reasons)
                write(day, served, shadow_day)
                written.add(day)
        done += chunk.height
        ticker.tick(done)
        del features, rows
    if missing:
        raise dg.Failure(
            f"batch_predictions: the feature store returned no features for {missing} of {entities.height} customers; "
            "re-materialize feature_definitions and online_features for these days"
        )
    return written


class DayBuffer:
    """Each day's served scores (with the explained models' features) and shadow scores, held until the day's last row
    is scored.

    The reasons go to the ``share`` of each day's highest served scores (`lib.explain.explained_positions`), which
    are known only then: Feast's chunks follow time, so a day can span two chunks, and a chunk hold two days.
    """

    def __init__(self, entities: pl.DataFrame, explained: list[Champion], share: float) -> None:
        from lib.explain import explained_count

        self.left = {day: n for day, n in entities.group_by("snapshot_date").len().iter_rows()}
        self.features = sorted({f for m in explained for f in m.explainer.features}) if explained else []  # type: ignore[union-attr]
        self.share, self.done = share, 0
        self.parts: dict[dt.date, list[pl.DataFrame]] = {}
        self.shadow: dict[dt.date, list[pl.DataFrame]] = {}
        self.to_explain = sum(explained_count(n, share) for n in self.left.values()) if explained else 0

    def add(self, served: pl.DataFrame, features: pl.DataFrame, shadow: pl.DataFrame | None = None) -> list[dt.date]:
        """Hold one chunk (``features``: the same rows, in order; ``shadow``: every model's scores of them); the days
        it completes."""
        both = pl.concat([served, features.select([f for f in self.features if f in features.columns])], how="horizontal")
        for (day,), part in (shadow.partition_by("snapshot_date", as_dict=True) if shadow is not None else {}).items():
            self.shadow.setdefault(day, []).append(part)
        complete = []
        for (day,), part in both.partition_by("snapshot_date", as_dict=True, maintain_order=True).items():
            self.parts.setdefault(day, []).append(part)
            self.left[day] -= part.height
            if self.left[day] == 0:
                complete.append(day)
        return complete

    def explained(self, day: dt.date, champion: Champion, canary: Champion | None, ticker: Ticker) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the day's served scores with reasons on its highest ones and nulls on the rest, its shadow scores); the day
        is let go."""
        from lib.explain import explained_positions, served_reasons

        whole = pl.concat(self.parts.pop(day), how="vertical")
        shadow = pl.concat(self.shadow.pop(day), how="vertical") if day in self.shadow else pl.DataFrame()
        columns = [c for c in whole.columns if c not in self.features]
        if not self.to_explain:  # rollout.reasons off: nothing is explained
            return pl.concat([whole.select(columns), served_reasons(whole.height, [])], how="horizontal"), shadow
        ids = whole["customer_id"].cast(pl.String).to_list()
        picked = pl.Series(np.isin(np.arange(whole.height), explained_positions(whole["churn_probability"].to_numpy(), ids, self.share)))
        whole = whole.with_row_index("_row")
        top, rest = whole.filter(picked), whole.filter(~picked)
        explained = with_reasons(top.select("_row", *columns), top, champion, canary, lambda n, before=self.done: ticker.tick(before + n))
        self.done += top.height
        ticker.tick(self.done)
        rest = pl.concat([rest.select("_row", *columns), served_reasons(rest.height, [])], how="horizontal")
        return pl.concat([explained, rest]).sort("_row").drop("_row"), shadow  # the rows in the order they were scored


def scorable(challengers: list[Champion], features: pl.DataFrame) -> list[Champion]:
    """The challengers whose features the feature service serves (a model of another feature set is skipped)."""
    return [c for c in challengers if all(f in features.columns for f in c.features)]


def served_scores(
    scores: dict[str, pl.DataFrame], champion: Champion, canary: Champion | None, share: float, arms: dict[str, str]
) -> pl.DataFrame:
    """The served score per customer: the champion's, or in the canary arm the canary challenger's."""
    base = scores[champion.version].with_columns(pl.lit(CHAMPION_ARM).alias("arm"))
    if canary is None or canary.version not in scores:
        return base
    ids = base["customer_id"].to_list()
    arm = [arms.setdefault(c, arm_of(c, share)) for c in ids]
    in_canary = pl.Series("in_canary", [a == CANARY_ARM for a in arm])
    other = scores[canary.version]
    return base.with_columns(
        pl.when(in_canary).then(other["churn_probability"]).otherwise(pl.col("churn_probability")).alias("churn_probability"),
        pl.when(in_canary).then(pl.lit(canary.version)).otherwise(pl.col("model_version")).alias("model_version"),
        pl.when(in_canary).then(pl.lit(CANARY_ARM)).otherwise(pl.lit(CHAMPION_ARM)).alias("arm"),
    )


def with_reasons(
    served: pl.DataFrame,
    features: pl.DataFrame,
    champion: Champion,
    canary: Champion | None,
    progress: Callable[[int], None] | None = None,
) -> pl.DataFrame:
    """The served scores with the reasons of the model that served each (``features``: the same rows, in order); null
    reasons where that model is not explained (rollout.reasons off). ``progress(rows)``: rows explained so far."""
    from lib.explain import served_reasons
    from lib.training import feature_matrix

    parts = []
    for model, arm in ((champion, CHAMPION_ARM), (canary, CANARY_ARM)):
        mask = served["arm"] == arm
        if model is not None and model.explainer is not None and mask.any():
            parts.append((model.explainer, mask.arg_true().to_numpy(), feature_matrix(features.filter(mask), model.explainer.features)))
    return pl.concat([served, served_reasons(served.height, parts, progress)], how="horizontal")
