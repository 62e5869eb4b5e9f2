"""Great Expectations suites for raw transactions and customer features (framework-free).

Suites are defined here, in code, and run in an ephemeral GX context: nothing
to deploy, and a rule change is a reviewed code change.

Row rules drive the quarantine: each expectation carries the name of the rule
in its ``meta``, GX reports the rows that break it (``unexpected_index_list``
over a row-number column), and a row goes to quarantine with the names of every
rule it broke.  Where GX has no expectation for a property (a NaN that pandas
would call null, an id seen in an earlier partition, a value that was not a
number in the source) a helper column states the property and a GX
expectation checks it, so the verdicts and their counts all come from one
validation result.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import polars as pl

from lib.contract import customer_id_ok_expr
from lib.schema import CATEGORIES, CHANNELS, PAYMENT_METHODS, RAW_COLUMNS

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

MAX_AMOUNT = 100_000.0
MAX_QUANTITY = 1_000
ROW = "__row"
TYPE_ERRORS = "_type_errors"
ROW_DAY = "partition_date"
# The vocabularies features use per categorical column; validation counts values outside them, it does not reject them.
KNOWN_VALUES: dict[str, tuple[str, ...]] = {"channel": CHANNELS, "category": CATEGORIES, "payment_method": PAYMENT_METHODS}


@dataclass(frozen=True)
class RawContract:
    """What the rules may expect of one source: which optional columns it has and what the user declared."""

    present: frozenset[str] = frozenset(n for n in RAW_COLUMNS)
    # True when the source has no transaction id and ingestion derived one: no duplicate rules then.
    derived_ids: bool = False
    # A regular expression the whole customer id must match; None: printable, 1 to 64 characters, no surrounding space.
    customer_id_pattern: str | None = None
    # Categorical columns whose values must be in the given set (rows outside are quarantined); others are open.
    closed_vocabularies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # A zero amount (free items, promotions): "keep" as a purchase with no spend, or "quarantine" it (source.zero_amount).
    zero_amount: str = "keep"

    def customer_id_rule(self) -> str:
        return (
            f"customer_id matches {self.customer_id_pattern!r} (whole value)"
            if self.customer_id_pattern
            else ("customer_id is printable text of 1 to 64 characters without leading or trailing white space")
        )


@dataclass(frozen=True)
class Rule:
    """One property a good row has, checked by one GX expectation."""

    name: str
    description: str
    expectation: Callable[[], Any]


def _expect(kind: str, **kwargs: Any) -> Callable[[Any], Any]:
    """A factory of the GX expectation ``kind`` with these arguments, given the expectations module."""
    return lambda gxe: getattr(gxe, kind)(**kwargs)


def _amount_specs(zero_amount: str = "keep") -> list[tuple[str, str, Callable[[Any], Any]]]:
    """The amount's rules: present, finite, positive (or zero, kept as a purchase without spend), plausible.

    The rule keeps its name `amount_positive` under either setting, so quarantine catalogs stay comparable."""
    keep = zero_amount == "keep"
    return [
        # pandas shows both null and NaN as NaN: the helper keeps them apart.
        ("amount_not_null", "amount is present", lambda gxe: gxe.ExpectColumnValuesToBeInSet(column="__amount_null", value_set=[False])),
        (
            "amount_finite",
            "amount is a finite number",
            lambda gxe: gxe.ExpectColumnValuesToBeInSet(column="__amount_finite", value_set=[True]),
        ),
        (
            "amount_positive",
            "amount >= 0 (zero kept: source.zero_amount keep)" if keep else "amount > 0 (source.zero_amount quarantine)",
            lambda gxe: gxe.ExpectColumnValuesToBeBetween(column="__amount_finite_value", min_value=0, strict_min=not keep),
        ),
        (
            "amount_plausible",
            f"amount <= {MAX_AMOUNT:,.0f}",
            lambda gxe: gxe.ExpectColumnValuesToBeBetween(column="__amount_finite_value", max_value=MAX_AMOUNT),
        ),
    ]


def raw_rule_specs(contract: RawContract) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(name, description, expectation factory given the GX expectations module) for the source's contract."""
    present = contract.present
    specs: list[tuple[str, str, Callable[[Any], Any]]] = [
        (f"{name}_not_null", f"{name} is present", _expect("ExpectColumnValuesToNotBeNull", column=name))
        # An optional column is optional as a column; when the source has it, its values are required
        # (features are computed from them), except payment_method, which may be blank.
        for name in ("transaction_id", "customer_id", "ts", "quantity", "channel", "category")
        if name in present and not (name == "transaction_id" and contract.derived_ids)
    ]
    specs += _amount_specs(contract.zero_amount)
    if "quantity" in present:
        specs.append(
            (
                "quantity_in_range",
                f"1 <= quantity <= {MAX_QUANTITY} (when given)",
                lambda gxe: gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1, max_value=MAX_QUANTITY),
            )
        )
    for column, values in sorted(contract.closed_vocabularies.items()):
        if column in present:
            specs.append(
                (
                    f"{column}_known",
                    f"{column} is null or in {list(values)} (closed vocabulary)",
                    _expect("ExpectColumnValuesToBeInSet", column=column, value_set=list(values)),
                )
            )
    specs += [
        (
            "customer_id_well_formed",
            contract.customer_id_rule(),
            lambda gxe: gxe.ExpectColumnValuesToBeInSet(column="__customer_id_ok", value_set=[True]),
        ),
        (
            "ts_in_partition",
            "timestamp falls inside the partition's UTC day",
            lambda gxe: gxe.ExpectColumnValuesToBeBetween(column="__seconds_into_day", min_value=0, max_value=86_400, strict_max=True),
        ),
        (
            "ts_not_in_future",
            "timestamp is not later than the time of validation",
            lambda gxe: gxe.ExpectColumnValuesToBeInSet(column="__in_future", value_set=[False]),
        ),
    ]
    if "transaction_id" in present and not contract.derived_ids:
        specs += [
            (
                "transaction_id_unique",
                "transaction_id appears once in the run (the first occurrence is kept)",
                lambda gxe: gxe.ExpectColumnValuesToBeBetween(column="__occurrence", max_value=0),
            ),
            (
                "transaction_id_new",
                "transaction_id was not already recorded on an earlier day",
                lambda gxe: gxe.ExpectColumnValuesToBeInSet(column="__seen_before", value_set=[False]),
            ),
        ]
    specs.append(
        (
            "values_have_expected_types",
            "every value could be read as its column's type",
            lambda gxe: gxe.ExpectColumnValuesToBeNull(column=TYPE_ERRORS),
        )
    )
    return specs


def raw_row_rules(contract: RawContract | None = None) -> list[Rule]:
    import great_expectations.expectations as gxe

    return [Rule(name, text, functools.partial(factory, gxe)) for name, text, factory in raw_rule_specs(contract or RawContract())]


def raw_rule_names(contract: RawContract | None = None) -> tuple[str, ...]:
    """The rule names without importing great-expectations (it costs seconds): for metadata and docs."""
    return tuple(name for name, _, _ in raw_rule_specs(contract or RawContract()))


RAW_RULE_NAMES = raw_rule_names()


@dataclass
class Outcome:
    """One expectation's verdict, shaped for check metadata."""

    rule: str
    success: bool
    observed: Any
    expected: str
    unexpected_rows: list[int] = field(default_factory=list)


@dataclass
class QuarantineResult:
    valid: pl.DataFrame
    rejected: pl.DataFrame
    outcomes: list[Outcome]

    def counts(self) -> dict[str, int]:
        return {o.rule: len(o.unexpected_rows) for o in self.outcomes if o.unexpected_rows}


@cache
def _context() -> gx.data_context.AbstractDataContext:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Progress bars would go to the run's stderr once per validation.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def run_suite(frame: pd.DataFrame | Any, suite_name: str, rules: Iterable[Rule], index_column: str | None = None) -> list[Outcome]:
    """Validate a pandas frame, or a Spark DataFrame in GX's Spark engine, against the rules, one GX validation for all of them.

    A pandas frame is emptied afterwards (its columns dropped in place): pass a copy made for the call."""
    import great_expectations as gx

    ctx = _context()
    # A Spark DataFrame is validated where it lives: GX runs the same expectations as Spark aggregations.
    spark = hasattr(frame, "sparkSession")
    source = ctx.data_sources.add_or_update_spark("churn_spark") if spark else ctx.data_sources.add_or_update_pandas("churn")
    asset_name = f"{suite_name}_frame"
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(asset_name)
    try:
        batch_definition = asset.get_batch_definition("whole")
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    rules = list(rules)
    suite = gx.ExpectationSuite(name=suite_name)
    for rule in rules:
        expectation = rule.expectation()
        expectation.meta = {"rule": rule.name, "description": rule.description}
        suite.add_expectation(expectation)
    # On Spark only the counts: COMPLETE would collect every unexpected value to the driver. Without an index column
    # nothing here reads the unexpected values either: BASIC keeps the counts and skips building every failing value's
    # list (a day of customer features, 387 k rows: 3.8 -> 2.5 s).
    result_format: dict[str, Any] = {"result_format": "SUMMARY" if spark else "COMPLETE" if index_column else "BASIC"}
    if index_column:
        result_format["unexpected_index_column_names"] = [index_column]
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    validation = batch.validate(suite, result_format=result_format)
    outcomes = []
    for res in validation.results:
        cfg = res.expectation_config
        rule = (cfg.meta or {}).get("rule", cfg.type)
        details = res.result or {}
        rows = [int(entry[index_column]) for entry in details.get("unexpected_index_list") or []] if index_column else []
        observed = details.get("observed_value", details.get("unexpected_count", 0))
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {rule} could not run: {res.exception_info.get('exception_message')}")
        outcomes.append(Outcome(rule, bool(res.success), _plain(observed), _describe(cfg), rows))
    if not spark:
        # GX's batch objects refer to each other in cycles that hold the frame, and in a run process (Dagster, torch,
        # GX: millions of long-lived objects) Python's full collection comes seldom: at 10 M transactions a year 21 of
        # the feature suite's frames (160 MB each) were still held at the end of customer_features. The frame is this
        # call's own (a pandas copy made for it): emptied here, whatever still refers to it holds no rows. A full
        # gc.collect() did the same for 0.65 s a call.
        frame.drop(columns=list(frame.columns), inplace=True)
    return outcomes


def _describe(cfg: Any) -> str:
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    return f"{cfg.type}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return value


def partition_day(days: list[dt.date]) -> pl.Expr:
    """The run day a raw row belongs to: the day ingestion assigned (``partition_date``) when the frame has it,
    else its timestamp's day, or the run's first day when the timestamp is missing or outside the run."""
    day = pl.col("ts").dt.date()
    return pl.when(day.is_in(days)).then(day).otherwise(pl.lit(days[0]))


def unknown_values(frame: pl.DataFrame, contract: RawContract, known_values: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
    """Rows per open categorical column whose value is outside the vocabulary features use: counted, not quarantined."""
    counts = {}
    for column, known in {**KNOWN_VALUES, **(known_values or {})}.items():
        if column in contract.present and column not in contract.closed_vocabularies and column in frame.columns:
            n = frame.select((pl.col(column).is_not_null() & ~pl.col(column).is_in(list(known))).sum()).item()
            if n:
                counts[column] = int(n)
    return counts


def quarantine(
    frame: pl.DataFrame, days: list[dt.date], seen_before: set[int], now: dt.datetime, contract: RawContract | None = None
) -> QuarantineResult:
    """Split raw rows into valid rows and quarantined rows with ``rejected_reasons``.

    ``days`` are the partitions of the run; each row belongs to the day
    ingestion assigned it (``partition_date``), or its timestamp's day.  Every
    input row ends up in exactly one output.
    """
    contract = contract or RawContract()
    if TYPE_ERRORS not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(TYPE_ERRORS))
    if ROW_DAY not in frame.columns:
        frame = frame.with_columns(partition_day(days).alias(ROW_DAY))
    amount = pl.col("amount")
    helper = frame.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW),
        (pl.col("customer_id").is_null() | customer_id_ok_expr(contract.customer_id_pattern)).alias("__customer_id_ok"),
    ).with_columns(
        amount.is_null().alias("__amount_null"),
        (amount.is_null() | amount.is_finite()).alias("__amount_finite"),
        pl.when(amount.is_finite()).then(amount).alias("__amount_finite_value"),
        (pl.col("ts") - pl.col(ROW_DAY).cast(pl.Datetime("us"))).dt.total_seconds().alias("__seconds_into_day"),
        (pl.col("ts") > now).fill_null(False).alias("__in_future"),
        pl.when(pl.col("transaction_id").is_not_null())
        .then(pl.int_range(pl.len()).over("transaction_id"))
        .otherwise(0)
        .alias("__occurrence"),
        pl.col("transaction_id").is_in(list(seen_before)).fill_null(False).alias("__seen_before"),
    )
    outcomes = run_suite(helper.to_pandas(), "raw_transactions", raw_row_rules(contract), index_column=ROW)
    reasons: dict[int, list[str]] = {}
    for outcome in outcomes:
        for row in outcome.unexpected_rows:
            reasons.setdefault(row, []).append(outcome.rule)
    reason_frame = pl.DataFrame(
        {ROW: list(reasons), "rejected_reasons": [";".join(r) for r in reasons.values()]},
        schema={ROW: pl.Int64, "rejected_reasons": pl.String},
    )
    joined = helper.select([*frame.columns, ROW]).join(reason_frame, on=ROW, how="left")
    bad = pl.col("rejected_reasons").is_not_null()
    valid = joined.filter(~bad).drop(ROW, "rejected_reasons", TYPE_ERRORS, ROW_DAY)
    rejected = joined.filter(bad).drop(ROW)
    return QuarantineResult(valid, rejected, outcomes)


# --- customer features ------------------------------------------------------


def feature_rules(feature_columns: Iterable[str]) -> list[Rule]:
    import great_expectations.expectations as gxe

    feature_columns = list(feature_columns)
    shares = [c for c in feature_columns if c.endswith("_share")]
    counts = ("tx_count_7d", "tx_count_30d", "tx_count_90d", "active_days_90d", "lifetime_tx", "repeat_days", "active_span_days")
    money = ("spend_7d", "spend_30d", "spend_90d", "lifetime_spend")
    rules = [
        Rule(f"{c}_not_null", f"{c} is present", functools.partial(gxe.ExpectColumnValuesToNotBeNull, column=c))
        for c in ("customer_id", *feature_columns)
    ]
    rules += [
        Rule(f"{c}_share_range", f"0 <= {c} <= 1", functools.partial(gxe.ExpectColumnValuesToBeBetween, column=c, min_value=0, max_value=1))
        for c in shares
    ]
    rules += [
        Rule(f"{c}_non_negative", f"{c} >= 0", functools.partial(gxe.ExpectColumnValuesToBeBetween, column=c, min_value=0))
        for c in counts + money
    ]
    rules += [
        Rule(f"{c}_non_negative", f"{c} >= 0", functools.partial(gxe.ExpectColumnValuesToBeBetween, column=c, min_value=0))
        for c in ("recency_days", "mean_gap_days", "gap_std_days", "overdue_ratio")
    ]
    rules += [
        Rule(
            "recency_within_age",
            "recency_days <= tenure_days (the last purchase is not before the first)",
            lambda: gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="tenure_days", column_B="recency_days", or_equal=True),
        ),
        Rule(
            "lifetime_covers_window",
            "lifetime purchases >= purchases in 90 days",
            lambda: gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="lifetime_tx", column_B="tx_count_90d", or_equal=True),
        ),
        Rule(
            "windows_nested",
            "purchases in 7 days <= in 30 days <= in 90 days",
            lambda: gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="tx_count_90d", column_B="tx_count_30d", or_equal=True),
        ),
        Rule(
            "customer_unique_per_day",
            "one row per customer and snapshot day",
            lambda: gxe.ExpectCompoundColumnsToBeUnique(column_list=["customer_id", "snapshot_date"]),
        ),
        Rule(
            "features_fresh",
            "feature_timestamp is the end of the snapshot day",
            lambda: gxe.ExpectColumnValuesToBeInSet(column="__fresh", value_set=[True]),
        ),
    ]
    return rules


def validate_features(frame: pl.DataFrame, feature_columns: Iterable[str], chunk_rows: int = 1_000_000) -> list[Outcome]:
    """The feature suite over every row, validated in chunks of whole snapshot days.

    Every rule is row-wise, and uniqueness is per (customer, snapshot day), so
    chunks of whole days give the verdicts one validation of the whole frame
    would; unexpected counts are summed. Chunking bounds memory: GX works on a
    pandas copy, which for a 30-day range at 10 M transactions a year (8.4 M
    rows) added 3.2 GB at once.
    """
    feature_columns = list(feature_columns)
    rules = feature_rules(feature_columns)
    per_chunk = []
    for days in _day_chunks(frame, chunk_rows):
        part = frame.filter(pl.col("snapshot_date").is_in(days)) if days else frame
        helper = part.with_columns(
            (pl.col("feature_timestamp") == (pl.col("snapshot_date") + pl.duration(days=1)).cast(pl.Datetime("us"))).alias("__fresh")
        )
        per_chunk.append(run_suite(helper.drop("last_tx_ts").to_pandas(), "customer_features", rules))
        del part, helper
    return merge_outcomes(per_chunk)


def _day_chunks(frame: pl.DataFrame, chunk_rows: int) -> list[list[dt.date]]:
    """Snapshot days grouped so each group holds about chunk_rows rows (at least one whole day); [[]] means all at once."""
    counts = frame.group_by("snapshot_date").len().sort("snapshot_date")
    if frame.height <= chunk_rows or counts.height <= 1:
        return [[]]
    chunks: list[list[dt.date]] = [[]]
    rows = 0
    for day, n in counts.iter_rows():
        if chunks[-1] and rows + n > chunk_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(day)
        rows += n
    return chunks


class FeatureValidation:
    """The feature suite over days handed in one at a time (a run that writes each day as it is computed): days are
    held until about ``chunk_rows`` rows, validated together, let go; ``outcomes()`` merges the verdicts, the same as
    one `validate_features` over every day."""

    def __init__(self, feature_columns: Iterable[str], chunk_rows: int = 1_000_000) -> None:
        self.columns, self.chunk_rows = list(feature_columns), chunk_rows
        self.held: list[pl.DataFrame] = []
        self.held_rows = 0
        self.per_chunk: list[list[Outcome]] = []

    def add(self, day: pl.DataFrame) -> None:
        if day.height:
            self.held.append(day)
            self.held_rows += day.height
        if self.held_rows >= self.chunk_rows:
            self._validate()

    def outcomes(self) -> list[Outcome]:
        self._validate()
        return merge_outcomes(self.per_chunk) if self.per_chunk else []

    def _validate(self) -> None:
        if self.held:
            self.per_chunk.append(validate_features(pl.concat(self.held, how="vertical"), self.columns, self.chunk_rows))
        self.held, self.held_rows = [], 0


def merge_outcomes(per_chunk: list[list[Outcome]]) -> list[Outcome]:
    """One outcome per rule from the same suite run over disjoint chunks: passed only if every chunk passed."""
    if len(per_chunk) == 1:
        return per_chunk[0]
    merged = []
    for outcomes in zip(*per_chunk, strict=True):
        first = outcomes[0]
        observed = [o.observed for o in outcomes]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in observed):
            total: Any = sum(observed)
        else:  # not a count: show the first failing chunk's observation
            total = next((o.observed for o in outcomes if not o.success), first.observed)
        rows = [r for o in outcomes for r in o.unexpected_rows]
        merged.append(Outcome(first.rule, all(o.success for o in outcomes), total, first.expected, rows))
    return merged


def outcome_table(outcomes: list[Outcome]) -> str:
    """Markdown table of observed vs expected, for check metadata."""
    lines = ["| rule | passed | observed | expected |", "|---|---|---|---|"]
    for o in outcomes:
        observed = len(o.unexpected_rows) if o.unexpected_rows else o.observed
        lines.append(f"| {o.rule} | {'yes' if o.success else 'no'} | {observed} | `{o.expected}` |")
    return "\n".join(lines)
