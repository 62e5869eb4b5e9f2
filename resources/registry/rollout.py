"""Challengers and automatic decisions: who is scored in shadow, and the promotions and rollbacks the policy makes itself.

Every fact here is an event in the hash chain, derived back from it when
read: a challenger set or cleared by a person (with who and why), the
previous champion (the last champion change), and the versions the policy
rolled back (never promoted automatically again). Nothing here lives in a
table the chain does not cover.
"""

from __future__ import annotations

from typing import Any

from lib.chain import CHAMPION_CHANGES
from resources.registry.audit import Audit
from resources.registry.records import ModelVersion, RegistryError, dump
from resources.registry.tables import CHAMPION

POLICY_ACTOR = "rollout policy"


class Rollout(Audit):
    """Challengers in shadow and the rollout policy's own promotions and rollbacks."""

    def set_challenger(self, version: str, *, actor: str, reason: str) -> ModelVersion:
        """Score `version` in shadow (and in the canary arm) from the next run on; a person's choice, recorded with who and why."""
        if not actor.strip() or not reason.strip():
            raise RegistryError("setting a challenger needs an actor and a reason")
        model = self.get(version)
        if model.status == CHAMPION:
            raise RegistryError(f"{version} is the champion; a challenger is another version")
        if not model.onnx_sha256:
            raise RegistryError(f"{version} has no ONNX artifact: export it before it can be scored in shadow")
        with self._write() as conn:
            self._event(conn, "challenger_set", version, None, actor, reason, None)
        return model

    def clear_challenger(self, version: str, *, actor: str, reason: str) -> None:
        if not actor.strip() or not reason.strip():
            raise RegistryError("clearing a challenger needs an actor and a reason")
        with self._write() as conn:
            self._event(conn, "challenger_cleared", version, None, actor, reason, None)

    def _history(self) -> list[dict[str, Any]]:
        return self.chain()[0]

    def previous_champion(self) -> str | None:
        """The champion before the last change of champion (promotion or rollback, by a person or the policy)."""
        return _previous(self._history())

    def auto_blocked(self) -> set[str]:
        """Versions the policy rolled back: never promoted automatically again (a person still may)."""
        return _blocked(self._history())

    def challengers(self) -> list[ModelVersion]:
        """The versions scored in shadow beside the champion, most important first.

        Set by a person (`churn registry challenger set`) they are exactly those;
        otherwise the previous champion after a change of champion (the version a
        rollback returns to), else the best candidate of the newest training that
        passed its parity check but was not promoted. A version the policy rolled
        back is never a default challenger.
        """
        champion = self.champion()
        history = self._history()
        chosen: dict[str, bool] = {}
        for e in history:
            if e["action"] in ("challenger_set", "challenger_cleared") and e["version"]:
                chosen[e["version"]] = e["action"] == "challenger_set"
        explicit = [v for v, active in chosen.items() if active and (champion is None or v != champion.version)]
        if explicit:
            return [self.get(v) for v in reversed(explicit)]
        previous, blocked = _previous(history), _blocked(history)
        if previous and (champion is None or previous != champion.version) and previous not in blocked:
            return [self.get(previous)]
        if champion is None:
            return []
        versions = self.versions()
        run = _newest_run(versions)
        newest = [
            v
            for v in versions
            if v.status != CHAMPION and v.promotable and v.run_id == run and v.kind != "bgnbd" and v.version not in blocked
        ]
        newest.sort(key=lambda v: -float(v.metrics.get("backtest_roc_auc", v.metrics.get("test_roc_auc", 0.0))))
        return newest[:1]

    def auto_rollback(self, *, to: str, from_: str, reason: str, evidence: dict[str, Any], run_id: str | None) -> bool:
        """Make `to` the champion again because `from_` failed on matured outcomes; False when `from_` is no longer the
        champion (the event was acted on already: exactly once)."""
        current = self.champion()
        if current is None or current.version != from_:
            return False
        self.promote(to, actor=POLICY_ACTOR, reason=f"{reason}; evidence {dump(evidence)}", run_id=run_id, action="auto_rolled_back")
        return True

    def auto_promote(self, version: str, *, over: str, reason: str, evidence: dict[str, Any], run_id: str | None) -> bool:
        """Promote a challenger that won on matured outcomes; never a version the policy rolled back, and only over the
        champion the evidence was about."""
        current = self.champion()
        if current is None or current.version != over or version in self.auto_blocked():
            return False
        self.promote(version, actor=POLICY_ACTOR, reason=f"{reason}; evidence {dump(evidence)}", run_id=run_id, action="auto_promoted")
        return True


def _newest_run(versions: list[ModelVersion]) -> str | None:
    return max(versions, key=lambda v: v.created_at).run_id if versions else None


def _previous(history: list[dict[str, Any]]) -> str | None:
    changes = [e for e in history if e["action"] in CHAMPION_CHANGES]
    return changes[-1]["previous_champion"] if changes else None


def _blocked(history: list[dict[str, Any]]) -> set[str]:
    return {e["previous_champion"] for e in history if e["action"] == "auto_rolled_back" and e["previous_champion"]}
