"""Schema migrations on SQLite and on MariaDB: an old catalog is brought to the head without losing a
row, concurrent first starts migrate once, and MySQL keeps `updated_at` moving on an upsert."""

import threading
import time

import pytest
from sqlalchemy import create_engine, select, text, update

from functions.lib import catalog, schema
from tests.conftest import canonical

pytestmark = pytest.mark.integration


# plants_data's columns at revision 0001: what an old catalog has, and must keep, row for row.
BASELINE_COLUMNS = (
    "id",
    "url_source",
    "url_hash",
    "url_s3",
    "label",
    "sha256",
    "size_bytes",
    "status",
    "error",
)
BASELINE_COLUMNS += ("created_at", "updated_at")


def rows(engine) -> list[dict]:
    columns = [catalog.plants_data.c[name] for name in BASELINE_COLUMNS]
    with engine.connect() as connection:
        query = select(*columns).order_by(catalog.plants_data.c.id)
        return [dict(row) for row in connection.execute(query).mappings()]


def old_catalog(db_url: str, revision: str | None):
    """A catalog at `revision`, or, for None, as `create_all` made it before migrations (no version)."""
    engine = create_engine(db_url)
    schema.upgrade(engine, revision or schema.BASELINE)
    if revision is None:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
    for n in range(3):
        catalog.record(engine, canonical("grass", n), "grass", status="pending")
    catalog.record(
        engine, canonical("dandelion", 0), "dandelion", status="failed", error="upstream_error: 502"
    )
    return engine


@pytest.mark.parametrize(
    "revision", [None, "0001", "0002", "0003"], ids=["before-migrations", "0001", "0002", "0003"]
)
def test_an_older_catalog_is_upgraded_to_the_head_and_loses_nothing(db_url: str, revision) -> None:
    before = rows(old_catalog(db_url, revision))
    engine = catalog.open_catalog(db_url)  # what every process does when it starts
    with engine.connect() as connection:
        assert schema.current(connection) == schema.head()
    assert rows(engine) == before
    assert catalog.counts_by_status(engine) == {"pending": 3, "ingested": 0, "failed": 1, "excluded": 0}


def test_concurrent_first_starts_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            catalog.open_catalog(db_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with catalog.open_catalog(db_url).connect() as connection:
        assert schema.current(connection) == schema.head()


def test_an_upsert_that_changes_a_row_moves_its_updated_at(db_url: str) -> None:
    engine = catalog.open_catalog(db_url)
    url = canonical("grass", 7)
    catalog.record(engine, url, "grass", status="pending")
    table = catalog.plants_data
    with engine.begin() as connection:
        connection.execute(update(table).values(updated_at=text("'2020-01-01 00:00:00'")))
    catalog.record(engine, url, "grass", status="failed", error="upstream_error: 502")
    with engine.connect() as connection:
        updated = connection.execute(select(table.c.updated_at)).scalar_one()
    assert updated.year >= time.gmtime().tm_year - 1, updated
