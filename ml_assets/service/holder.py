"""The champion and the API keys the service holds, reloaded from the registry and swapped with one assignment."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_assets.champion import Champion

log = logging.getLogger("churn.service")


@dataclass(frozen=True)
class Key:
    key_id: str
    name: str
    scopes: frozenset[str]
    salt: str
    digest: str


class ChampionHolder:
    """The champion's ONNX session, swapped atomically when the registry names a new one; the API keys likewise."""

    def __init__(self, registry: Any, artifacts: Any, notifier: Any = None) -> None:
        self.registry = registry
        self.artifacts = artifacts
        # Where a disagreement between the registry's tables and its hash chain is announced (FailureNotifier.alert).
        self.notifier = notifier
        # Erased ids' hashes, reloaded with the champion: such ids are neither scored nor recorded.
        self.erased: set[str] = set()
        self._logged: set[tuple[str, ...]] = set()
        self.current: Champion | None = None
        # The challengers scored in shadow (the first serves the canary share), swapped as one tuple like the champion.
        self.challengers: tuple[Champion, ...] = ()
        self.keys: dict[str, Key] = {}
        self.keys_loaded = False
        self.last_error: str | None = None
        self._load_lock = threading.Lock()

    def refresh(self) -> Champion | None:
        """Keys, erased ids, challengers and the champion, each as far as the registry's hash chain proves it.

        A disagreement (a key row or a champion the chain does not know) is
        refused: such a key is never accepted, the last verified model keeps
        serving (none at start: /ready says not ready), and it is alerted.
        """
        from ml_assets.champion import load_champion

        with self._load_lock:
            good, problems = self._checked(self.registry.trusted_api_keys)
            self.erased = self.registry.erased_hashes()
            if problems:
                self._alert(problems)
            self.keys = {k["key_id"]: Key(k["key_id"], k["name"], frozenset(k["scopes"].split(",")), k["salt"], k["digest"]) for k in good}
            self.keys_loaded = True
            try:
                self._refresh_challengers(load_champion)
            except Exception as exc:  # noqa: BLE001 (a challenger that cannot be loaded never stops the champion)
                log.error("challenger reload failed, keeping %s: %s", [c.version for c in self.challengers] or "none", type(exc).__name__)
            champion = self._checked(self.registry.trusted_champion)
            if champion is None or (self.current is not None and self.current.version == champion.version):
                return self.current
            # Verified before a byte is parsed: a tampered or partial artifact raises and the old model stays.
            loaded = load_champion(champion, self.artifacts, explain=True)
            previous, self.current = self.current, loaded
            log.info("champion loaded: %s (%s), replacing %s", loaded.version, loaded.kind, previous.version if previous else "none")
            return loaded

    def _checked(self, read: Any) -> Any:
        """A trusted registry read; a disagreement with the chain is alerted, then raised (the caller keeps what it has)."""
        from resources.registry import ChainMismatch

        try:
            return read()
        except ChainMismatch as exc:
            self._alert(exc.problems)
            raise

    def _alert(self, problems: list[str]) -> None:
        # Each set of problems logged once, not at every reload; the notifier records and posts each set once.
        seen = tuple(sorted(problems))
        if seen in self._logged:
            return
        self._logged.add(seen)
        log.error("the registry disagrees with its hash chain; refused: %s", "; ".join(problems[:5]))
        if self.notifier is not None:
            try:
                self.notifier.alert(
                    "chain_mismatch",
                    "\n".join(sorted(problems)),
                    "churn scoring service: the model registry disagrees with its hash chain; refused what the chain does not prove",
                    {"problems": problems[:20]},
                )
            except Exception as exc:  # noqa: BLE001 (an alert that cannot be sent never stops the service)
                log.error("chain mismatch alert not sent: %s", type(exc).__name__)

    def _refresh_challengers(self, load: Any) -> None:
        wanted = [v for v in self.registry.trusted_challengers() if v.onnx_sha256]
        if [c.version for c in self.challengers] == [v.version for v in wanted]:
            return
        loaded = {c.version: c for c in self.challengers}
        self.challengers = tuple(loaded.get(v.version) or load(v, self.artifacts, explain=True) for v in wanted)
        log.info("challengers loaded: %s", [c.version for c in self.challengers] or "none")

    def poll_forever(self, stop: threading.Event, every: float) -> None:
        while not stop.is_set():
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 (keep serving the old model, say why)
                self.last_error = f"{type(exc).__name__}: {exc}"
                current = self.current.version if self.current else "nothing"
                log.error("champion reload failed, still serving %s: %s", current, self.last_error)
            stop.wait(every)
