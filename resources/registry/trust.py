"""What scoring and the service may trust: the registry's tables as far as the hash chain proves them.

The chain is read once and then only its new events (cached by the head's
position and hash), checked link by link (and under the chain key, MAC by
MAC), and replayed into the state it proves (lib/chain.py). A table that
disagrees with that state (a champion switched, a digest swapped, a key
inserted behind the chain's back) is refused with `ChainMismatch`: batch
scoring fails and the failure sensor alerts; the service keeps its last
verified model and keys, reports not ready when it has none, and alerts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import PrivateAttr

from resources.registry.keys import ApiKeys
from resources.registry.records import ModelVersion, RegistryError, to_version
from resources.registry.rollout import Rollout

T = TypeVar("T")


# A change commits its table rows and its event together, but a reader takes the chain and the table in two reads:
# a disagreement is looked at again after this pause before it is called tampering.
SETTLE_SECONDS = 0.05


def _settled(attempt: Callable[[], T]) -> T:
    try:
        return attempt()
    except ChainMismatch:
        time.sleep(SETTLE_SECONDS)
        return attempt()


class ChainMismatch(RegistryError):
    """The registry's tables (or its chain) disagree with what the hash chain proves; `problems` lists each disagreement."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"the model registry disagrees with its hash chain, refusing to use it: {shown}. Run `churn registry verify`")


class Trust(Rollout, ApiKeys):
    """The champion, versions, keys and erased ids, each checked against the chain before use."""

    _state: Any = PrivateAttr(default=None)
    _state_lock: Any = PrivateAttr(default_factory=threading.Lock)

    def chain_state(self) -> Any:
        """The state the chain proves now (lib.chain.ChainState); ChainMismatch when the chain itself does not check out."""
        import sqlalchemy as sa

        from lib.chain import check_chain, replay

        t = self._t
        with self._state_lock:
            with self.engine.connect() as conn:
                head = conn.execute(sa.select(t.head.c.seq, t.head.c.hash).where(t.head.c.id == 1)).first()
                cached = self._state
                if cached is not None and head is not None and (cached.link.seq, cached.link.hash) == (head.seq, head.hash):
                    return cached
                after = cached.link.seq if cached is not None and head is not None and head.seq >= cached.link.seq else 0
                base = cached if after else None
                query = sa.select(t.events).where(t.events.c.seq > after).order_by(t.events.c.seq)
                new = [dict(r) for r in conn.execute(query).mappings()]
            problems = check_chain(new, (head.seq, head.hash) if head else None, self.chain_key, base.link if base else None)
            if problems:
                raise ChainMismatch([f"event {p.seq}: {p.problem}" for p in problems])
            self._state = replay(new, base)
            return self._state

    def trusted(self, version: ModelVersion) -> ModelVersion:
        """`version` as the table has it, after checking its status and digests against the chain."""
        return _settled(lambda: self._trusted_once(version.version))

    def _trusted_once(self, version: str) -> ModelVersion:
        from lib.chain import version_problems

        state = self.chain_state()
        with self.engine.connect() as conn:
            row = self._row(conn, version)
        if row is None:
            raise RegistryError(f"unknown model version {version!r}")
        problems = version_problems(state, dict(row._mapping), version) if state.attested else []
        if problems:
            raise ChainMismatch(problems)
        return to_version(row)

    def trusted_champion(self) -> ModelVersion | None:
        """The champion, only when the table's champion is the chain's and its row agrees with the chain."""
        return _settled(self._trusted_champion_once)

    def _trusted_champion_once(self) -> ModelVersion | None:
        state = self.chain_state()
        table = self.champion()
        if state.attested and (table.version if table else None) != state.champion:
            raise ChainMismatch(
                [f"the champion is {table.version if table else 'none'} in model_versions, {state.champion or 'none'} in the chain"]
            )
        return self._trusted_once(table.version) if table else None

    def trusted_challengers(self) -> list[ModelVersion]:
        return [self.trusted(v) for v in self.challengers()]

    def trusted_api_keys(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(the active keys the chain created and has not revoked, the problems of every other active row)."""
        good, problems = self._keys_once()
        if problems:  # a key created or revoked between the two reads is not tampering: look again once
            time.sleep(SETTLE_SECONDS)
            good, problems = self._keys_once()
        return good, problems

    def _keys_once(self) -> tuple[list[dict[str, Any]], list[str]]:
        from lib.chain import key_problems

        state = self.chain_state()
        good, problems = [], []
        for row in self.api_keys():
            found = key_problems(state, row) if state.attested else []
            if found:
                problems += found
            else:
                good.append(row)
        return good, problems

    def _chain_erased(self) -> set[str]:
        try:
            return set(self.chain_state().erased)
        except ChainMismatch:
            # A broken chain still refuses every id it ever recorded as erased: more refusals, never fewer.
            import json

            return {json.loads(e["facts"]).get("id_hash") for e in self.chain()[0] if e["action"] == "erased" and e.get("facts")} - {None}

    def table_problems(self) -> list[str]:
        """Every disagreement of the tables with the chain (for verify)."""
        import sqlalchemy as sa

        from lib.chain import table_problems

        try:
            state = self.chain_state()
        except ChainMismatch:
            return []  # the chain's own breaks are reported by verify already
        t = self._t
        with self.engine.connect() as conn:
            versions = [dict(r) for r in conn.execute(sa.select(t.versions)).mappings()]
            keys = [dict(r) for r in conn.execute(sa.select(t.api_keys)).mappings()]
            erased = set(conn.execute(sa.select(t.erased.c.id_sha256)).scalars())
        return table_problems(state, versions, keys, erased)


__all__ = ["ChainMismatch", "Trust"]
