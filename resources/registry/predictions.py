"""The prediction record: every online answer, kept for its retention."""

from __future__ import annotations

import datetime as dt
from typing import Any

from resources.registry.base import RegistryBase


class PredictionRecord(RegistryBase):
    """The prediction record: every online answer, kept for its retention."""

    # --- the prediction record --------------------------------------------------

    def record_predictions(self, rows: list[dict[str, Any]]) -> None:
        """Append online predictions (one executemany; the service calls this from its writer thread)."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(self._t.predictions.insert(), rows)

    def predictions(self, customer_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        log = self._t.predictions
        query = sa.select(log).order_by(log.c.id.desc()).limit(limit)
        if customer_id is not None:
            query = query.where(log.c.customer_id == customer_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def expire_predictions(self, older_than: dt.datetime) -> int:
        """Delete prediction records from before `older_than` (the retention setting); returns how many."""
        log = self._t.predictions
        with self.engine.begin() as conn:
            return conn.execute(log.delete().where(log.c.at < older_than)).rowcount
