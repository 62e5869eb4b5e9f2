"""The audit trail: append-only events in a hash chain (lib/chain.py), its upgrade, attestation and triggers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from resources.registry.tables import CHAMPION, Tables

if TYPE_CHECKING:
    import sqlalchemy as sa


class ChainKeyMissing(RuntimeError):
    """An append to a keyed chain by a process that lacks the chain key: refused rather than leaving an event that fails verify."""


def append_event(
    conn: sa.Connection,
    t: Tables,
    action: str,
    version: str | None,
    previous: str | None,
    actor: str,
    reason: str,
    run_id: str | None,
    facts: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Append one event to the hash chain inside the caller's transaction; `facts` (what it proves) are hashed with it,
    and under a chain key the event carries its MAC."""
    import sqlalchemy as sa

    from lib.chain import event_at, event_hash, event_mac, facts_text

    # Updating the head first takes the write lock (row lock in PostgreSQL and MariaDB, the database
    # in SQLite) before the previous hash is read: concurrent appends queue up instead of forking.
    conn.execute(t.head.update().where(t.head.c.id == 1).values(seq=t.head.c.seq + 1))
    seq, prev = conn.execute(sa.select(t.head.c.seq, t.head.c.hash).where(t.head.c.id == 1)).one()
    if key is None and seq > 1:
        if conn.execute(sa.select(t.events.c.seq).where(t.events.c.mac.is_not(None)).limit(1)).first() is not None:
            raise ChainKeyMissing(
                "the registry's event chain is keyed but this process has no chain key: set CHURN_CHAIN_KEY "
                "(deployment.chain_key) to the deployment's key before changing the registry"
            )
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
        "facts": facts_text(facts or {}),
    }
    row["hash"] = event_hash(row)
    row["mac"] = event_mac(key, row["hash"]) if key else None
    conn.execute(t.events.insert().values(**row))
    conn.execute(t.head.update().where(t.head.c.id == 1).values(hash=row["hash"]))
    return row


def upgrade_events(engine: sa.Engine, t: Tables) -> None:
    """Start the chain: the head row on a new database; on one from before the chain, the hash columns, then every
    existing event chained in id order (what the chain can vouch for starts at this upgrade); on one from before
    facts, the facts and MAC columns."""
    import sqlalchemy as sa

    from lib.chain import GENESIS, event_hash

    columns = {c["name"] for c in sa.inspect(engine).get_columns("registry_events", schema=t.events.schema)}
    with engine.begin() as conn:
        table = engine.dialect.identifier_preparer.format_table(t.events)
        long_text = "LONGTEXT" if engine.dialect.name in ("mysql", "mariadb") else "TEXT"
        wanted = ("seq INTEGER", "prev_hash VARCHAR(64)", "hash VARCHAR(64)", f"facts {long_text}", "mac VARCHAR(64)")
        added = [ddl for ddl in wanted if ddl.split()[0] not in columns]
        for ddl in added:
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


def attest_tables(engine: sa.Engine, t: Tables, key: str | None) -> list[dict[str, Any]]:
    """Bring the tables under the chain: once, on a registry whose events predate facts (an older release), one
    `tables_attested` event records the champion, every version's digests, the keys and the erased hashes as they
    are now; from it on the chain proves them. With a chain key set on a chain that has no keyed event yet, one
    `chain_keyed` event starts the keyed part. Nothing on a new registry: its first event carries facts."""
    import sqlalchemy as sa

    from lib.chain import ATTESTED, CHAMPION, KEYED, attestation

    events = t.events
    with engine.connect() as conn:
        legacy = conn.execute(sa.select(events.c.seq).where(events.c.facts.is_(None)).limit(1)).first() is not None
        attested = conn.execute(sa.select(events.c.seq).where(events.c.action == ATTESTED).limit(1)).first() is not None
        head = conn.execute(sa.select(t.head.c.seq).where(t.head.c.id == 1)).scalar_one()
        ever_keyed = conn.execute(sa.select(events.c.seq).where(events.c.mac.is_not(None)).limit(1)).first() is not None
    if legacy and not attested:
        with engine.begin() as conn:
            conn.execute(t.head.update().where(t.head.c.id == 1).values(seq=t.head.c.seq))  # the write lock, then re-check
            if conn.execute(sa.select(events.c.seq).where(events.c.action == ATTESTED).limit(1)).first() is None:
                versions = [dict(r) for r in conn.execute(sa.select(t.versions)).mappings()]
                keys = [dict(r) for r in conn.execute(sa.select(t.api_keys)).mappings()]
                erased = set(conn.execute(sa.select(t.erased.c.id_sha256)).scalars())
                champion = next((v["version"] for v in versions if v["status"] == CHAMPION), None)
                facts = attestation(champion, versions, keys, erased)
                return [append_event(conn, t, ATTESTED, None, None, "registry upgrade", "tables brought under the chain", None, facts, key)]
        return []
    if key and head and not ever_keyed:
        with engine.begin() as conn:
            return [
                append_event(conn, t, KEYED, None, None, "registry", "events from here on carry a MAC under the chain key", None, {}, key)
            ]
    return []


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
