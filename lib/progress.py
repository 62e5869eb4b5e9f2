"""Progress lines for long work: at most one every ``every_s`` seconds, and always one for the last item.

A run that works through a year of days one by one must say how far it is
(days done, rows, elapsed) often enough that nobody wonders whether it hangs,
and seldom enough that the log stays readable: one line per 10 seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

EVERY_S = 10.0


class Ticker:
    """Call ``tick(done, rows)`` after each item; it emits ``"<what>: <done> of <total> <unit>, <rows> rows, <s> s"``
    through ``emit`` when ``every_s`` has passed since the last line (or the start), and for the last item."""

    def __init__(
        self,
        what: str,
        total: int,
        emit: Callable[[str], None],
        unit: str = "days",
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.emit, self.unit, self.every_s, self.clock = what, total, emit, unit, every_s, clock
        self.started = self.last = clock()
        self.said: int | None = None  # the `done` of the last line: a nested and an outer loop may both report the end

    def tick(self, done: int, rows: int | None = None) -> None:
        now = self.clock()
        if (now - self.last < self.every_s and done < self.total) or done == self.said:
            return
        self.last, self.said = now, done
        counted = f", {rows:,} rows" if rows is not None else ""
        self.emit(f"{self.what}: {done:,} of {self.total:,} {self.unit}{counted}, {now - self.started:.0f} s")
