"""The registry's connection, configuration and event append, shared by every part of it (versions, keys, records)."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.registry.chain import append_event, guards, upgrade_events
from resources.registry.tables import Tables, build_tables

if TYPE_CHECKING:
    import sqlalchemy as sa


class RegistryBase(dg.ConfigurableResource):
    """Where the registry lives and how to reach it; the parts (versions, keys, ...) add their methods."""

    url: str = Field(description="SQLAlchemy URL of the registry database (SQLite file by default, PostgreSQL in production).")
    db_schema: str | None = Field(default=None, description="Database schema holding the registry tables (PostgreSQL).")
    code_version: str | None = Field(default=None, description="Code version recorded with new model versions; none: the git commit.")
    erasure_key: str | None = Field(
        default=None, description="Secret keying the hash kept of an erased customer id (set through an EnvVar); none: plain sha256."
    )

    _engine: Any = PrivateAttr(default=None)

    @cached_property
    def _t(self) -> Tables:
        return build_tables(self.db_schema)

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
            guards(engine, self._t)
            self._engine = engine
        return self._engine

    def _event(
        self, conn: sa.Connection, action: str, version: str | None, previous: str | None, actor: str, reason: str, run_id: str | None
    ) -> dict[str, Any]:
        return append_event(conn, self._t, action, version, previous, actor, reason, run_id)
