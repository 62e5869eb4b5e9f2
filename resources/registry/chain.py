"""The audit trail: append-only events in a hash chain (lib/governance.py), its upgrade, triggers and verification."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resources.registry.tables import CHAMPION, Tables

if TYPE_CHECKING:
    import sqlalchemy as sa


def append_event(
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


def upgrade_events(engine: sa.Engine, t: Tables) -> None:
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


def guards(engine: sa.Engine, t: Tables) -> None:
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
