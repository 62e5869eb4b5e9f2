"""The registry's tables, in one SQLAlchemy metadata (created on first use, in any database SQLAlchemy speaks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import sqlalchemy as sa

from lib.chain import ARCHIVED, CANDIDATE, CHAMPION

__all__ = ["ARCHIVED", "CANDIDATE", "CHAMPION", "Tables", "build_tables", "upgrade_versions"]


class Tables(NamedTuple):
    md: sa.MetaData
    versions: sa.Table
    events: sa.Table
    head: sa.Table
    api_keys: sa.Table
    predictions: sa.Table
    erased: sa.Table


def build_tables(schema: str | None) -> Tables:
    import sqlalchemy as sa

    md = sa.MetaData(schema=schema)
    versions = _versions(md)
    events, head = _events(md)
    api_keys, predictions, erased = _service(md)
    return Tables(md, versions, events, head, api_keys, predictions, erased)


def _versions(md: sa.MetaData) -> sa.Table:
    """One row per trained model; at most one of them the champion."""
    import sqlalchemy as sa

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
        # The MLflow run the version was logged to (a link for people; the registry stays the source of truth).
        sa.Column("tracking_run_id", sa.String(64)),
    )
    champion_only = versions.c.status == CHAMPION
    # A partial unique index where the database has them; MariaDB/MySQL have none (a unique index on status would
    # allow one candidate in all), so there a trigger refuses a second champion (_guards).
    sa.Index("one_champion", versions.c.status, unique=True, sqlite_where=champion_only, postgresql_where=champion_only).ddl_if(
        dialect=("sqlite", "postgresql")  # type: ignore[arg-type]  # a tuple of names is documented; the stub says str
    )
    return versions


def _events(md: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The audit trail and its head (the newest event's position and hash)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

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
        # What the event proves (lib/chain.py: digests, key facts, an erased id's hash) and its MAC under the chain key.
        # LONGTEXT on MariaDB/MySQL, whose TEXT stops at 64 kB: an upgrade's attestation lists every version and key.
        sa.Column("facts", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")),
        sa.Column("mac", sa.String(64)),
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
    return events, head


def _service(md: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    """What the scoring service and erasure keep: API key digests, the prediction record, erased ids' hashes."""
    import sqlalchemy as sa

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
    return api_keys, predictions, erased


def upgrade_versions(engine: sa.Engine, t: Tables) -> None:
    """Columns model_versions gained after a registry was created (``create_all`` adds tables, never columns)."""
    import sqlalchemy as sa

    columns = {c["name"] for c in sa.inspect(engine).get_columns("model_versions", schema=t.versions.schema)}
    if "tracking_run_id" in columns:
        return
    table = engine.dialect.identifier_preparer.format_table(t.versions)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN tracking_run_id VARCHAR(64)"))  # noqa: S608 (fixed column, quoted table)
