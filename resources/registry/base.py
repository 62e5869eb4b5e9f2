"""The registry's connection, configuration and event append, shared by every part of it (versions, keys, records)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.registry.anchor import has_anchors, write_anchors
from resources.registry.chain import append_event, attest_tables, guards, upgrade_events
from resources.registry.tables import Tables, build_tables, upgrade_versions

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger(__name__)


def local_key(path: str) -> str:
    """A secret kept in a local file, created with 256 random bits (mode 0600) by the first process that needs it.

    For local runs only: production sets the secret (production settings refuse to start without it).
    """
    import secrets
    from pathlib import Path

    file = Path(path)
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(tmp, file)  # whole or not at all, and never over a key another process made first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = file.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path}: the local erasure key file is empty or short; delete it only if no customer was ever erased")
    return key


class RegistryBase(dg.ConfigurableResource):
    """Where the registry lives and how to reach it; the parts (versions, keys, ...) add their methods."""

    url: str = Field(description="SQLAlchemy URL of the registry database (SQLite file by default, PostgreSQL in production).")
    db_schema: str | None = Field(default=None, description="Database schema holding the registry tables (PostgreSQL).")
    code_version: str | None = Field(default=None, description="Code version recorded with new model versions; none: the git commit.")
    erasure_key: str | None = Field(
        default=None, description="Secret keying the hash kept of an erased customer id (set through an EnvVar); none: the key file."
    )
    erasure_key_file: str | None = Field(
        default=None,
        description="Local runs without erasure_key: the key is read from this file, generated (mode 0600) on first use.",
    )
    chain_key: str | None = Field(
        default=None, description="Secret keying the event chain (HMAC of every event; set through an EnvVar); none: an unkeyed chain."
    )
    chain_anchor: str | None = Field(
        default=None,
        description="Folder or object-store URL outside the database where each event's position and hash is written "
        "(one object per event; object lock makes them unchangeable); none: no anchor.",
    )

    _engine: Any = PrivateAttr(default=None)
    _local_key: Any = PrivateAttr(default=None)  # the local key file's content, once it exists

    @cached_property
    def _t(self) -> Tables:
        return build_tables(self.db_schema)

    @property
    def _erasure_key(self) -> str | None:
        """The key erased ids are hashed under: the secret when set, else the local key file once an erasure made it."""
        if self.erasure_key:
            return self.erasure_key
        if self._local_key is None and self.erasure_key_file and os.path.exists(self.erasure_key_file):
            self._local_key = local_key(self.erasure_key_file)
        return self._local_key

    def _erasure_key_for_writing(self) -> str | None:
        """The key a new erasure is recorded under: the local key file is generated here, on the first erasure."""
        if self.erasure_key or not self.erasure_key_file:
            return self.erasure_key
        self._local_key = local_key(self.erasure_key_file)
        return self._local_key

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            import sqlalchemy as sa

            if self.url.startswith("sqlite:///"):
                os.makedirs(os.path.dirname(os.path.abspath(self.url.removeprefix("sqlite:///"))), exist_ok=True)
            # SQLite: wait for a concurrent writer instead of failing at once. Servers: give up on a
            # connection that cannot be made in 10 s rather than hanging the poller or a run.
            connect_args: dict[str, Any] = {"timeout": 30} if self.url.startswith("sqlite") else {}
            if self.url.startswith("postgresql"):
                connect_args = {"connect_timeout": 10}
            elif self.url.startswith(("mysql", "mariadb")):
                connect_args = {"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60}
            engine = sa.create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
            self._t.md.create_all(engine)
            upgrade_events(engine, self._t)
            upgrade_versions(engine, self._t)
            guards(engine, self._t)
            self._anchor(attest_tables(engine, self._t, self.chain_key))
            if self.chain_anchor and not has_anchors(self.chain_anchor):
                self._anchor_head(engine)
            self._engine = engine
        return self._engine

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A transaction whose events are anchored outside the database once it has committed (never before: an
        anchor must not name an event that was rolled back)."""
        pending: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            conn.info["churn_pending_events"] = pending
            try:
                yield conn
            finally:
                conn.info.pop("churn_pending_events", None)
        self._anchor(pending)

    def _anchor(self, rows: list[dict[str, Any]]) -> None:
        if not rows or not self.chain_anchor:
            return
        try:
            write_anchors(self.chain_anchor, rows)
        except Exception as exc:  # noqa: BLE001 (the event is committed; verify reports it as not anchored)
            log.warning("registry events %s not anchored at the chain anchor: %s", [r["seq"] for r in rows], type(exc).__name__)

    def _anchor_head(self, engine: sa.Engine) -> None:
        """The first anchor of a chain that had none: its newest event (the hash chain vouches for every one before it)."""
        import sqlalchemy as sa

        events = self._t.events
        with engine.connect() as conn:
            row = conn.execute(sa.select(events).order_by(events.c.seq.desc()).limit(1)).mappings().first()
        if row is not None:
            self._anchor([dict(row)])

    def _event(
        self,
        conn: sa.Connection,
        action: str,
        version: str | None,
        previous: str | None,
        actor: str,
        reason: str,
        run_id: str | None,
        facts: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        row = append_event(conn, self._t, action, version, previous, actor, reason, run_id, facts, self.chain_key)
        conn.info.get("churn_pending_events", []).append(row)
        return row
