"""The prediction record: rows appended to the registry database by a writer thread, off the request path."""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_assets.service.metrics import Metrics

log = logging.getLogger("churn.service")


class PredictionRecorder:
    """Appends prediction rows to the registry database from a thread of its own, off the request path.

    Rows wait in memory for at most `flush_s`; a failed write keeps them and
    retries; a clean shutdown (`close`) writes everything still waiting. Only
    when the database stays unreachable and `max_pending` rows pile up are the
    oldest dropped, counted in churn_prediction_records_dropped and logged.
    """

    def __init__(
        self, registry: Any, metrics: Metrics, retention_days: int | None, flush_s: float = 0.2, max_pending: int = 200_000
    ) -> None:
        self.registry, self.metrics, self.retention_days = registry, metrics, retention_days
        self.flush_s, self.max_pending = flush_s, max_pending
        self.queue: queue.SimpleQueue[list[dict[str, Any]] | Callable[[], list[dict[str, Any]]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="prediction-recorder", daemon=True)
        self.expired_at = 0.0

    def start(self) -> None:
        self.thread.start()

    def add(self, rows: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]]) -> None:
        """Rows to record, or a function that makes them, called on this thread (shadow scoring: off the request path)."""
        self.queue.put(rows)

    def close(self, timeout: float = 30.0) -> None:
        self.queue.put(None)
        self.thread.join(timeout=timeout)

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        closing = False
        while not closing:
            deadline = time.monotonic() + self.flush_s
            while True:
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                pending.extend(self._rows(item))
            pending = self._write(pending, attempts=5 if closing else 1)
            self._expire()

    def _rows(self, item: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        if not callable(item):
            return item
        try:
            return item()
        except Exception as exc:  # noqa: BLE001 (a shadow score that fails is logged, never the request's problem)
            log.error("prediction record: shadow scoring failed (%s)", type(exc).__name__)
            return []

    def _write(self, rows: list[dict[str, Any]], attempts: int) -> list[dict[str, Any]]:
        for attempt in range(attempts):
            if not rows:
                return rows
            try:
                self.registry.record_predictions(rows)
                self.metrics.recorded.inc(len(rows))
                return []
            except Exception as exc:  # noqa: BLE001 (the database is away: keep the rows and try again)
                log.error("prediction record: %d row(s) not written yet (%s); retrying", len(rows), type(exc).__name__)
                time.sleep(min(2.0, 0.2 * 2**attempt))
        if len(rows) > self.max_pending:
            dropped = len(rows) - self.max_pending
            self.metrics.record_dropped.inc(dropped)
            log.error("prediction record: the database has been unreachable too long; dropped the oldest %d row(s)", dropped)
            rows = rows[dropped:]
        return rows

    def _expire(self) -> None:
        if self.retention_days is None or time.monotonic() - self.expired_at < 3600:
            return
        self.expired_at = time.monotonic()
        try:
            gone = self.registry.expire_predictions(dt.datetime.now(dt.UTC) - dt.timedelta(days=self.retention_days))
            if gone:
                log.info("prediction record: %d row(s) older than %d days deleted", gone, self.retention_days)
        except Exception as exc:  # noqa: BLE001 (retried next hour)
            log.error("prediction record: retention cleanup failed (%s)", type(exc).__name__)
