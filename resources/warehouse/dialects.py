"""What differs between databases: column types, how a declared type reads, session setup, plain identifiers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported lazily at run time: loading the code location should not pay for it.
    import sqlalchemy as sa


# How a timestamp column is compared and read: the day windows differ per kind.
TEXT, TIMESTAMP, TIMESTAMPTZ, DATE = "text", "timestamp", "timestamptz", "date"


def _sa_types() -> dict[str, sa.types.TypeEngine]:
    """Column types of the table the generator creates (canonical names)."""
    import sqlalchemy as sa

    return {
        "transaction_id": sa.BigInteger(),
        "customer_id": sa.String(64),
        "ts": sa.DateTime(),
        "amount": sa.Double(),
        "quantity": sa.Integer(),
        "channel": sa.String(16),
        "category": sa.String(32),
        "payment_method": sa.String(16),
    }


_EXPECTED_FAMILY = {
    "transaction_id": "an integer type",
    "customer_id": "a string, integer or UUID type",
    "ts": "a timestamp, date or text type",
    "amount": "a numeric type",
    "quantity": "an integer type",
    "channel": "a string type",
    "category": "a string type",
    "payment_method": "a string type",
}


def _time_kind(declared: sa.types.TypeEngine, backend: str) -> str | None:
    import sqlalchemy as sa

    if backend == "sqlite" or isinstance(declared, sa.types.NullType | sa.String | sa.Text | sa.Enum):
        return TEXT  # SQLite keeps text whatever the declared type says: compared and parsed as text
    if isinstance(declared, sa.DateTime):
        return TIMESTAMPTZ if getattr(declared, "timezone", False) else TIMESTAMP
    if isinstance(declared, sa.Date):
        return DATE
    return None


def _family(declared: sa.types.TypeEngine, backend: str) -> str:
    """A column's kind of values, for proposing a mapping: text, integer, number, timestamp, timestamptz, date or other."""
    import sqlalchemy as sa

    kind = _time_kind(declared, backend) if not isinstance(declared, sa.types.NullType) else None
    if kind in (TIMESTAMP, TIMESTAMPTZ, DATE):
        return kind
    if isinstance(declared, sa.Integer):
        return "integer"
    if isinstance(declared, sa.Numeric | sa.Float):
        return "number"
    if isinstance(declared, sa.String | sa.Text | sa.Enum | sa.Uuid) or backend == "sqlite":
        # SQLite: "DATETIME" or "DATE" are text underneath; the name and the samples tell.
        name = str(declared).upper()
        return "date" if name == "DATE" else "timestamp" if ("DATE" in name or "TIME" in name) else "text"
    return "other"


def _compatible(name: str, declared: sa.types.TypeEngine) -> bool:
    import sqlalchemy as sa

    if isinstance(declared, sa.types.NullType):
        return True  # SQLite without a declared type: checked per value instead
    family = _EXPECTED_FAMILY[name]
    if name == "customer_id":
        return isinstance(declared, sa.String | sa.Text | sa.Enum | sa.Integer | sa.Numeric | sa.Uuid)
    if family == "an integer type":
        return isinstance(declared, sa.Integer | sa.Numeric | sa.String)
    if family == "a numeric type":
        return isinstance(declared, sa.Integer | sa.Numeric | sa.Float | sa.String)
    if name == "ts":
        return True  # decided by _time_kind
    return isinstance(declared, sa.String | sa.Text | sa.Enum)


def _sqlite_text(raw: bytes) -> str | bytes:
    """SQLite stores whatever bytes it is given: undecodable text arrives as bytes, so the row is quarantined with them (hex)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _utc_session(dbapi_connection: Any, _record: object) -> None:
    module = type(dbapi_connection).__module__
    statement = "SET time_zone = '+00:00'" if "pymysql" in module or "mysql" in module.lower() else "SET TIME ZONE 'UTC'"
    # Outside a transaction: a rolled-back transaction would undo a PostgreSQL SET.
    # (pymysql's autocommit is a method, and a MariaDB SET is not transactional: nothing to switch there.)
    switch = not callable(dbapi_connection.autocommit)
    if switch:
        autocommit, dbapi_connection.autocommit = dbapi_connection.autocommit, True
    cursor = dbapi_connection.cursor()
    cursor.execute(statement)
    cursor.close()
    if switch:
        dbapi_connection.autocommit = autocommit


def _lenient_sqlite_text(dbapi_connection: object, _record: object) -> None:
    dbapi_connection.text_factory = _sqlite_text  # type: ignore[attr-defined]
