"""What the commands share: the demo's calendar and argument types."""

from __future__ import annotations

import argparse
import datetime as dt

# Defaults shared by the demo, the README and the tests: one year of history,
# behaviour shifting on 2025-06-01, the last six weeks scored.
DEMO_START = dt.date(2024, 7, 1)
DEMO_END = dt.date(2025, 6, 30)
DEMO_DRIFT = dt.date(2025, 6, 1)
DEMO_SCORE_FROM = dt.date(2025, 5, 18)


def date_arg(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date in YYYY-MM-DD form") from exc
