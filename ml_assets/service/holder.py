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

    def __init__(self, registry: Any, artifacts: Any) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.current: Champion | None = None
        # The challengers scored in shadow (the first serves the canary share), swapped as one tuple like the champion.
        self.challengers: tuple[Champion, ...] = ()
        self.keys: dict[str, Key] = {}
        self.keys_loaded = False
        self.last_error: str | None = None
        self._load_lock = threading.Lock()

    def refresh(self) -> Champion | None:
        from ml_assets.champion import load_champion

        with self._load_lock:
            self.keys = {
                k["key_id"]: Key(k["key_id"], k["name"], frozenset(k["scopes"].split(",")), k["salt"], k["digest"])
                for k in self.registry.api_keys()
            }
            self.keys_loaded = True
            try:
                self._refresh_challengers(load_champion)
            except Exception as exc:  # noqa: BLE001 (a challenger that cannot be loaded never stops the champion)
                log.error("challenger reload failed, keeping %s: %s", [c.version for c in self.challengers] or "none", type(exc).__name__)
            champion = self.registry.champion()
            if champion is None or (self.current is not None and self.current.version == champion.version):
                return self.current
            # Verified before a byte is parsed: a tampered or partial artifact raises and the old model stays.
            loaded = load_champion(champion, self.artifacts)
            previous, self.current = self.current, loaded
            log.info("champion loaded: %s (%s), replacing %s", loaded.version, loaded.kind, previous.version if previous else "none")
            return loaded

    def _refresh_challengers(self, load: Any) -> None:
        wanted = [v for v in self.registry.challengers() if v.onnx_sha256]
        if [c.version for c in self.challengers] == [v.version for v in wanted]:
            return
        loaded = {c.version: c for c in self.challengers}
        self.challengers = tuple(loaded.get(v.version) or load(v, self.artifacts) for v in wanted)
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
