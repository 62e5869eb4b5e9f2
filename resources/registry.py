"""The model registry: every trained model as a version, one champion, and an audit trail.

Backed by any SQLAlchemy database (SQLite by default, PostgreSQL in
production).  Two tables:

- ``model_versions``: one row per trained model (kind, training data window,
  Dagster run id, code version, metrics, native and ONNX artifact URIs with
  their sha256, ONNX parity result) and its status: ``candidate``,
  ``champion`` or ``archived``.  A partial unique index allows at most one
  champion, so two promotions racing cannot both win.
- ``registry_events``: every registration, promotion, decision to keep the
  champion, rollback, API-key change and erasure, with who, when, why and the
  run that did it. Append-only: each event carries the sha256 of the one
  before it (``lib/governance.py``), a one-row head table holds the newest,
  and database triggers refuse UPDATE and DELETE, so `churn registry verify`
  finds any rewritten, removed or truncated event.

Three more tables belong to the service and to erasure: ``api_keys`` (salted
digests, never the keys), ``prediction_log`` (every online prediction) and
``erased_customers`` (sha256 of erased ids, refused at the next ingest).

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
from typing import TYPE_CHECKING, Any, NamedTuple

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


class Tables(NamedTuple):
    md: sa.MetaData
    versions: sa.Table
    events: sa.Table
    head: sa.Table
    api_keys: sa.Table
    predictions: sa.Table
    erased: sa.Table


def _tables(schema: str | None) -> Tables:
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
    # A partial unique index where the database has them; MariaDB/MySQL have none (a unique index on status would
    # allow one candidate in all), so there a trigger refuses a second champion (_guards).
    sa.Index("one_champion", versions.c.status, unique=True, sqlite_where=champion_only, postgresql_where=champion_only).ddl_if(
        dialect=("sqlite", "postgresql")
    )
    events = sa.Table(
        "registry_events",
        md,
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("previous_champion", sa.String(64)),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64)),
        # The hash chain (lib/governance.py): position, the previous event's hash, this event's hash.
        sa.Column("seq", sa.Integer, unique=True),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64)),
    )
    # One row: the newest event's position and hash. Every append updates it first, which takes
    # a write lock in every database, so two writers cannot both extend the chain from the same event.
    head = sa.Table(
        "registry_head",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    api_keys = sa.Table(
        "api_keys",
        md,
        sa.Column("key_id", sa.String(12), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, index=True),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    predictions = sa.Table(
        "prediction_log",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("key_name", sa.String(64)),
        sa.Column("customer_id", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("churn_probability", sa.Float),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("arm", sa.String(32)),
    )
    erased = sa.Table(
        "erased_customers",
        md,
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    return Tables(md, versions, events, head, api_keys, predictions, erased)


class ModelRegistry(dg.ConfigurableResource):
    """Model versions, the champion and the audit trail, in a SQL database."""

    url: str = Field(description="SQLAlchemy URL of the registry database (SQLite file by default, PostgreSQL in production).")
    db_schema: str | None = Field(default=None, description="Database schema holding the registry tables (PostgreSQL).")
    code_version: str | None = Field(default=None, description="Code version recorded with new model versions; none: the git commit.")
    erasure_key: str | None = Field(
        default=None, description="Secret keying the hash kept of an erased customer id (set through an EnvVar); none: plain sha256."
    )

    _engine: Any = PrivateAttr(default=None)

    @cached_property
    def _t(self) -> Tables:
        return _tables(self.db_schema)

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
            _upgrade_events(engine, self._t)
            _guards(engine, self._t)
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

        versions = self._t.versions
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

        versions = self._t.versions
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
        versions = self._t.versions
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

        versions = self._t.versions
        if not reason.strip() or not actor.strip():
            raise RegistryError("a promotion needs an actor and a reason")
        with self.engine.begin() as conn:
            # The head row's lock first: promotions (and rollbacks) queue up in every database, so two racing
            # ones cannot both read "no champion" (MariaDB has no partial unique index to stop the second).
            head = self._t.head
            conn.execute(head.update().where(head.c.id == 1).values(seq=head.c.seq))
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

    # --- API keys (the scoring service's callers) ---------------------------------

    def create_api_key(self, name: str, scopes: list[str], *, actor: str) -> str:
        """A new key for `name`; returns the token, which is not stored anywhere (only its salted digest)."""
        import sqlalchemy as sa

        from lib.governance import KEY_NAME, check_scopes, new_key

        if not KEY_NAME.match(name):
            raise RegistryError("a key name is 1 to 64 letters, digits, dots, dashes or underscores")
        chosen = check_scopes(scopes)
        keys, key = self._t.api_keys, new_key()
        with self.engine.begin() as conn:
            active = keys.c.revoked_at.is_(None) & (keys.c.name == name)
            if conn.execute(sa.select(keys.c.key_id).where(active)).first() is not None:
                raise RegistryError(f"an active key named {name!r} exists; revoke it first (churn apikey revoke {name})")
            conn.execute(
                keys.insert().values(
                    key_id=key.key_id,
                    name=name,
                    scopes=",".join(chosen),
                    salt=key.salt,
                    digest=key.digest,
                    created_at=dt.datetime.now(dt.UTC),
                    created_by=actor[:200],
                )
            )
            self._event(conn, "apikey_created", None, None, actor, f"key {name} ({key.key_id}) scopes {','.join(chosen)}", None)
        return key.token

    def revoke_api_key(self, name: str, *, actor: str) -> int:
        """Revoke every active key named `name`; returns how many."""
        keys = self._t.api_keys
        with self.engine.begin() as conn:
            revoked = conn.execute(
                keys.update().where((keys.c.name == name) & keys.c.revoked_at.is_(None)).values(revoked_at=dt.datetime.now(dt.UTC))
            ).rowcount
            if revoked:
                self._event(conn, "apikey_revoked", None, None, actor, f"key {name} ({revoked} revoked)", None)
        return revoked

    def api_keys(self, *, active_only: bool = True) -> list[dict[str, Any]]:
        """Key rows (digests and salts, never keys): what the service checks bearer tokens against."""
        import sqlalchemy as sa

        keys = self._t.api_keys
        query = sa.select(keys).order_by(keys.c.created_at)
        if active_only:
            query = query.where(keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

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

    # --- erasure ----------------------------------------------------------------

    def record_erasure(self, customer_id: str, *, actor: str, reason: str, removed: dict[str, int]) -> str:
        """Forget one customer here (prediction record), remember their id's hash (refused at the next ingest) and
        record the erasure as an event that carries the hash, never the id. Returns the hash."""
        import sqlalchemy as sa

        from lib.governance import id_hash

        if not reason.strip():
            raise RegistryError("an erasure needs a reason (--reason), recorded in the registry")
        digest, t = id_hash(customer_id, self.erasure_key), self._t
        with self.engine.begin() as conn:
            removed = {
                **removed,
                "prediction_log": conn.execute(t.predictions.delete().where(t.predictions.c.customer_id == customer_id)).rowcount,
            }
            if conn.execute(sa.select(t.erased.c.id_sha256).where(t.erased.c.id_sha256 == digest)).first() is None:
                conn.execute(t.erased.insert().values(id_sha256=digest, at=dt.datetime.now(dt.UTC)))
            counts = ", ".join(f"{k} {v}" for k, v in sorted(removed.items()))
            self._event(conn, "erased", None, None, actor, f"customer {self.erasure_scheme}:{digest}: {reason} (removed: {counts})", None)
        return digest

    @property
    def erasure_scheme(self) -> str:
        """How erased ids are hashed here: keyed (deployment.erasure_key) or plain."""
        return "hmac-sha256" if self.erasure_key else "sha256"

    def erased_rows(self, frame: Any, erased: set[str] | None = None) -> Any:
        """A boolean Series: the rows of `frame` whose customer was erased (hashes compared under this registry's key);
        pass `erased` (from erased_hashes) to check several frames with one query."""
        from lib.erasure import erased_mask

        return erased_mask(frame, self.erased_hashes() if erased is None else erased, self.erasure_key)

    def erased_hashes(self) -> set[str]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(self._t.erased.c.id_sha256)).scalars())

    # --- verification -----------------------------------------------------------

    def chain(self) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """Every event in chain order and the head (newest seq, hash)."""
        import sqlalchemy as sa

        t = self._t
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(t.events).order_by(t.events.c.seq)).mappings()]
            head = conn.execute(sa.select(t.head.c.seq, t.head.c.hash).where(t.head.c.id == 1)).first()
        return rows, (head.seq, head.hash) if head else None

    def verify(self, artifacts: Any) -> list[str]:
        """Every problem found: breaks in the event chain, and artifacts whose bytes do not match the registry's sha256
        (or cannot be read). Empty: the history is intact and every recorded artifact is what was registered."""
        from lib.governance import check_chain

        events, head = self.chain()
        problems = [f"event {p.seq}: {p.problem}" for p in check_chain(events, head)]
        for v in self.versions():
            for label, uri, sha in (
                ("native", v.artifact_uri, v.artifact_sha256),
                ("onnx", v.onnx_uri, v.onnx_sha256),
                ("reference", v.reference_uri, v.reference_sha256),
            ):
                if not uri or not sha:
                    continue
                try:
                    artifacts.get(uri, sha)
                except Exception as exc:  # noqa: BLE001 (each artifact is judged on its own)
                    problems.append(f"{v.version} {label} artifact {uri}: {type(exc).__name__}: {exc}")
        return problems

    # --- reads ------------------------------------------------------------------

    def champion(self) -> ModelVersion | None:
        import sqlalchemy as sa

        versions = self._t.versions
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

        versions = self._t.versions
        query = sa.select(versions).order_by(versions.c.created_at.desc(), versions.c.version)
        if kind:
            query = query.where(versions.c.kind == kind)
        with self.engine.connect() as conn:
            return [_to_version(r) for r in conn.execute(query)]

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        events = self._t.events
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(events).order_by(events.c.id.desc()).limit(limit)).mappings().all()
        return [{**r, "at": _utc(r["at"]).isoformat()} for r in rows]

    # --- internals --------------------------------------------------------------

    def _row(self, conn: sa.Connection, version: str) -> Any:
        import sqlalchemy as sa

        versions = self._t.versions
        return conn.execute(sa.select(versions).where(versions.c.version == version)).first()

    def _event(
        self, conn: sa.Connection, action: str, version: str | None, previous: str | None, actor: str, reason: str, run_id: str | None
    ) -> dict[str, Any]:
        return _append_event(conn, self._t, action, version, previous, actor, reason, run_id)


def _append_event(
    conn: sa.Connection, t: Tables, action: str, version: str | None, previous: str | None, actor: str, reason: str, run_id: str | None
) -> dict[str, Any]:
    """Append one event to the hash chain inside the caller's transaction."""
    import sqlalchemy as sa

    from lib.governance import event_at, event_hash

    # Updating the head first takes the write lock (row lock in PostgreSQL and MariaDB, the database
    # in SQLite) before the previous hash is read: concurrent appends queue up instead of forking.
    conn.execute(t.head.update().where(t.head.c.id == 1).values(seq=t.head.c.seq + 1))
    seq, prev = conn.execute(sa.select(t.head.c.seq, t.head.c.hash).where(t.head.c.id == 1)).one()
    row = {
        "seq": seq,
        "at": event_at(),
        "action": action,
        "version": version,
        "previous_champion": previous,
        "actor": actor[:128],
        "reason": reason,
        "run_id": run_id,
        "prev_hash": prev,
    }
    row["hash"] = event_hash(row)
    conn.execute(t.events.insert().values(**row))
    conn.execute(t.head.update().where(t.head.c.id == 1).values(hash=row["hash"]))
    return row


def _upgrade_events(engine: sa.Engine, t: Tables) -> None:
    """Start the chain: the head row on a new database; on one from before the chain, the hash columns, then every
    existing event chained in id order (what the chain can vouch for starts at this upgrade)."""
    import sqlalchemy as sa

    from lib.governance import GENESIS, event_hash

    columns = {c["name"] for c in sa.inspect(engine).get_columns("registry_events", schema=t.events.schema)}
    with engine.begin() as conn:
        if "hash" not in columns:
            table = engine.dialect.identifier_preparer.format_table(t.events)
            for ddl in ("seq INTEGER", "prev_hash VARCHAR(64)", "hash VARCHAR(64)"):
                conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {ddl}"))  # noqa: S608 (fixed column names, quoted table)
        if conn.execute(sa.select(t.head.c.id)).first() is not None:
            return
        prev, seq = GENESIS, 0
        for old in conn.execute(sa.select(t.events).order_by(t.events.c.id)).mappings().all():
            seq += 1
            row = {**old, "seq": seq, "prev_hash": prev}
            row["hash"] = event_hash(row)
            conn.execute(t.events.update().where(t.events.c.id == old["id"]).values(seq=seq, prev_hash=prev, hash=row["hash"]))
            prev = row["hash"]
        try:
            with conn.begin_nested():
                conn.execute(t.head.insert().values(id=1, seq=seq, hash=prev))
        except sa.exc.IntegrityError:
            pass  # another process started the chain at the same moment


def _guards(engine: sa.Engine, t: Tables) -> None:
    """Triggers that refuse UPDATE and DELETE (and TRUNCATE in PostgreSQL) on the events table, and on MariaDB/MySQL
    a second champion in model_versions (what the partial unique index does elsewhere).

    A guard against rewriting history through the application's own account;
    whoever can drop triggers can still rewrite rows, which the hash chain
    then shows (`churn registry verify`).
    """
    import sqlalchemy as sa

    events = t.events
    name, dialect = engine.dialect.identifier_preparer.format_table(events), engine.dialect.name
    message = "registry_events is append-only: events are never changed or removed"
    if dialect == "sqlite":
        statements = [
            f"CREATE TRIGGER IF NOT EXISTS registry_events_no_{op.lower()} BEFORE {op} ON {name} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            for op in ("UPDATE", "DELETE")
        ]
    elif dialect == "postgresql":
        schema = engine.dialect.identifier_preparer.quote_schema(events.schema) + "." if events.schema else ""
        with engine.connect() as conn:
            present = conn.execute(
                sa.text("SELECT count(*) FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) AND tgname LIKE 'registry_events_%'"),
                {"t": name},
            ).scalar_one()
        if present >= 2:
            return
        statements = [
            f"CREATE OR REPLACE FUNCTION {schema}registry_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$",
            f"CREATE OR REPLACE TRIGGER registry_events_no_change BEFORE UPDATE OR DELETE ON {name} "
            f"FOR EACH ROW EXECUTE FUNCTION {schema}registry_events_append_only()",
            f"CREATE OR REPLACE TRIGGER registry_events_no_truncate BEFORE TRUNCATE ON {name} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {schema}registry_events_append_only()",
        ]
    elif dialect in ("mysql", "mariadb"):
        statements = [
            f"CREATE TRIGGER IF NOT EXISTS registry_events_no_{op.lower()} BEFORE {op} ON {name} "
            f"FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'"
            for op in ("UPDATE", "DELETE")
        ]
        versions = engine.dialect.identifier_preparer.format_table(t.versions)
        # A registry created before this knew it got a plain unique index on status (one row per status): drop it.
        indexes = sa.inspect(engine).get_indexes("model_versions", schema=t.versions.schema)
        if any(i["name"] == "one_champion" for i in indexes):
            statements.insert(0, f"DROP INDEX one_champion ON {versions}")
        # errno 1062 (duplicate key): callers see the IntegrityError the unique index raises elsewhere.
        statements += [
            f"CREATE TRIGGER IF NOT EXISTS model_versions_one_champion_{op.lower()} BEFORE {op} ON {versions} FOR EACH ROW "  # noqa: S608 (DDL from constants)
            f"BEGIN IF NEW.status = '{CHAMPION}' AND EXISTS (SELECT 1 FROM {versions} WHERE status = '{CHAMPION}' "
            "AND version <> NEW.version) THEN SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = 'one champion only', "
            "MYSQL_ERRNO = 1062; END IF; END"
            for op in ("INSERT", "UPDATE")
        ]
    else:
        return
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    except sa.exc.DBAPIError as exc:
        # No privilege for triggers (or a concurrent creator): the chain still shows any rewrite.
        import logging

        logging.getLogger(__name__).warning("registry_events: append-only triggers not created (%s); the hash chain still applies", exc)


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
