"""Feature store: the Feast definitions, the online store, and the training/serving skew check."""

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.features import cutoff_for, model_features
from ml_assets.metadata import markdown_table
from ml_assets.partitions import daily_partitions, partition_days
from resources import Lake
from resources.feature_store import FeatureStoreError, FeatureStoreResource

CUSTOMER_FEATURES = dg.AssetKey("customer_features")
ONLINE_FEATURES = dg.AssetKey("online_features")


@dg.asset(
    deps=[CUSTOMER_FEATURES],
    group_name="feature_store",
    kinds={"feast"},
    owners=["team:data-science"],
)
def feature_definitions(context: dg.AssetExecutionContext, feature_store: FeatureStoreResource, lake: Lake) -> dg.MaterializeResult:
    """The Feast feature repository as registered: entity `customer`, feature view `customer_features`
    over the customer_features Parquet partitions, feature service `churn_model` (what every model reads).

    Training sets, batch scoring and the online store all read features through
    this one definition, so what a model trains on and what it is served
    cannot diverge. Re-applying is idempotent; a changed definition shows up
    here and in `feast -c feature_repo feature-views list`.
    """
    # The view's schema is the lake's: the columns the newest customer_features partition holds
    # (features that need a column the source lacks do not exist).
    days = lake.existing_partitions(CUSTOMER_FEATURES)
    if not days:
        raise dg.Failure("feature_definitions: no customer_features partition in the lake yet; materialize customer_features first")
    newest = lake.read_partitions(CUSTOMER_FEATURES, [days[-1]]).clear()
    summary = feature_store.apply(model_features(newest))
    config_path = feature_store.write_config()
    views = summary["feature_views"]
    rows = pl.DataFrame(
        {
            "feature_view": list(views),
            "features": [len(v["features"]) for v in views.values()],
            "ttl_seconds": [v["ttl_seconds"] for v in views.values()],
        }
    )
    context.log.info(f"feast: registered {', '.join(views)}; services {summary['feature_services']}")
    return dg.MaterializeResult(
        metadata={
            "feature_views": dg.MetadataValue.md(markdown_table(rows)),
            "registered": dg.MetadataValue.json(summary),
            "feature_count": sum(len(v["features"]) for v in views.values()),
            "feature_store_yaml": dg.MetadataValue.path(str(config_path)),
            "online_store": feature_store.online_store,
            "offline_store": feature_store.offline_store,
            "registry": "sql" if feature_store.registry_url else "file",
        }
    )


class OnlineFeaturesConfig(dg.Config):
    skew_sample: int = Field(default=500, description="Customers compared between the online and the offline store per run.")
    seed: int = Field(default=7, description="Seed of the skew-check sample.")


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[CUSTOMER_FEATURES, "feature_definitions"],
    # One writer at a time across runs (limit 1 set by `make instance`, and by
    # the instance's default pool limit): two runs scoring different days at
    # once would otherwise race, the older day could overwrite the newer
    # snapshot, and each skew check would see the other run's values. Found by
    # ml_assets_tests/system/test_faults.py::test_concurrent_scoring_runs_and_a_retrain_do_not_interfere.
    # The pool queues the second run instead of holding a worker on a lock; the
    # guarantee is the store's own writer lock in the body (Dagster's slot
    # claim is not atomic across processes, on SQLite or PostgreSQL storage).
    pool="feast_online",
    group_name="feature_store",
    kinds={"feast", "sqlite"},
    owners=["team:ml-platform"],
    check_specs=[
        dg.AssetCheckSpec(
            "training_serving_skew",
            asset="online_features",
            description="For a sample of customers, the online store's feature values and timestamps equal the offline store's "
            "point-in-time values for the same snapshot. Blocking: batch scoring does not run on a skewed store.",
            blocking=True,
        )
    ],
)
def online_features(
    context: dg.AssetExecutionContext, config: OnlineFeaturesConfig, feature_store: FeatureStoreResource, lake: Lake
) -> dg.MaterializeResult:
    """The latest customer snapshot loaded into the Feast online store, where low-latency scoring reads it.

    The online store serves one snapshot: the newest day materialized. A run
    over older days (a backfill) refreshes the newest one instead of moving the
    store back in time. Every customer of the history is in each daily
    snapshot (unless `population_days` limits it: then a customer who drops
    out keeps their last online value, with its timestamp).
    """
    # Dagster's record of loaded days covers stores loaded before the store
    # kept its own record of the day it serves.
    newest_done = [dt.date.fromisoformat(k) for k in context.instance.get_materialized_partitions(ONLINE_FEATURES)]
    load = load_online_snapshot(
        feature_store, lake, [*partition_days(context), *newest_done], config.skew_sample, config.seed, context.log.info
    )
    target, snapshot, sample, mismatches = load.target, load.snapshot, load.sample, load.mismatches
    context.log.info(f"online_features: snapshot {target} ({snapshot.height} customers) in the {feature_store.online_store} online store")
    return dg.MaterializeResult(
        metadata={
            "snapshot_date": target.isoformat(),
            "customers": snapshot.height,
            "online_store": feature_store.online_store,
            # Seconds spent waiting for another run's load of the online store.
            "writer_lock_wait_s": round(load.lock_wait_s, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="training_serving_skew",
                passed=mismatches.is_empty(),
                description=None
                if mismatches.is_empty()
                else f"{mismatches['customer_id'].n_unique()} of {sample.height} sampled customers differ",
                metadata={
                    "sampled_customers": sample.height,
                    "mismatched_values": mismatches.height,
                    "snapshot_date": target.isoformat(),
                    "mismatches": dg.MetadataValue.md(markdown_table(mismatches.head(50)) if mismatches.height else "none"),
                },
            )
        ],
    )


@dataclass(frozen=True)
class OnlineLoad:
    target: dt.date  # the snapshot day the store now serves
    snapshot: pl.DataFrame  # that day's customer_features partition
    sample: pl.DataFrame  # the customers the skew check compared
    mismatches: pl.DataFrame  # what `skew` found for them
    lock_wait_s: float  # waiting for another writer's load


def load_online_snapshot(
    feature_store: FeatureStoreResource,
    lake: Lake,
    days: list[dt.date],
    skew_sample: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> OnlineLoad:
    """Load the newest of `days` and of the day the store already serves into the online store, then check it for skew.

    All of it under the store's writer lock: another run loading a different
    day in between would make the check compare the wrong snapshot, and leave
    the store on whichever day wrote last. The store never moves back in time:
    Redis ignores values older than those it holds, and a SQLite store would
    otherwise go back to an older day, so an older day refreshes the newer one.
    """
    asked = time.monotonic()
    with feature_store.exclusive_online_writes():
        lock_wait_s = time.monotonic() - asked
        served = feature_store.served_snapshot()
        target = max([*days, *([served] if served else [])])
        if target == served and target not in days and not lake.path_for(CUSTOMER_FEATURES, target.isoformat(), ".parquet").exists():
            # The store serves a day this lake has never had (a lake rebuilt over
            # other dates, a second deployment sharing the store's project).
            raise FeatureStoreError(
                f"the {feature_store.online_store} online store of project {feature_store.project!r} serves the snapshot of "
                f"{served}, newer than {max(days)} and absent from this lake's customer_features; an online store never "
                "goes back to an older day. Use a Feast project of its own for this lake (CHURN_FEAST_PROJECT), "
                f"or, if its data is no longer wanted, clear it: {feature_store.clear_hint()}"
            )
        cutoff = cutoff_for(target)
        # Rows of day D carry feature_timestamp = cutoff(D) exactly; a window of
        # +-12 h around it picks that snapshot and no other.
        feature_store.materialize(cutoff - dt.timedelta(hours=12), cutoff + dt.timedelta(hours=12), progress)
        feature_store.record_served_snapshot(target)
        snapshot = lake.read_partitions(CUSTOMER_FEATURES, [target.isoformat()], needed_by=" (needed by online_features)")
        sample = snapshot.sample(n=min(skew_sample, snapshot.height), seed=seed) if snapshot.height else snapshot
        mismatches = skew(feature_store, sample.select("customer_id", "feature_timestamp"))
    return OnlineLoad(target, snapshot, sample, mismatches, lock_wait_s)


def skew(feature_store: FeatureStoreResource, entities: pl.DataFrame) -> pl.DataFrame:
    """(customer, feature, offline, online) for every value the online store serves differently from the offline store.

    The offline side is Feast's point-in-time read at the snapshot's
    timestamp; the online side must hold exactly that snapshot (same values,
    same event timestamp).
    """
    if entities.is_empty():
        return _mismatch_frame([])
    offline = feature_store.historical(entities.rename({"feature_timestamp": "event_timestamp"}))
    online = feature_store.online(entities["customer_id"].to_list())
    offline_by_id = {r["customer_id"]: r for r in offline.iter_rows(named=True)}
    columns = model_features(offline)
    rows: list[dict[str, Any]] = []
    for served in online.iter_rows(named=True):
        cid = served["customer_id"]
        expected = offline_by_id.get(cid)
        for c in columns:
            want = None if expected is None else expected[c]
            got = served.get(c)
            if want != got:
                rows.append({"customer_id": cid, "feature": c, "offline": _show(want), "online": _show(got)})
        want_ts = None if expected is None else int(expected["event_timestamp"].replace(tzinfo=dt.UTC).timestamp())
        got_ts = served.get(f"{columns[0]}__ts")
        if want_ts != got_ts:
            rows.append({"customer_id": cid, "feature": "event_timestamp", "offline": _show(want_ts), "online": _show(got_ts)})
    return _mismatch_frame(rows)


def _show(value: Any) -> str:
    return "missing" if value is None else repr(value)


def _mismatch_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"customer_id": pl.String, "feature": pl.String, "offline": pl.String, "online": pl.String})
