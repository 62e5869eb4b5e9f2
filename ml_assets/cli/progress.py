"""A line at least every 10 s while a stage of `churn run` / `churn demo` works: what runs, for how long, how far.

The stages run in this process (``dg.materialize``) and write every event to
the instance; a daemon thread reads the newest run's events every few seconds
and prints what a person wants to know: the step that is working and for how
long, the steps done, and the newest progress line a step logged
(``lib.progress.Ticker``: days done, rows). The console's own log level
(WARNING by default) does not hide it.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from lib.progress import EVERY_S

# What lib.progress.Ticker writes: "<what>: <done> of <total> <unit>[, <rows> rows], <seconds> s".
TICKER_LINE = re.compile(r"^[\w.]+: [\d,]+ of [\d,]+ \w+(, [\d,]+ rows)?, \d+ s$")


def describe(events: list[Any], now: float) -> str | None:
    """One line from a run's events so far: running steps with their time, steps done, the newest logged progress."""
    started: dict[str, float] = {}
    done: list[str] = []
    latest = None
    for event in events:
        dagster_event = event.dagster_event
        if dagster_event is None:
            if event.user_message and TICKER_LINE.match(event.user_message):
                latest = event.user_message
            continue
        kind = dagster_event.event_type_value
        if kind == "STEP_START" and event.step_key:
            started[event.step_key] = event.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key:
            started.pop(event.step_key, None)
            done.append(event.step_key)
    if not started and not done:
        return None
    parts = [", ".join(f"{step} running {now - t:.0f} s" for step, t in started.items()) or "between steps"]
    if done:
        parts.append(f"{len(done)} step(s) done")
    if latest:
        parts.append(latest)
    return "; ".join(parts)


@contextlib.contextmanager
def watching(instance: Any, every_s: float = EVERY_S) -> Iterator[None]:
    """Print a progress line every ``every_s`` seconds about the newest run created while the block works."""
    since, stop = time.time(), threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(Exception):  # progress must never break the run it reports on
                records = instance.get_run_records(limit=1)
                ours = records and records[0].create_timestamp.timestamp() >= since - 1
                line = describe(instance.all_logs(records[0].dagster_run.run_id), time.time()) if ours else None
                # Before the first step: Dagster builds the job and its resources (imports included).
                print(f"   [{time.time() - since:.0f} s] {line or 'preparing the run (definitions, resources)'}", flush=True)

    thread = threading.Thread(target=loop, name="churn-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_s)
