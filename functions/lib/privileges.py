"""Least privilege in the catalog: the MySQL/MariaDB user each part of Dandelion connects as, and exactly
what it may do there. The one place the grants are written: `dandelion render` writes them as
platform/mysql/grants.sql (the server's first start, after the schema), and `dandelion migrate --grant`
applies them again after a migration (the cluster's catalog-migrate Job).

- `dandelion_migrate` owns the schema: the DDL the migrations run, the data, and GRANT OPTION, so that it
  can hand the roles below their privileges on tables a migration adds. Only the migrate Job uses it.
- Every other role gets DML only, table by table, and column by column where a table is shared: ingestion
  writes what an ingestion attempt decides but never an admin's decision (`decided_by`, `decided_at`);
  the label audit queues suspects but never decides them; nobody DELETEs, and no role but the owner may
  CREATE, ALTER, DROP or TRUNCATE anything. Every role reads `alembic_version`: a process checks that
  the schema is at its head before it starts (functions.lib.schema).
- predict has no database user at all: it reads only the object store.

MariaDB's INSERT ... ON DUPLICATE KEY UPDATE (the catalog's upserts) needs UPDATE and SELECT on every
column it inserts, not only on those it assigns: hence UPDATE on `url_source` and `url_hash`, which no
statement of Dandelion changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, text

from functions.lib import catalog, outbox, retrain, submissions
from functions.lib.errors import ConfigError

Privileges = Mapping[str, tuple[str, ...]]  # privilege -> its columns; () is the whole table
WHOLE_TABLE: tuple[str, ...] = ()
READ: Privileges = {"SELECT": WHOLE_TABLE}

# Columns written together, by what writes them.
INGESTION = ("url_source", "url_hash", "label", "status", "error", "url_s3", "sha256", "size_bytes")
DECISION = ("decided_by", "decided_at")  # a person's decision on a catalog row
QUEUED: tuple[str, ...] = ("kind", "sha256", "object_key", "content_type", "label", "predicted_class")
QUEUED += ("confidence", "model_version")  # a submission or a suspect, as it is queued
REVIEWED = ("status", "decided_label", "decided_by", "decided_at")  # an admin's decision on a submission
COUNTS = ("accepted_since_training", "batches_announced")


@dataclass(frozen=True)
class Role:
    user: str
    tables: Mapping[str, Privileges]


MIGRATOR = "dandelion_migrate"
# The schema's owner: what the migrations run (CREATE also covers ALTER TABLE's copies, INDEX is CREATE
# and DROP INDEX, REFERENCES foreign keys), with GRANT OPTION. Not DROP: no migration drops a table, and
# DROP would also allow TRUNCATE and DROP DATABASE; a migration that needs it adds it here.
OWNER_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "INDEX", "REFERENCES")

# Each workload's role, by the name of the workload that connects with it.
ROLES: dict[str, Role] = {
    # catalog.get, catalog.record (an upsert) and catalog.record_failure.
    "ingest-one-url": Role(
        "dandelion_ingest",
        {
            "alembic_version": READ,
            "plants_data": {
                "SELECT": WHOLE_TABLE,
                "INSERT": INGESTION,
                "UPDATE": (*INGESTION, "attempts", "updated_at"),
            },
        },
    ),
    # list-pending: catalog.not_ingested. Its other steps call ingest-one-url and hold no credentials.
    "extract-images": Role("dandelion_extract", {"alembic_version": READ, "plants_data": READ}),
    # Submissions, the admin's decisions (which write catalog rows), the retrain count and its outbox.
    "validate-label": Role(
        "dandelion_label",
        {
            "alembic_version": READ,
            "plants_data": {
                "SELECT": WHOLE_TABLE,
                "INSERT": (*INGESTION, *DECISION),
                "UPDATE": (*INGESTION, *DECISION, "updated_at"),
            },
            "submissions": {"SELECT": WHOLE_TABLE, "INSERT": QUEUED, "UPDATE": (*QUEUED, *REVIEWED)},
            "retrain_state": {"SELECT": WHOLE_TABLE, "UPDATE": COUNTS},
            "outbox": {
                "SELECT": WHOLE_TABLE,
                "INSERT": ("event_type", "payload"),
                "UPDATE": ("claimed_until", "attempts", "last_error", "sent_at"),
            },
        },
    ),
    # The snapshot reads the catalog and the count of new labels; the label audit queues suspects
    # (submissions.queue_suspects); a successful training counts its labels as trained.
    "train-model": Role(
        "dandelion_train",
        {
            "alembic_version": READ,
            "plants_data": READ,
            "submissions": {"SELECT": WHOLE_TABLE, "INSERT": QUEUED, "UPDATE": QUEUED},
            "retrain_state": {"SELECT": WHOLE_TABLE, "UPDATE": COUNTS},
        },
    ),
}

CATALOG_DATABASE = "dandelion"  # MARIADB_DATABASE in platform/base/mysql/statefulset.yaml
HOST = "%"  # from any pod: the NetworkPolicy mysql-from-clients decides which may connect
# Every table of the schema's head and its columns: a grant naming anything else is a mistake.
_COLUMNS: dict[str, tuple[str, ...]] = {
    table.name: tuple(column.name for column in table.columns)
    for table in (catalog.plants_data, submissions.submissions, retrain.retrain_state, outbox.outbox)
} | {"alembic_version": ("version_num",)}
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def default_users() -> dict[str, str]:
    return {name: role.user for name, role in ROLES.items()}


def _name(value: str) -> str:
    """An identifier written into SQL: refused unless plainly one, so that nothing can be injected."""
    if not _NAME.fullmatch(value):
        raise ConfigError(f"not a plain MySQL name: {value!r}")
    return value


def _columns(table: str, columns: tuple[str, ...]) -> str:
    unknown = [column for column in columns if column not in _COLUMNS[table]]
    if unknown:
        raise ValueError(f"privileges name columns {table} does not have: {', '.join(unknown)}")
    return f" ({', '.join(f'`{column}`' for column in columns)})" if columns else ""


def grant_statements(database: str, users: Mapping[str, str] | None = None) -> list[str]:
    """One GRANT per role and table, for `users` (workload -> user name; the defaults when None)."""
    users = default_users() if users is None else users
    statements = []
    for workload, role in ROLES.items():
        account = f"'{_name(users[workload])}'@'{HOST}'"
        for table, privileges in role.tables.items():
            if table not in _COLUMNS:
                raise ValueError(f"privileges name a table the catalog does not have: {table}")
            granted = ", ".join(f"{name}{_columns(table, columns)}" for name, columns in privileges.items())
            statements.append(f"GRANT {granted} ON `{_name(database)}`.`{table}` TO {account}")
    return statements


def owner_statement(database: str, user: str = MIGRATOR) -> str:
    privileges = ", ".join(OWNER_PRIVILEGES)
    return f"GRANT {privileges} ON `{_name(database)}`.* TO '{_name(user)}'@'{HOST}' WITH GRANT OPTION"


def mysql_grants_sql(
    database: str = CATALOG_DATABASE, users: Mapping[str, str] | None = None, owner: str = MIGRATOR
) -> str:
    """platform/mysql/grants.sql: the owner's privileges, then every role's, for the server's first start
    (after the users exist and the schema is in place); other names only for tests."""
    lines = [
        "-- Generated by `dandelion render` from functions/lib/privileges.py: do not edit.",
        "-- MariaDB's entrypoint runs it after 10-users.sh (the users) and 20-dandelion-catalog.sql.",
        "",
        f"{owner_statement(database, owner)};",
        *(f"{statement};" for statement in grant_statements(database, users)),
    ]
    return "\n".join(lines) + "\n"


def grant(engine: Engine, users: Mapping[str, str] | None = None) -> list[str]:
    """Give every role its privileges on the catalog `engine` connects to (as its owner, or root);
    returns the statements run. GRANT only adds: a privilege taken out of `ROLES` needs a REVOKE."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        raise ConfigError("database users and grants exist on MySQL/MariaDB only, not on SQLite")
    statements = grant_statements(engine.url.database or "", users)
    with catalog.unavailable_on_outage("catalog"), engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    return statements
