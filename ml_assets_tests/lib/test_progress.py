"""Progress lines: at most one per interval, always the last one, and what the CLI prints from a run's events."""

from __future__ import annotations

from types import SimpleNamespace

from lib.progress import Ticker
from ml_assets.cli.progress import describe


def test_a_ticker_speaks_once_per_interval_and_for_the_last_item() -> None:
    now = [0.0]
    lines: list[str] = []
    ticker = Ticker("customer_features", 365, lines.append, every_s=10.0, clock=lambda: now[0])
    for done in range(1, 366):
        now[0] += 0.125  # 45.6 s for the year (a step binary floats add exactly)
        ticker.tick(done, rows=done * 1_000)
    assert lines == [
        "customer_features: 80 of 365 days, 80,000 rows, 10 s",
        "customer_features: 160 of 365 days, 160,000 rows, 20 s",
        "customer_features: 240 of 365 days, 240,000 rows, 30 s",
        "customer_features: 320 of 365 days, 320,000 rows, 40 s",
        "customer_features: 365 of 365 days, 365,000 rows, 46 s",
    ]


def test_a_nested_loop_and_its_outer_loop_reporting_the_end_give_one_line() -> None:
    """batch_predictions ticks from inside the reasons (rows explained) and after each chunk: the end is said once."""
    now = [0.0]
    lines: list[str] = []
    ticker = Ticker("batch_predictions", 8, lines.append, unit="rows", every_s=10.0, clock=lambda: now[0])
    for explained in (4, 8):
        now[0] += 11.0
        ticker.tick(explained)
    ticker.tick(8)
    assert lines == ["batch_predictions: 4 of 8 rows, 11 s", "batch_predictions: 8 of 8 rows, 22 s"]


def _event(kind: str | None, step: str | None = None, at: float = 0.0, message: str = "") -> SimpleNamespace:
    dagster_event = SimpleNamespace(event_type_value=kind) if kind else None
    return SimpleNamespace(dagster_event=dagster_event, step_key=step, timestamp=at, user_message=message)


def test_the_cli_line_names_the_running_step_its_time_the_steps_done_and_the_newest_progress() -> None:
    events = [
        _event("STEP_START", "raw_transactions", 0.0),
        _event("STEP_SUCCESS", "raw_transactions", 5.0),
        _event("STEP_START", "customer_features", 6.0),
        _event(None, "customer_features", 16.0, "customer_features: 120 of 365 days, 1,234 rows, 10 s"),
        _event(None, "customer_features", 17.0, "batch_predictions 2025-06-30: 11 of the customers have no score, 3 s ago"),
    ]
    assert describe(events, now=30.0) == (
        "customer_features running 24 s; 1 step(s) done; customer_features: 120 of 365 days, 1,234 rows, 10 s"
    )
    assert describe([], now=1.0) is None
