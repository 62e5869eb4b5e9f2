"""Seeded, vectorized generator of realistic retail transactions with a churn signal.

The simulation is a population in steady state: customers arrive at a constant
rate (long before the first emitted day, so the visible population is already
stationary), live for an exponential lifetime whose hazard is their latent
churn propensity, and buy as a Poisson process with weekly seasonality.  In the
weeks before a customer churns their purchase rate and basket size decay, which
is the behavioural signal (growing gaps, falling spend) the model learns.

After ``drift_date`` behaviour shifts for everyone: baskets get larger, purchases
more frequent, and the channel mix moves to mobile.  Tests and the demo know the
date, so they know where drift must be found and where it must not.

Nothing here knows about Dagster or databases: it returns a polars DataFrame in
the canonical raw schema (see ``lib.schema``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl

from lib.schema import CATEGORIES, CHANNELS, PAYMENT_METHODS  # noqa: E402  (re-exported for the generator's users)

CHANNEL_POPULARITY = np.array([0.45, 0.30, 0.25])
CATEGORY_POPULARITY = np.array([0.30, 0.12, 0.18, 0.15, 0.12, 0.13])

# Relative purchase intensity by weekday (Mon..Sun): weekend peak.
WEEKDAY_INTENSITY = np.array([0.90, 0.85, 0.90, 0.95, 1.10, 1.35, 1.25])

# Days of slowdown before a customer's churn date: the signal window.
PRECHURN_DAYS = 45.0
# Arrivals start this many days before the first emitted day, so the population
# (and every windowed feature) is stationary from the first day on.
BURN_IN_DAYS = 720


@dataclass(frozen=True)
class GeneratorConfig:
    start: dt.date
    end: dt.date  # inclusive
    customers: int = 5_000
    seed: int = 7
    drift_date: dt.date | None = None
    mean_daily_rate: float = 0.12  # purchases per active customer per day
    # Behaviour change from drift_date on (multipliers).
    drift_amount_factor: float = 1.6
    drift_rate_factor: float = 1.35
    drift_mobile_shift: float = 0.35

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def customers_for_transactions(transactions: int, start: dt.date, end: dt.date, drift_date: dt.date | None = None) -> int:
    """How many visible customers give about ``transactions`` rows over the range.

    Rows per customer depend on the range (short ranges see little of each
    lifetime), so a small pilot population is simulated and scaled linearly.
    """
    pilot = 2_000
    rows = generate_transactions(GeneratorConfig(start=start, end=end, customers=pilot, seed=0, drift_date=drift_date)).height
    return max(50, round(transactions * pilot / max(rows, 1)))


def generate_transactions(cfg: GeneratorConfig) -> pl.DataFrame:
    """Simulate the population and return transactions sorted by timestamp."""
    if cfg.end < cfg.start:
        raise ValueError(f"end {cfg.end} is before start {cfg.start}")
    rng = np.random.default_rng(cfg.seed)
    horizon = float(cfg.days)

    # Simulate more arrivals than requested so that about cfg.customers are visible.
    mean_lifetime = 240.0
    visible_share = min(1.0, (horizon + mean_lifetime) / (horizon + BURN_IN_DAYS))
    n = max(10, int(cfg.customers / visible_share))

    arrival = rng.uniform(-BURN_IN_DAYS, horizon, n)
    # Latent churn propensity: daily hazard, log-normal across customers.
    hazard = np.exp(rng.normal(np.log(1.0 / mean_lifetime), 0.7, n))
    lifetime = rng.exponential(1.0 / hazard)
    churn_at = arrival + lifetime
    # Loyal (low-hazard) customers also buy a little more often.
    rate = cfg.mean_daily_rate * np.exp(rng.normal(0.0, 0.55, n) - 0.25 * (np.log(hazard) - np.log(1 / mean_lifetime)))
    rate = np.clip(rate, 0.005, 2.0)
    basket = np.exp(rng.normal(np.log(35.0), 0.5, n))
    # Habits: each customer has a preferred channel and a favourite category
    # that most (not all) of their purchases follow.
    favourite_channel = rng.choice(len(CHANNELS), size=n, p=CHANNEL_POPULARITY).astype(np.int8)
    favourite_category = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_POPULARITY).astype(np.int8)

    lo = np.maximum(arrival, 0.0)
    hi = np.minimum(churn_at, horizon)
    visible = hi > lo
    idx = np.flatnonzero(visible)
    if idx.size == 0:
        raise ValueError("the configuration produced no visible customer; raise customers or the date range")

    drift_t = float((cfg.drift_date - cfg.start).days) if cfg.drift_date is not None else np.inf
    rate_env = WEEKDAY_INTENSITY.max() * (cfg.drift_rate_factor if np.isfinite(drift_t) else 1.0)

    # Thinning: draw candidate events from a homogeneous envelope, keep each with
    # probability intensity / envelope.  All customers at once, no Python loop.
    expected = rate[idx] * rate_env * (hi[idx] - lo[idx])
    counts = rng.poisson(expected)
    owner = np.repeat(idx, counts)
    t = lo[owner] + rng.uniform(0.0, 1.0, owner.size) * (hi[owner] - lo[owner])
    day = np.floor(t)
    weekday = (cfg.start.weekday() + day.astype(np.int64)) % 7
    to_churn = churn_at[owner] - t
    decay = np.clip(to_churn / PRECHURN_DAYS, 0.15, 1.0)
    after = t >= drift_t
    intensity = WEEKDAY_INTENSITY[weekday] * decay * np.where(after, cfg.drift_rate_factor, 1.0)
    keep = rng.uniform(0.0, rate_env, owner.size) < intensity
    owner, t, decay, after = owner[keep], t[keep], decay[keep], after[keep]
    m = owner.size

    # Shopping hours: most purchases between 08:00 and 22:00.
    seconds = np.clip(rng.normal(15 * 3600, 3.5 * 3600, m), 0, 86_399).astype(np.int64)
    day_i = np.floor(t).astype(np.int64)
    ts_us = (day_i * 86_400 + seconds) * 1_000_000

    amount_mult = (0.6 + 0.4 * decay) * np.where(after, cfg.drift_amount_factor, 1.0)
    amount = np.round(basket[owner] * amount_mult * np.exp(rng.normal(0.0, 0.45, m)), 2)
    amount = np.maximum(amount, 0.5)
    quantity = 1 + rng.poisson(np.clip(amount / 40.0, 0.2, 6.0))

    channel = _habit(rng, favourite_channel[owner], CHANNEL_POPULARITY, loyalty=0.7)
    # After the shift a share of every customer's purchases moves to mobile.
    channel[after & (rng.uniform(size=m) < cfg.drift_mobile_shift)] = CHANNELS.index("mobile")
    category = _habit(rng, favourite_category[owner], CATEGORY_POPULARITY, loyalty=0.6)
    # Cash only in stores; wallets mostly on mobile.
    pay_u = rng.uniform(size=m)
    payment = np.where(
        channel == 2,
        np.where(pay_u < 0.3, 2, np.where(pay_u < 0.8, 0, 1)),
        np.where(channel == 1, np.where(pay_u < 0.55, 1, 0), np.where(pay_u < 0.8, 0, 1)),
    )

    return _frame(cfg.start, owner, ts_us, amount, quantity, channel, category, payment)


def _frame(
    start: dt.date,
    owner: np.ndarray,
    ts_us: np.ndarray,
    amount: np.ndarray,
    quantity: np.ndarray,
    channel: np.ndarray,
    category: np.ndarray,
    payment: np.ndarray,
) -> pl.DataFrame:
    """The simulated purchases as transactions in the canonical schema, in time order (no random draw here)."""
    order = np.argsort(ts_us, kind="stable")
    base = dt.datetime.combine(start, dt.time())
    frame = pl.DataFrame(
        {
            "customer_num": owner[order].astype(np.int64),
            "ts_offset_us": ts_us[order],
            "amount": amount[order],
            "quantity": quantity[order].astype(np.int32),
            "channel_i": channel[order].astype(np.int8),
            "category_i": category[order].astype(np.int8),
            "payment_i": payment[order].astype(np.int8),
        }
    )
    return frame.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("transaction_id"),
        pl.format("C{}", pl.col("customer_num").cast(pl.String).str.zfill(8)).alias("customer_id"),
        (pl.lit(base) + pl.duration(microseconds=pl.col("ts_offset_us"))).dt.cast_time_unit("us").alias("ts"),
        pl.col("amount"),
        pl.col("quantity"),
        pl.col("channel_i").replace_strict(dict(enumerate(CHANNELS)), return_dtype=pl.String).alias("channel"),
        pl.col("category_i").replace_strict(dict(enumerate(CATEGORIES)), return_dtype=pl.String).alias("category"),
        pl.col("payment_i").replace_strict(dict(enumerate(PAYMENT_METHODS)), return_dtype=pl.String).alias("payment_method"),
    )


def _habit(rng: np.random.Generator, favourite: np.ndarray, popularity: np.ndarray, loyalty: float) -> np.ndarray:
    """The customer's favourite with probability ``loyalty``, else a draw by popularity."""
    other = rng.choice(len(popularity), size=favourite.size, p=popularity).astype(np.int8)
    return np.where(rng.uniform(size=favourite.size) < loyalty, favourite, other)


# Defects a real feed shows now and then, each breaking one validation rule.
DEFECTS: dict[str, pl.Expr] = {
    "negative_amount": (-pl.col("amount")).alias("amount"),
    "zero_amount": pl.lit(0.0).alias("amount"),
    "absurd_amount": pl.lit(2.5e7).alias("amount"),
    "zero_quantity": pl.lit(0, dtype=pl.Int32).alias("quantity"),
    "infinite_amount": pl.lit(float("inf")).alias("amount"),
    "blank_customer_id": pl.lit("").alias("customer_id"),
    # A trailing newline would make a second customer out of the same person.
    "malformed_customer_id": pl.format("{}\n", pl.col("customer_id")).alias("customer_id"),
}


def inject_bad_rows(frame: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """Append ``n`` copies of random rows, each with one defect and a fresh id, for demos and tests."""
    if n <= 0 or frame.is_empty():
        return frame
    rng = np.random.default_rng(seed)
    picks = frame[rng.choice(frame.height, size=n, replace=frame.height < n).tolist()]
    names = list(DEFECTS)
    kinds = [names[i % len(names)] for i in range(n)]
    broken = [picks[i : i + 1].with_columns(DEFECTS[kind]) for i, kind in enumerate(kinds)]
    start = cast(int, frame["transaction_id"].max()) + 1
    bad = pl.concat(broken).with_columns(pl.int_range(start, start + n, dtype=pl.Int64).alias("transaction_id"))
    return pl.concat([frame, bad.select(frame.columns)]).sort("ts")


# --- a plain purchase log, shaped like real ones ------------------------------


@dataclass(frozen=True)
class RetailConfig:
    """A purchase log as shops export it: customer number, purchase date, quantity, amount; nothing else.

    Customers follow the buy-till-you-die story of BG/NBD (Fader, Hardie and
    Lee, 2005): each is acquired on some day, buys at their own Poisson rate
    (gamma across customers) and, after each purchase, leaves for good with
    their own probability (beta across customers). So most customers buy
    once, many go silent for months, and a customer is never seen leaving.
    Dates have day granularity; amounts are heavy-tailed; ids are plain numbers.

    Two departures from the pure BG/NBD story, both documented in real logs
    and both invisible to BG/NBD, which sees only purchase counts and dates:
    customers who spend more per order are more loyal (the leaving probability
    scales with ``(typical basket / 30) ** -spend_loyalty``), and interest fades:
    a customer's purchase rate decays with their age at their own pace
    (``exp(-age / fade)``, fade log-normal around ``fade_days``). ``spend_loyalty=0``
    and ``fade_days=None`` give pure BG/NBD data.
    """

    start: dt.date
    end: dt.date  # inclusive
    customers: int = 3_000
    seed: int = 11
    # Gamma(shape, scale) purchase rate per day: mean shape * scale (one purchase every ~50 days).
    rate_shape: float = 0.7
    rate_scale: float = 0.03
    # Beta(a, b) probability of leaving after each purchase: mean a / (a + b).
    dropout_a: float = 1.0
    dropout_b: float = 1.5
    spend_loyalty: float = 1.0
    fade_days: float | None = 240.0
    # Customers are acquired uniformly over this many days from the start (None: the whole span); a short window
    # gives one ageing cohort, as a log cut from one campaign or a shop's first months.
    acquisition_days: float | None = None
    drift_date: dt.date | None = None
    drift_rate_factor: float = 1.8
    drift_amount_factor: float = 1.7

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def generate_retail(cfg: RetailConfig) -> pl.DataFrame:
    """Columns customer_no (integer), purchase_date (date), quantity, amount; sorted by date. Seeded and vectorized per purchase round."""
    if cfg.end < cfg.start:
        raise ValueError(f"end {cfg.end} is before start {cfg.start}")
    rng = np.random.default_rng(cfg.seed)
    n, horizon = cfg.customers, float(cfg.days)
    first = rng.uniform(0.0, min(cfg.acquisition_days or horizon, horizon), n)
    rate = rng.gamma(cfg.rate_shape, cfg.rate_scale, n)
    typical = np.exp(rng.normal(np.log(30.0), 0.8, n))
    dropout = np.clip(rng.beta(cfg.dropout_a, cfg.dropout_b, n) * (typical / 30.0) ** -cfg.spend_loyalty, 0.0, 1.0)
    fade = np.exp(rng.normal(np.log(cfg.fade_days), 0.6, n)) if cfg.fade_days else np.full(n, np.inf)
    drift_t = float((cfg.drift_date - cfg.start).days) if cfg.drift_date else np.inf
    owners, times = [np.arange(n)], [first]
    t, alive = first.copy(), np.ones(n, dtype=bool)
    while alive.any():
        alive &= rng.uniform(size=n) >= dropout
        speed = np.maximum(rate * np.where(t >= drift_t, cfg.drift_rate_factor, 1.0), 1e-6)
        # The next purchase of a Poisson process whose rate decays as exp(-age / fade): invert the
        # cumulative rate speed * fade * (1 - exp(-age / fade)); when it never reaches the draw, no more purchases.
        decayed = np.exp(-(t - first) / fade) - rng.exponential(1.0, n) / (speed * fade)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(np.isinf(fade), rng.exponential(1.0 / speed), -fade * np.log(np.where(decayed > 0, decayed, 1.0)) - (t - first))
        alive &= np.isinf(fade) | (decayed > 0)
        t = t + np.where(alive, step, 0.0)
        alive &= t < horizon
        owners.append(np.flatnonzero(alive))
        times.append(t[alive])
    owner, when = np.concatenate(owners), np.concatenate(times)
    m = owner.size
    after = when >= drift_t
    amount = typical[owner] * np.exp(rng.normal(0.0, 0.7, m)) * np.where(after, cfg.drift_amount_factor, 1.0)
    # A few very large orders (the heavy tail real logs have), kept below the plausibility rule.
    amount = np.where(rng.uniform(size=m) < 0.01, amount * rng.pareto(1.5, m) * 20, amount)
    amount = np.clip(np.round(amount, 2), 0.5, 90_000.0)
    quantity = 1 + rng.poisson(np.clip(amount / 25.0, 0.1, 8.0))
    # Customer numbers as shops issue them: not contiguous, not zero-padded.
    numbers = 10_000 + rng.choice(50 * n, size=n, replace=False)
    order = np.argsort(when, kind="stable")
    return pl.DataFrame(
        {
            "customer_no": numbers[owner[order]].astype(np.int64),
            "purchase_date": pl.Series(np.floor(when[order]).astype(np.int64)).cast(pl.Int32),
            "quantity": quantity[order].astype(np.int32),
            "amount": amount[order],
        }
    ).with_columns((pl.lit(cfg.start) + pl.duration(days=pl.col("purchase_date"))).cast(pl.Date).alias("purchase_date"))


def retail_as_transactions(log: pl.DataFrame) -> pl.DataFrame:
    """A retail log in the lake's validated shape (text ids, purchase dates at midnight UTC): for tests and benchmarks
    that skip ingestion."""
    return log.select(
        pl.col("customer_no").cast(pl.String).alias("customer_id"),
        pl.col("purchase_date").cast(pl.Datetime("us")).alias("ts"),
        "amount",
        "quantity",
    )
