"""Ingestion of one URL: download safely, verify, store content-addressed, then record in the catalog.

Order matters for crash safety: the object is written (whole) before the row that points to it, so a
crash leaves at worst an unreferenced object that the retry reuses, never a row without its image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import Engine

from functions.lib import catalog
from functions.lib.config import Settings
from functions.lib.errors import Conflict, NotAnImage, TooLarge, Unavailable, UpstreamError, URLRefused
from functions.lib.fetch import check_url, download, make_session
from functions.lib.images import as_jpeg
from functions.lib.labels import check_label
from functions.lib.layout import raw_key
from functions.lib.store import ObjectStore, open_store

# Failures that belong to the URL or its content: the row records them. Anything else (a bad request,
# an unavailable catalog or store) leaves the catalog as it was.
SOURCE_FAILURES = (URLRefused, TooLarge, NotAnImage, UpstreamError)


@dataclass
class Ingestor:
    settings: Settings
    engine: Engine
    store: ObjectStore
    session: requests.Session

    @classmethod
    def from_settings(cls, settings: Settings) -> Ingestor:
        return cls(
            settings,
            catalog.open_catalog(settings.db_url),
            open_store(settings.store_url),
            make_session(settings),
        )

    def ingest(self, url: str, label: str) -> tuple[str, dict[str, Any]]:
        """Returns ("ingested" | "unchanged", row). Idempotent: a repeat changes nothing."""
        check_label(label)
        check_url(url)
        existing = catalog.get(self.engine, url)
        if existing and existing["status"] == "excluded":
            raise Conflict(f"{url} was excluded from the training data by an admin; it is not ingested again")
        if existing and existing["status"] == "ingested":
            if existing["label"] != label:
                raise Conflict(
                    f"{url} is already ingested as {existing['label']!r}; relabel it through validate-label"
                )
            # The row alone is not proof: the object may have been lost since; then it is fetched again.
            if self.store.exists(raw_key(label, existing["sha256"])):
                return "unchanged", existing
        try:
            image = as_jpeg(
                download(self.session, self.settings.rewrite_source(url), self.settings),
                self.settings.max_image_pixels,
            )
        except SOURCE_FAILURES as exc:
            catalog.record_failure(self.engine, url, f"{exc.code}: {exc}")
            raise
        digest = hashlib.sha256(image).hexdigest()
        key = raw_key(label, digest)
        created = not self.store.exists(key)
        if created:  # content-addressed: the same bytes under another URL are stored once
            self.store.put(key, image, "image/jpeg")
        catalog.record(
            self.engine,
            url,
            label,
            status="ingested",
            error=None,
            url_s3=self.store.url(key),
            sha256=digest,
            size_bytes=len(image),
        )
        row = catalog.get(self.engine, url)
        if row is None:  # deleted between the write and this read: say so rather than answer nothing
            raise Unavailable(f"the catalog row of {url} vanished while it was written; retry")
        if row["status"] != "ingested" or row["label"] != label:  # a concurrent attempt settled it first
            if created:
                self.store.delete(key)  # ours alone: no row points at it
            raise Conflict(
                f"{url} is already {row['status']} as {row['label']!r}; relabel it through validate-label"
            )
        return "ingested", row
