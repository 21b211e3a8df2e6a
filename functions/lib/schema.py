"""The catalog's schema, by Alembic migrations (`functions/lib/migrations/versions`): every process that
opens the catalog brings it to the head revision first, and the MySQL init script is rendered from the
same migrations, so a fresh server, an old catalog and a new one all end at one schema.

A catalog made before migrations existed (the table, no `alembic_version`) is the first revision's
schema: it is stamped as such, then upgraded. Concurrent starts take a lock (MySQL's GET_LOCK, a file
lock beside a SQLite database) so that one process migrates and the others find it done.

On MySQL in a cluster only the schema's owner may migrate (functions.lib.privileges): a process whose
user may not finds the schema behind and says so (503) until `dandelion migrate` has run.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError

from functions.lib.errors import Unavailable

BASELINE = "0001"  # the schema `create_all` made before migrations
LOCK_SECONDS = 120
# MySQL's "command denied" errors: on the database (1044), a table (1142), a column (1143), or one
# needing a privilege of the server's (1227).
ACCESS_DENIED = {1044, 1142, 1143, 1227}


def error_code(exc: OperationalError) -> int | None:
    """The MySQL error number of a driver error (None for SQLite's, which have none)."""
    return exc.orig.args[0] if exc.orig is not None and exc.orig.args else None


def _config(
    connection: Connection | None = None, dialect: str | None = None, output: io.StringIO | None = None
) -> Config:
    config = Config(output_buffer=output)
    config.set_main_option("script_location", "functions.lib:migrations")
    if dialect:
        config.set_main_option("dialect_name", dialect)
    config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or BASELINE


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@contextlib.contextmanager
def _lock(engine: Engine, connection: Connection) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        database = engine.url.database or ""
        with Path(f"{database}.migrate-lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield
        return
    if connection.execute(text("SELECT GET_LOCK('dandelion_schema', :s)"), {"s": LOCK_SECONDS}).scalar() != 1:
        raise Unavailable(f"another process has been migrating the catalog for over {LOCK_SECONDS} s")
    try:
        yield
    finally:
        connection.execute(text("SELECT RELEASE_LOCK('dandelion_schema')"))


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the catalog to `revision` (the head by default); cheap when it is there already (one read)."""
    target = head() if revision == "head" else revision
    with engine.connect() as connection:
        if current(connection) == target:
            return
    with engine.connect() as connection, _lock(engine, connection):
        config = _config(connection)
        found = current(connection)
        try:
            if found is None and inspect(connection).has_table("plants_data"):
                command.stamp(config, BASELINE)  # made before migrations: it is the baseline's schema
            command.upgrade(config, target)
        except OperationalError as exc:
            if error_code(exc) not in ACCESS_DENIED:
                raise
            raise Unavailable(
                f"the catalog's schema is at revision {found}, this code needs {target}, and database user "
                f"{engine.url.username!r} may not migrate it: run `dandelion migrate` as the schema's owner"
            ) from exc
        connection.commit()


def mysql_script() -> str:
    """The SQL that brings an empty MySQL database to the head revision (Alembic's offline mode)."""
    buffer = io.StringIO()
    command.upgrade(_config(dialect="mysql", output=buffer), "head", sql=True)
    return buffer.getvalue()
