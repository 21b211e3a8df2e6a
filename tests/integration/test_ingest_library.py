"""Ingestion properties that need a hand inside the process: redirect guarding, crash and retry."""

from pathlib import Path

import pytest

from functions.lib import catalog
from functions.lib.config import Settings
from functions.lib.errors import URLRefused
from functions.lib.fetch import download, make_session
from functions.lib.ingest import Ingestor
from tests.conftest import DATASET, canonical

pytestmark = pytest.mark.integration


def only_127_0_0_1(address: str) -> bool:
    """A policy under which the test server counts as public and the rest of loopback does not."""
    return address == "127.0.0.1"


def settings_for(home: Path, source: str, allow_private: bool) -> Settings:
    return Settings.from_env(
        {
            "DANDELION_HOME": str(home),
            "DANDELION_SOURCE_MIRROR": f"{catalog.CANONICAL_PREFIX}={source}/",
            "DANDELION_ALLOW_PRIVATE_URLS": "1" if allow_private else "",
        }
    )


def test_the_address_check_holds_across_redirects(tmp_path: Path, source: str) -> None:
    settings = settings_for(tmp_path, source, allow_private=False)
    session = make_session(settings, allowed=only_127_0_0_1)
    assert (
        download(session, f"{source}/grass/00000001.jpg", settings)
        == (DATASET / "grass" / "00000001.jpg").read_bytes()
    )
    port = source.rsplit(":", 1)[1]
    for target in (f"http:/127.0.0.2:{port}/grass/00000001.jpg", "http:/169.254.169.254/latest/meta-data/"):
        with pytest.raises(URLRefused, match="which is not a public address"):
            download(session, f"{source}/redirect/{target}", settings)


def test_a_retry_after_a_crash_between_object_and_row_completes(
    tmp_path: Path, source: str, monkeypatch
) -> None:
    ingestor = Ingestor.from_settings(settings_for(tmp_path, source, allow_private=True))
    url = canonical("dandelion", 90)
    real_record = catalog.record

    def crash(*args, **kwargs):
        raise RuntimeError("killed between the object write and the row write")

    monkeypatch.setattr(catalog, "record", crash)
    with pytest.raises(RuntimeError, match="killed"):
        ingestor.ingest(url, "dandelion")
    assert catalog.get(ingestor.engine, url) is None
    assert len(list(ingestor.store.keys("raw/"))) == 1  # the whole object, not yet referenced

    monkeypatch.setattr(catalog, "record", real_record)
    outcome, row = ingestor.ingest(url, "dandelion")
    assert (outcome, row["status"]) == ("ingested", "ingested")
    assert list(ingestor.store.keys("raw/")) == [f"raw/dandelion/{row['sha256']}.jpg"]
    assert ingestor.ingest(url, "dandelion")[0] == "unchanged"
