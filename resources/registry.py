"""The model registry: every trained model as a version, one champion, and an audit trail.

Backed by any SQLAlchemy database (SQLite by default, PostgreSQL in
production).  Two tables:

- ``model_versions``: one row per trained model (kind, training data window,
  Dagster run id, code version, metrics, native and ONNX artifact URIs with
  their sha256, ONNX parity result) and its status: ``candidate``,
  ``champion`` or ``archived``.  A partial unique index allows at most one
  champion, so two promotions racing cannot both win.
- ``registry_events``: every registration, promotion, decision to keep the
  champion and rollback, with who, when, why and the run that did it.

A version is registered only after its artifact has been written (the artifact
store writes atomically under the sha256), so the registry never points at a
missing or half-written file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

if TYPE_CHECKING:
    import sqlalchemy as sa

CANDIDATE, CHAMPION, ARCHIVED = "candidate", "champion", "archived"


class RegistryError(RuntimeError):
    """A registry operation was refused (unknown version, not promotable, ...)."""


@dataclass(frozen=True)
class ModelVersion:
    version: str
    kind: str
    status: str
    created_at: dt.datetime
    run_id: str
    code_version: str
    data_window: dict[str, Any]
    features: list[str]
    params: dict[str, Any]
    metrics: dict[str, float]
    artifact_uri: str
    artifact_sha256: str
    onnx_uri: str | None
    onnx_sha256: str | None
    parity: dict[str, Any] | None
    parity_passed: bool | None
    reference_uri: str | None = None
    reference_sha256: str | None = None

    @property
    def promotable(self) -> bool:
        return bool(self.onnx_uri and self.onnx_sha256 and self.parity_passed)


def current_code_version(configured: str | None = None) -> str:
    """The configured code version (`deployment.code_version`, set by the image) when there is one, else the git
    commit of the checkout, else `unknown`."""
    if configured:
        return configured
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        # Fixed argv, no shell; git from PATH on purpose (it is only a label, and absent git is handled).
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)  # noqa: S603, S607
        if out.returncode == 0:
            dirty = subprocess.run(  # noqa: S603 (fixed argv, no shell)
                ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],  # noqa: S607 (git from PATH, as above)
                capture_output=True,
                text=True,
                timeout=5,
            )
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _tables(schema: str | None) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    import sqlalchemy as sa

    md = sa.MetaData(schema=schema)
    versions = sa.Table(
        "model_versions",
        md,
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("data_window", sa.Text, nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("onnx_uri", sa.Text),
        sa.Column("onnx_sha256", sa.String(64)),
        sa.Column("parity", sa.Text),
        sa.Column("parity_passed", sa.Boolean),
        # A seeded sample of the training rows: the drift reference for as long as this version is champion.
        sa.Column("reference_uri", sa.Text),
        sa.Column("reference_sha256", sa.String(64)),
    )
    champion_only = versions.c.status == CHAMPION
    sa.Index("one_champion", versions.c.status, unique=True, sqlite_where=champion_only, postgresql_where=champion_only)
    events = sa.Table(
        "registry_events",
        md,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("previous_champion", sa.String(64)),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    return md, versions, events


class ModelRegistry(dg.ConfigurableResource):
    """Model versions, the champion and the audit trail, in a SQL database."""

    url: str = Field(description="SQLAlchemy URL of the registry database (SQLite file by default, PostgreSQL in production).")
    db_schema: str | None = Field(default=None, description="Database schema holding the registry tables (PostgreSQL).")
    code_version: str | None = Field(default=None, description="Code version recorded with new model versions; none: the git commit.")

    _engine: Any = PrivateAttr(default=None)

    @cached_property
    def _t(self) -> tuple[sa.MetaData, sa.Table, sa.Table]:
        return _tables(self.db_schema)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            import sqlalchemy as sa

            if self.url.startswith("sqlite:///"):
                os.makedirs(os.path.dirname(os.path.abspath(self.url.removeprefix("sqlite:///"))), exist_ok=True)
            # SQLite: wait for a concurrent writer instead of failing at once.
            connect_args = {"timeout": 30} if self.url.startswith("sqlite") else {}
            engine = sa.create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
            self._t[0].create_all(engine)
            self._engine = engine
        return self._engine

    # --- writes -----------------------------------------------------------------

    def register(
        self,
        *,
        version: str,
        kind: str,
        run_id: str,
        data_window: dict[str, Any],
        features: list[str],
        params: dict[str, Any],
        metrics: dict[str, float],
        artifact_uri: str,
        artifact_sha256: str,
        code_version: str | None = None,
        reference_uri: str | None = None,
        reference_sha256: str | None = None,
    ) -> ModelVersion:
        """Record a trained model as a candidate. Registering the same artifact again keeps its status and history."""
        import sqlalchemy as sa

        _, versions, _ = self._t
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            existing = conn.execute(sa.select(versions.c.version).where(versions.c.version == version)).first()
            if existing is None:
                conn.execute(
                    versions.insert().values(
                        version=version,
                        kind=kind,
                        status=CANDIDATE,
                        created_at=now,
                        run_id=run_id,
                        code_version=code_version or current_code_version(self.code_version),
                        data_window=_dump(data_window),
                        features=_dump(features),
                        params=_dump(params),
                        metrics=_dump(metrics),
                        artifact_uri=artifact_uri,
                        artifact_sha256=artifact_sha256,
                        reference_uri=reference_uri,
                        reference_sha256=reference_sha256,
                    )
                )
                self._event(conn, "registered", version, None, "pipeline", f"{kind} model trained", run_id)
            else:
                self._event(conn, "retrained", version, None, "pipeline", "the same artifact was trained again", run_id)
        return self.get(version)

    def attach_onnx(self, version: str, onnx_uri: str, onnx_sha256: str, run_id: str) -> ModelVersion:
        """Record the ONNX artifact of a version; parity is unknown until the parity check records it."""
        import sqlalchemy as sa

        _, versions, _ = self._t
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(versions.c.onnx_sha256).where(versions.c.version == version)).first()
            if row is None:
                raise RegistryError(f"cannot attach ONNX to unknown version {version!r}; register the model first")
            if row.onnx_sha256 != onnx_sha256:
                conn.execute(
                    versions.update()
                    .where(versions.c.version == version)
                    .values(onnx_uri=onnx_uri, onnx_sha256=onnx_sha256, parity=None, parity_passed=None)
                )
                self._event(conn, "exported", version, None, "pipeline", f"ONNX artifact {onnx_sha256[:12]}", run_id)
        return self.get(version)

    def record_parity(self, version: str, onnx_sha256: str, passed: bool, report: dict[str, Any], run_id: str) -> None:
        """Store the parity verdict for one ONNX artifact (ignored if the version has since been re-exported)."""
        _, versions, _ = self._t
        with self.engine.begin() as conn:
            updated = conn.execute(
                versions.update()
                .where((versions.c.version == version) & (versions.c.onnx_sha256 == onnx_sha256))
                .values(parity=_dump(report), parity_passed=passed)
            ).rowcount
            if not updated:
                raise RegistryError(f"version {version!r} has no ONNX artifact {onnx_sha256[:12]} to record parity for")
            self._event(conn, "parity_passed" if passed else "parity_failed", version, None, "pipeline", _dump(report), run_id)

    def promote(self, version: str, *, actor: str, reason: str, run_id: str | None, action: str = "promoted") -> ModelVersion:
        """Make `version` the champion and archive the previous one, in one transaction."""
        import sqlalchemy as sa

        _, versions, _ = self._t
        if not reason.strip() or not actor.strip():
            raise RegistryError("a promotion needs an actor and a reason")
        with self.engine.begin() as conn:
            target = self._row(conn, version)
            if target is None:
                known = [v.version for v in self.versions()][:10]
                raise RegistryError(f"unknown model version {version!r}; known versions: {known}")
            model = _to_version(target)
            if not model.promotable:
                raise RegistryError(
                    f"version {version!r} cannot be champion: it has "
                    f"{'no ONNX artifact' if not model.onnx_sha256 else 'not passed its ONNX parity check'}"
                )
            current = conn.execute(sa.select(versions.c.version).where(versions.c.status == CHAMPION)).scalar_one_or_none()
            if current == version:
                self._event(conn, "kept", version, current, actor, reason, run_id)
                return _to_version(self._row(conn, version))
            # Archive first: the partial unique index allows one champion at any moment.
            conn.execute(versions.update().where(versions.c.status == CHAMPION).values(status=ARCHIVED))
            conn.execute(versions.update().where(versions.c.version == version).values(status=CHAMPION))
            self._event(conn, action, version, current, actor, reason, run_id)
        return self.get(version)

    def keep(self, champion: str | None, *, reason: str, run_id: str | None, candidate: str | None = None) -> None:
        """Record a promotion decision that kept the current champion."""
        with self.engine.begin() as conn:
            self._event(conn, "kept", candidate, champion, "pipeline", reason, run_id)

    # --- reads ------------------------------------------------------------------

    def champion(self) -> ModelVersion | None:
        import sqlalchemy as sa

        _, versions, _ = self._t
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(versions).where(versions.c.status == CHAMPION)).first()
        return _to_version(row) if row else None

    def get(self, version: str) -> ModelVersion:
        with self.engine.connect() as conn:
            row = self._row(conn, version)
        if row is None:
            raise RegistryError(f"unknown model version {version!r}")
        return _to_version(row)

    def versions(self, kind: str | None = None) -> list[ModelVersion]:
        import sqlalchemy as sa

        _, versions, _ = self._t
        query = sa.select(versions).order_by(versions.c.created_at.desc(), versions.c.version)
        if kind:
            query = query.where(versions.c.kind == kind)
        with self.engine.connect() as conn:
            return [_to_version(r) for r in conn.execute(query)]

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        _, _, events = self._t
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(events).order_by(events.c.id.desc()).limit(limit)).mappings().all()
        return [{**r, "at": _utc(r["at"]).isoformat()} for r in rows]

    # --- internals --------------------------------------------------------------

    def _row(self, conn: sa.Connection, version: str) -> Any:
        import sqlalchemy as sa

        _, versions, _ = self._t
        return conn.execute(sa.select(versions).where(versions.c.version == version)).first()

    def _event(
        self, conn: sa.Connection, action: str, version: str | None, previous: str | None, actor: str, reason: str, run_id: str | None
    ) -> None:
        _, _, events = self._t
        conn.execute(
            events.insert().values(
                at=dt.datetime.now(dt.UTC),
                action=action,
                version=version,
                previous_champion=previous,
                actor=actor,
                reason=reason,
                run_id=run_id,
            )
        )


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _to_version(row: Any) -> ModelVersion:
    return ModelVersion(
        version=row.version,
        kind=row.kind,
        status=row.status,
        created_at=_utc(row.created_at),
        run_id=row.run_id,
        code_version=row.code_version,
        data_window=json.loads(row.data_window),
        features=json.loads(row.features),
        params=json.loads(row.params),
        metrics=json.loads(row.metrics),
        artifact_uri=row.artifact_uri,
        artifact_sha256=row.artifact_sha256,
        onnx_uri=row.onnx_uri,
        onnx_sha256=row.onnx_sha256,
        parity=json.loads(row.parity) if row.parity else None,
        parity_passed=row.parity_passed,
        reference_uri=row.reference_uri,
        reference_sha256=row.reference_sha256,
    )
