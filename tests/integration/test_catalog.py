"""The catalog on SQLite and on MariaDB through pymysql: same code, same answers."""

import pymysql
import pytest
from sqlalchemy import func, select

from functions.lib import catalog
from tests.conftest import MYSQL, canonical
from tests.support import ROOT

pytestmark = pytest.mark.integration


def test_seed_inserts_the_400_canonical_rows_once(db_url: str) -> None:
    engine = catalog.open_catalog(db_url)
    assert catalog.seed(engine) == 400
    assert catalog.seed(engine) == 0
    assert catalog.counts_by_status(engine) == {"pending": 400, "ingested": 0, "failed": 0, "excluded": 0}
    assert catalog.get(engine, canonical("grass", 199)) == {
        "url_source": canonical("grass", 199),
        "url_s3": None,
        "label": "grass",
        "sha256": None,
        "size_bytes": None,
        "status": "pending",
        "error": None,
    }


def test_record_upserts_one_row_per_url(db_url: str) -> None:
    engine = catalog.open_catalog(db_url)
    url = "https://example.org/a-very-long-path/" + "x" * 1500 + ".jpg"  # longer than an indexable VARCHAR
    catalog.record(engine, url, "grass", status="failed", error="upstream_error: HTTP 500")
    catalog.record(
        engine,
        url,
        "grass",
        status="ingested",
        error=None,
        url_s3="s3://b/raw/grass/ab.jpg",
        sha256="ab" * 32,
        size_bytes=123,
    )
    assert catalog.count(engine) == 1
    assert catalog.get(engine, url) == {
        "url_source": url,
        "url_s3": "s3://b/raw/grass/ab.jpg",
        "label": "grass",
        "sha256": "ab" * 32,
        "size_bytes": 123,
        "status": "ingested",
        "error": None,
    }


INGESTED = {"error": None, "url_s3": "s3://b/raw/grass/ab.jpg", "sha256": "ab" * 32, "size_bytes": 10}
FAILED = {"error": "upstream_timeout: slow", "url_s3": None, "sha256": None, "size_bytes": None}


def test_state_only_moves_forward_whatever_order_the_attempts_finish_in(db_url: str) -> None:
    engine = catalog.open_catalog(db_url)
    url = canonical("grass", 7)
    catalog.record(engine, url, "grass", status="ingested", **INGESTED)
    assert not catalog.record_failure(engine, url, "upstream_timeout: slow")  # a slow failure ends later
    catalog.record(
        engine, url, "dandelion", status="ingested", **INGESTED | {"url_s3": "s3://b/raw/d/ab.jpg"}
    )
    row = catalog.get(engine, url)
    assert row is not None
    assert (row["status"], row["label"], row["url_s3"], row["sha256"]) == (
        "ingested",
        "grass",
        INGESTED["url_s3"],
        "ab" * 32,
    )
    other = canonical("grass", 8)
    catalog.record(engine, other, "grass", status="failed", **FAILED)
    catalog.record(engine, other, "grass", status="ingested", **INGESTED)  # a retry that succeeds
    assert catalog.get(engine, other)["status"] == "ingested"  # type: ignore[index]


def test_a_row_that_keeps_failing_stops_being_listed_and_an_uncatalogued_url_writes_nothing(
    db_url: str,
) -> None:
    engine = catalog.open_catalog(db_url)
    catalog.seed(engine)
    broken = canonical("grass", 9)
    for attempt in range(catalog.MAX_ATTEMPTS):
        assert {"url": broken, "label": "grass"} in catalog.not_ingested(engine)
        assert catalog.record_failure(engine, broken, f"upstream_error: HTTP 500 ({attempt})")
    assert {"url": broken, "label": "grass"} not in catalog.not_ingested(engine)
    assert len(catalog.not_ingested(engine)) == 399
    assert catalog.get(engine, broken)["error"] == "upstream_error: HTTP 500 (2)"  # type: ignore[index]
    assert not catalog.record_failure(engine, "https://nobody.example/x.jpg", "url_refused: private")
    assert catalog.count(engine) == 400


def test_not_ingested_lists_pending_and_failed_oldest_first(db_url: str) -> None:
    engine = catalog.open_catalog(db_url)
    catalog.seed(engine)
    catalog.record(engine, canonical("dandelion", 0), "dandelion", status="ingested")
    catalog.record(engine, canonical("dandelion", 1), "dandelion", status="failed", error="x")
    rows = catalog.not_ingested(engine, limit=2)
    assert rows == [
        {"url": canonical("dandelion", 1), "label": "dandelion"},
        {"url": canonical("dandelion", 2), "label": "dandelion"},
    ]
    assert len(catalog.not_ingested(engine)) == 399


def test_labels_and_statuses_are_constrained_by_the_database(db_url: str) -> None:
    from sqlalchemy.exc import DBAPIError

    engine = catalog.open_catalog(db_url)
    with pytest.raises(DBAPIError, match="ck_plants_data_label"):
        catalog.record(engine, "https://example.org/x.jpg", "daisy", status="pending")
    assert catalog.count(engine) == 0


def test_committed_init_sql_builds_the_same_catalog_on_mariadb(mysql_url: str) -> None:
    database = mysql_url.rsplit("/", 1)[1].split("?")[0]
    conn = pymysql.connect(**MYSQL, database=database, autocommit=True)
    with conn.cursor() as cur:
        for statement in (ROOT / "platform" / "mysql" / "init.sql").read_text().split(";\n"):
            if statement.strip():
                cur.execute(statement)
    conn.close()
    engine = catalog.open_catalog(mysql_url)
    assert catalog.count(engine) == 400
    assert catalog.seed(engine) == 0  # the code sees the rows the SQL inserted as its own
    with engine.connect() as c:
        assert (
            c.execute(select(func.count()).where(catalog.plants_data.c.status == "pending")).scalar() == 400
        )
