"""The catalog: table `plants_data`, one code path for SQLite (embedded) and MySQL/MariaDB (pymysql)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    CHAR,
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    event,
    func,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import FetchedValue
from sqlalchemy.sql import Executable

from functions.lib import schema
from functions.lib.errors import Unavailable
from functions.lib.labels import LABELS

log = logging.getLogger("dandelion")

STATUSES = ("pending", "ingested", "failed", "excluded")  # excluded: an admin took it out of training
MAX_ATTEMPTS = 3  # failed ingestion attempts after which extraction stops retrying a row
CANONICAL_PREFIX = "https://raw.githubusercontent.com/btphan95/greenr-airflow/refs/heads/master/data/"
SEED_PER_LABEL = 200
T = TypeVar("T")


def _sql_list(values: Sequence[str]) -> str:
    """`'a', 'b'`: constants of our own, never user input, written into CHECK constraints."""
    return ", ".join(f"'{value}'" for value in values)


def surrogate_key() -> Column[int]:
    """`id`: BIGINT AUTO_INCREMENT on MySQL; on SQLite an INTEGER, the only type it autoincrements."""
    return Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)


metadata = MetaData()

plants_data = Table(
    "plants_data",
    metadata,
    surrogate_key(),
    Column("url_source", String(2048), nullable=False),
    # MySQL cannot put a unique index on a long utf8mb4 VARCHAR: the URL is unique through its hash.
    Column("url_hash", CHAR(64), nullable=False),
    Column("url_s3", String(1024)),
    Column("label", String(16), nullable=False),
    Column("sha256", CHAR(64)),
    Column("size_bytes", Integer),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),  # failed ingestion attempts
    Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    # Maintained by MySQL itself (ON UPDATE, migration 0002), and by SQLAlchemy in UPDATEs on SQLite.
    Column(
        "updated_at",
        DateTime,
        nullable=False,
        server_default=func.current_timestamp(),
        onupdate=func.current_timestamp(),
        server_onupdate=FetchedValue(),
    ),
    # Who decided on the row (accepted an upload, kept, relabelled or excluded it), and when.
    Column("decided_by", String(64)),
    Column("decided_at", DateTime),
    CheckConstraint(f"label IN ({_sql_list(LABELS)})", name="ck_plants_data_label"),
    CheckConstraint(f"status IN ({_sql_list(STATUSES)})", name="ck_plants_data_status"),
    Index("ux_plants_data_url_hash", "url_hash", unique=True),
    Index("ix_plants_data_status", "status"),
    Index("ix_plants_data_sha256", "sha256"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

ROW_FIELDS = ("url_source", "url_s3", "label", "sha256", "size_bytes", "status", "error")


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def seed_urls() -> list[tuple[str, str]]:
    """The 400 canonical (url, label) pairs the table starts with (shared/datasets/greenr/README.md)."""
    return [
        (f"{CANONICAL_PREFIX}{label}/{n:08d}.jpg", label) for label in LABELS for n in range(SEED_PER_LABEL)
    ]


# A server that stops answering (frozen, partitioned away) fails a request instead of hanging it: PyMySQL
# waits for a connection's greeting and for every answer without a limit unless told. A catalog query
# takes milliseconds; only the schema migration waits longer, for its lock.
CONNECT_TIMEOUT = 5
QUERY_TIMEOUT = 10


def _mysql_engine(db_url: str, read_timeout: int) -> Engine:
    # Sessions in UTC, as SQLite's CURRENT_TIMESTAMP is: every time in the catalog is UTC.
    return create_engine(
        db_url,
        pool_pre_ping=True,
        pool_recycle=3600,
        connect_args={
            "init_command": "SET time_zone = '+00:00'",
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": read_timeout,
            "write_timeout": read_timeout,
        },
    )


def open_catalog(db_url: str) -> Engine:
    """Connect, and bring the schema to the head migration: every process may be the first to start."""
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = migrator = create_engine(db_url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = _mysql_engine(db_url, QUERY_TIMEOUT)
        migrator = _mysql_engine(db_url, schema.LOCK_SECONDS + QUERY_TIMEOUT)
    try:
        with unavailable_on_outage("catalog"):
            schema.upgrade(migrator)
    finally:
        if migrator is not engine:
            migrator.dispose()
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the functions' threads read while one writes; the busy timeout serialises writers.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# MySQL error codes of an outage (cannot connect, gone away, lost, too many connections, lock timeouts),
# as opposed to OperationalErrors that are our own mistakes (a CHECK constraint, say).
# Errors that are the server's or its configuration's, never the client's: a 503 that says which, not a
# 500. Lost or refused connections, lock waits and deadlocks; a user refused (wrong password, no grant on
# the database or a table, a database that does not exist), as after a credential rotation half done.
_OUTAGE_CODES = (
    {1040, 1205, 1213, 2002, 2003, 2006, 2013} | (schema.ACCESS_DENIED - {1227}) | {1045, 1049, 1698}
)
DEADLOCK = 1213
DEADLOCK_ATTEMPTS = 3


def _is_outage(exc: OperationalError) -> bool:
    return (
        exc.connection_invalidated
        or schema.error_code(exc) in _OUTAGE_CODES
        or "database is locked" in str(exc.orig)
    )


def retry_deadlocks(transaction: Callable[[], T]) -> T:
    """Run a whole transaction again when InnoDB rolled it back as a deadlock's victim, as MySQL asks
    ("try restarting transaction"); concurrent inserts and updates of one table can deadlock on its
    index gaps under REPEATABLE READ."""
    for _ in range(DEADLOCK_ATTEMPTS - 1):
        try:
            return transaction()
        except OperationalError as exc:
            if schema.error_code(exc) != DEADLOCK:
                raise
    return transaction()


@contextmanager
def unavailable_on_outage(what: str) -> Iterator[None]:
    """Turn a lost connection into Unavailable (503, retry later) instead of an unexplained 500. The
    driver's words (the server's address, the user refused) go to the log, not to an anonymous client."""
    try:
        yield
    except OperationalError as exc:
        if _is_outage(exc):
            log.warning("the %s is unavailable: %s", what, exc.orig)
            raise Unavailable(f"the {what} is unavailable") from exc
        raise


def _settled(new: Any) -> ColumnElement[bool]:
    """Whether the existing row must stay as it is against the attempt `new` (the proposed values): an
    excluded row always; an ingested row against a failure (a slow failed attempt finishing after a
    successful one) or against another label. State only moves forward, and the database decides it."""
    table = plants_data.c
    return or_(
        table.status == "excluded",
        and_(table.status == "ingested", or_(new.status != "ingested", table.label != new.label)),
    )


def _upsert(connection: Connection, rows: Sequence[dict[str, Any]], update: Iterable[str]) -> None:
    """Insert rows keyed by url_hash; on a duplicate, update only `update` (nothing: keep the row), and
    only when the existing row is not settled (see `_settled`)."""
    if not rows:
        return
    update = list(update)
    dialect = connection.dialect.name
    stmt: Executable
    if dialect == "sqlite":
        lite = sqlite.insert(plants_data).values(list(rows))
        set_ = {name: lite.excluded[name] for name in update}
        stmt = (
            lite.on_conflict_do_update(
                index_elements=["url_hash"],
                set_=set_ | {"updated_at": func.now()},
                where=not_(_settled(lite.excluded)),
            )
            if set_
            else lite.on_conflict_do_nothing(index_elements=["url_hash"])
        )
    elif dialect in ("mysql", "mariadb"):
        my = mysql.insert(plants_data).values(list(rows))
        # MySQL applies the assignments in order, each seeing the ones before: the columns the condition
        # reads (label, then status) are assigned last, so every assignment sees the row as it was.
        last = [name for name in ("label", "status") if name in update]
        ordered = [name for name in update if name not in last] + last
        settled = _settled(my.inserted)
        mset: list[tuple[str, Any]] = [
            (name, case((settled, plants_data.c[name]), else_=my.inserted[name])) for name in ordered
        ]
        stmt = my.on_duplicate_key_update(mset or [("url_hash", my.inserted.url_hash)])
    else:
        raise NotImplementedError(f"catalog dialect {dialect!r}")
    connection.execute(stmt)


def seed(engine: Engine) -> int:
    """Insert the canonical rows that are missing; returns how many were new (idempotent)."""
    before = count(engine)
    rows = [{"url_source": u, "url_hash": url_hash(u), "label": label} for u, label in seed_urls()]
    with unavailable_on_outage("catalog"), engine.begin() as connection:
        _upsert(connection, rows, update=())
    return count(engine) - before


def record(engine: Engine, url: str, label: str, **fields: Any) -> None:
    """Create or update the row of `url` with the outcome of an ingestion attempt."""
    with unavailable_on_outage("catalog"), engine.begin() as connection:
        record_in(connection, url, label, **fields)


def record_in(connection: Connection, url: str, label: str, **fields: Any) -> None:
    """`record` inside a transaction of the caller's, with whatever else must commit with it."""
    row = {"url_source": url, "url_hash": url_hash(url), "label": label, **fields}
    _upsert(connection, [row], update=[k for k in row if k not in ("url_source", "url_hash")])


def record_failure(engine: Engine, url: str, error: str) -> bool:
    """Say why the last attempt at a catalogued row failed; returns whether a row took it. Only a pending
    or failed row does: a URL nobody catalogued leaves nothing behind (anyone may post one), and a row
    another attempt ingested, or an admin excluded, stays as it is."""
    statement = (
        update(plants_data)
        .where(plants_data.c.url_hash == url_hash(url), plants_data.c.status.in_(("pending", "failed")))
        .values(
            status="failed",
            error=error,
            url_s3=None,
            sha256=None,
            size_bytes=None,
            attempts=plants_data.c.attempts + 1,
            updated_at=func.now(),
        )
    )
    with unavailable_on_outage("catalog"), engine.begin() as connection:
        return connection.execute(statement).rowcount > 0


def get(engine: Engine, url: str) -> dict[str, Any] | None:
    query = select(*(plants_data.c[f] for f in ROW_FIELDS)).where(plants_data.c.url_hash == url_hash(url))
    with unavailable_on_outage("catalog"), engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def not_ingested(engine: Engine, limit: int = 0) -> list[dict[str, str]]:
    """Rows still to ingest (pending, or failed fewer than `MAX_ATTEMPTS` times), oldest first; never one
    an admin excluded."""
    table = plants_data.c
    query = (
        select(table.url_source, table.label)
        .where(or_(table.status == "pending", and_(table.status == "failed", table.attempts < MAX_ATTEMPTS)))
        .order_by(plants_data.c.id)
    )
    if limit > 0:
        query = query.limit(limit)
    with unavailable_on_outage("catalog"), engine.connect() as conn:
        return [{"url": r.url_source, "label": r.label} for r in conn.execute(query)]


def ingested_images(connection: Connection) -> list[tuple[str, str]]:
    """(label, sha256) of every ingested row: what a dataset snapshot freezes, inside the snapshot's
    transaction (it reads the count of new labels in the same one). Rows a person decided on come first,
    the latest decision first, so that where the same image has two labels the admin's wins; an image
    an admin excluded stays out, whichever URL brought it."""
    table = plants_data.c
    excluded = select(table.sha256).where(table.status == "excluded", table.sha256.is_not(None))
    query = (
        select(table.label, table.sha256)
        .where(table.status == "ingested", table.sha256.not_in(excluded))
        .order_by(table.decided_at.is_(None), table.decided_at.desc(), table.id)
    )
    return [(label, sha256) for label, sha256 in connection.execute(query)]


def decide_on_image(connection: Connection, sha256: str, decided: dict[str, Any], **changes: Any) -> int:
    """Apply an admin's decision to every ingested row of an image (the same bytes may have come from
    several URLs), keeping who decided and when; returns how many rows it changed."""
    statement = (
        update(plants_data)
        .where(plants_data.c.sha256 == sha256, plants_data.c.status == "ingested")
        .values(decided_by=decided["decided_by"], decided_at=decided["decided_at"], **changes)
    )
    return int(connection.execute(statement).rowcount)


def referenced(connection: Connection, url_s3: str) -> bool:
    """Whether any row still points at this object (before an object moves away for good)."""
    return (
        connection.execute(select(plants_data.c.id).where(plants_data.c.url_s3 == url_s3).limit(1)).first()
        is not None
    )


def decided_images(connection: Connection) -> set[str]:
    """SHA-256 of every image an admin has decided on: the label audit queues none of them again."""
    query = select(plants_data.c.sha256).where(plants_data.c.decided_at.is_not(None)).distinct()
    return {sha256 for (sha256,) in connection.execute(query)}


def count(engine: Engine) -> int:
    with unavailable_on_outage("catalog"), engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(plants_data)).scalar_one()


def counts_by_status_and_label(engine: Engine) -> dict[str, dict[str, int]]:
    """Rows by status, then by label; every status and label present, zeros included."""
    columns = (plants_data.c.status, plants_data.c.label)
    query = select(*columns, func.count()).group_by(*columns)
    with unavailable_on_outage("catalog"), engine.connect() as conn:
        found = {(status, label): n for status, label, n in conn.execute(query)}
    return {status: {label: found.get((status, label), 0) for label in LABELS} for status in STATUSES}


def counts_by_status(engine: Engine) -> dict[str, int]:
    return {status: sum(by_label.values()) for status, by_label in counts_by_status_and_label(engine).items()}


def mysql_init_sql() -> str:
    """The MySQL init script for platform/mysql (run once on an empty server): the migrations to head,
    as Alembic renders them for MySQL, then the seed rows."""
    values = ",\n".join(f"  ('{u}', '{url_hash(u)}', '{label}')" for u, label in seed_urls())
    parts = [
        "-- Generated by `dandelion render` from functions/lib/migrations: do not edit.",
        schema.mysql_script().strip(),
        f"INSERT IGNORE INTO plants_data (url_source, url_hash, label) VALUES\n{values};",
    ]
    text = "\n\n".join(parts) + "\n"
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
