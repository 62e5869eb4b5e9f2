"""Erasure records: the keyed hash of each erased id, refused at the next ingest."""

from __future__ import annotations

import datetime as dt
from typing import Any

from resources.registry.base import RegistryBase
from resources.registry.records import RegistryError


class Erasures(RegistryBase):
    """Erasure records: the keyed hash of each erased id, refused at the next ingest."""

    # --- erasure ----------------------------------------------------------------

    def record_erasure(self, customer_id: str, *, actor: str, reason: str, removed: dict[str, int]) -> str:
        """Forget one customer here (prediction record), remember their id's hash (refused at the next ingest) and
        record the erasure as an event that carries the hash, never the id. Returns the hash."""
        import sqlalchemy as sa

        from lib.governance import id_hash

        if not reason.strip():
            raise RegistryError("an erasure needs a reason (--reason), recorded in the registry")
        digest, t = id_hash(customer_id, self._erasure_key_for_writing()), self._t
        with self._write() as conn:
            removed = {
                **removed,
                "prediction_log": conn.execute(t.predictions.delete().where(t.predictions.c.customer_id == customer_id)).rowcount,
            }
            if conn.execute(sa.select(t.erased.c.id_sha256).where(t.erased.c.id_sha256 == digest)).first() is None:
                conn.execute(t.erased.insert().values(id_sha256=digest, at=dt.datetime.now(dt.UTC)))
            counts = ", ".join(f"{k} {v}" for k, v in sorted(removed.items()))
            reason = f"customer {self.erasure_scheme}:{digest}: {reason} (removed: {counts})"
            self._event(conn, "erased", None, None, actor, reason, None, {"id_hash": digest})
        return digest

    @property
    def erasure_scheme(self) -> str:
        """How erased ids are hashed here: keyed (deployment.erasure_key, or the local key file) or plain."""
        return "hmac-sha256" if self._erasure_key else "sha256"

    def erased_rows(self, frame: Any, erased: set[str] | None = None) -> Any:
        """A boolean Series: the rows of `frame` whose customer was erased (hashes compared under this registry's key);
        pass `erased` (from erased_hashes) to check several frames with one query."""
        from lib.erasure import erased_mask

        return erased_mask(frame, self.erased_hashes() if erased is None else erased, self._erasure_key)

    def erased_hashes(self) -> set[str]:
        """The hashes of every erased id: the table's and the chain's (a row deleted from the table is still refused)."""
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            stored = set(conn.execute(sa.select(self._t.erased.c.id_sha256)).scalars())
        return stored | self._chain_erased()

    def _chain_erased(self) -> set[str]:
        return set()  # the chain's own record: resources/registry/trust.py

    def is_erased(self, customer_ids: list[str], erased: set[str] | None = None) -> list[bool]:
        """Whether each id was erased (its hash, keyed or plain, is recorded): what the service refuses to score or record."""
        from lib.governance import id_hashes

        known = self.erased_hashes() if erased is None else erased
        if not known:
            return [False] * len(customer_ids)
        key = self._erasure_key
        return [any(h in known for h in id_hashes(c, key)) for c in customer_ids]
