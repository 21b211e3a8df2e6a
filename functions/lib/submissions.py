"""People correct the model: a submitted image waits under `incoming/` for an admin, whose decision either
adds it to the training data (a catalog row `upload://<sha256>` and the image under `raw/`) or keeps it out.

The database decides every change: the same image submitted twice meets the unique index on its SHA-256,
and a decision is a conditional UPDATE of a pending row, so deciding twice is a 409 and never a second
catalog row. An accept, its catalog row and the retrain count commit together (`functions.lib.retrain`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import (
    CHAR,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.sql import Executable

from functions.lib import catalog, outbox, retrain
from functions.lib.config import Settings
from functions.lib.errors import BadRequest, Conflict, NotFound
from functions.lib.images import as_jpeg, open_checked
from functions.lib.labels import LABELS, check_label
from functions.lib.layout import incoming_key, raw_key
from functions.lib.store import ObjectStore, open_store

STATUSES = ("pending", "accepted", "rejected")
DECISIONS = {"accept": "accepted", "reject": "rejected"}
MAX_LISTED = 500
ADMIN = "admin"  # who decides: one admin token, one identity
EXTENSIONS = {"JPEG": ("jpg", "image/jpeg"), "PNG": ("png", "image/png"), "WEBP": ("webp", "image/webp")}
EXTENSIONS |= {"GIF": ("gif", "image/gif"), "BMP": ("bmp", "image/bmp")}

SUBMISSIONS = Counter("dandelion_submissions_total", "Images submitted with a label", ["outcome"])
DECIDED = Counter("dandelion_label_decisions_total", "Admin decisions on submissions", ["decision"])
# Accepted submissions that carried the model's prediction, and those whose accepted label differs from
# it, by the model version that predicted: their ratio is the live-quality signal.
REVIEWED = Counter("dandelion_reviewed_predictions_total", "Predictions an admin reviewed", ["model_version"])
CORRECTED = Counter(
    "dandelion_corrected_predictions_total", "Reviewed predictions the admin corrected", ["model_version"]
)

log = logging.getLogger("dandelion")

metadata = MetaData()
submissions = Table(
    "submissions",
    metadata,
    catalog.surrogate_key(),
    Column("sha256", CHAR(64), nullable=False),
    Column("object_key", String(255), nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("label", String(16), nullable=False),
    Column("predicted_class", String(16)),
    Column("confidence", Float),
    Column("model_version", String(64)),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("decided_label", String(16)),
    Column("decided_by", String(64)),
    Column("decided_at", DateTime),
    Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp()),
)
LISTED = (
    *("id", "label", "predicted_class", "confidence", "model_version"),
    *("status", "decided_label", "decided_at", "created_at"),
)


@dataclass(frozen=True)
class Submission:
    """What a person sends: the image, the label they believe, and what the model told them, if given."""

    image: bytes
    label: str
    predicted_class: str | None = None
    confidence: float | None = None
    model_version: str | None = None

    def check(self) -> None:
        check_label(self.label)
        if self.predicted_class is not None and self.predicted_class not in LABELS:
            raise BadRequest(
                f"predicted_class must be one of {', '.join(LABELS)}, got {self.predicted_class!r}"
            )
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise BadRequest(f"confidence must be between 0 and 1, got {self.confidence}")
        if self.model_version is not None and not 0 < len(self.model_version) <= 64:
            raise BadRequest("model_version must be 1 to 64 characters")


def _insert_once(dialect: str, row: dict[str, Any]) -> Executable:
    """INSERT that leaves an existing row with the same SHA-256 alone (the unique index decides)."""
    if dialect == "sqlite":
        return sqlite.insert(submissions).values(row).on_conflict_do_nothing(index_elements=["sha256"])
    statement = mysql.insert(submissions).values(row)
    return statement.on_duplicate_key_update(sha256=statement.inserted.sha256)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Labeller:
    settings: Settings
    engine: Engine
    store: ObjectStore

    @classmethod
    def from_settings(cls, settings: Settings) -> Labeller:
        return cls(settings, catalog.open_catalog(settings.db_url), open_store(settings.store_url))

    def submit(self, submission: Submission) -> tuple[int, bool]:
        """Store and record a submission; returns (its id, whether it is new). The image is checked
        (decodes, pixel limit) and written before the row that points to it."""
        submission.check()
        image = open_checked(submission.image, self.settings.max_image_pixels)
        extension, content_type = EXTENSIONS[image.format or ""]
        digest = hashlib.sha256(submission.image).hexdigest()
        key = incoming_key(digest, extension)
        if not self.store.exists(key):
            self.store.put(key, submission.image, content_type)
        row = {
            "sha256": digest,
            "object_key": key,
            "content_type": content_type,
            "label": submission.label,
            "predicted_class": submission.predicted_class,
            "confidence": submission.confidence,
            "model_version": submission.model_version,
        }
        with catalog.unavailable_on_outage("catalog"), self.engine.begin() as connection:
            inserted = connection.execute(_insert_once(self.engine.dialect.name, row)).rowcount == 1
            submission_id = connection.execute(
                select(submissions.c.id).where(submissions.c.sha256 == digest)
            ).scalar_one()
        SUBMISSIONS.labels("new" if inserted else "duplicate").inc()
        return int(submission_id), inserted

    def listing(self, status: str, limit: int) -> list[dict[str, Any]]:
        if status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        query = (
            select(*(submissions.c[name] for name in LISTED))
            .where(submissions.c.status == status)
            .order_by(submissions.c.id)
            .limit(min(max(limit, 1), MAX_LISTED))
        )
        with catalog.unavailable_on_outage("catalog"), self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def get(self, submission_id: int) -> dict[str, Any]:
        with catalog.unavailable_on_outage("catalog"), self.engine.connect() as connection:
            row = (
                connection.execute(select(submissions).where(submissions.c.id == submission_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no submission {submission_id}")
        return dict(row)

    def image(self, submission_id: int) -> tuple[bytes, str]:
        row = self.get(submission_id)
        return self.store.get(row["object_key"]), row["content_type"]

    def pending_count(self) -> int:
        query = select(func.count()).select_from(submissions).where(submissions.c.status == "pending")
        with catalog.unavailable_on_outage("catalog"), self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def decide(self, submission_id: int, decision: str, label: str | None) -> dict[str, Any]:
        """Accept (as submitted, or with a corrected label) or reject a pending submission."""
        if decision not in DECISIONS:
            raise BadRequest(f"decision must be accept or reject, got {decision!r}")
        if label is not None:
            check_label(label)
        row = self.get(submission_id)
        if row["status"] != "pending":
            raise Conflict(f"submission {submission_id} is already {row['status']}")
        decided_label = label or row["label"]
        decided = {"status": DECISIONS[decision], "decided_by": ADMIN, "decided_at": _now()}
        if decision == "accept":
            decided["decided_label"] = decided_label
            catalog_row = self._accept(row, decided)
        else:
            self._conditionally(submission_id, decided, lambda _connection: None)
            catalog_row = None
        DECIDED.labels(decision).inc()
        if decision == "accept" and row["predicted_class"]:
            REVIEWED.labels(row["model_version"] or "unknown").inc()
            if decided_label != row["predicted_class"]:
                CORRECTED.labels(row["model_version"] or "unknown").inc()
        self.deliver_events()
        return self.get(submission_id) | {"catalog": catalog_row}

    def _accept(self, row: dict[str, Any], decided: dict[str, Any]) -> dict[str, Any]:
        # The image first (content-addressed, so a retry reuses it), then everything else in one transaction.
        image = as_jpeg(self.store.get(row["object_key"]), self.settings.max_image_pixels)
        digest = hashlib.sha256(image).hexdigest()
        key = raw_key(decided["decided_label"], digest)
        if not self.store.exists(key):
            self.store.put(key, image, "image/jpeg")
        url = f"upload://{digest}"
        fields = {
            "status": "ingested",
            "error": None,
            "url_s3": self.store.url(key),
            "sha256": digest,
            "size_bytes": len(image),
            "decided_by": decided["decided_by"],
            "decided_at": decided["decided_at"],
        }

        def add_to_catalog(connection: Connection) -> None:
            catalog.record_in(connection, url, decided["decided_label"], **fields)
            retrain.label_accepted(connection, self.settings.retrain_min_new_labels)

        self._conditionally(row["id"], decided, add_to_catalog)
        return {"url_source": url, "label": decided["decided_label"], **fields}

    def _conditionally(
        self, submission_id: int, decided: dict[str, Any], then: Callable[[Connection], None]
    ) -> None:
        """Apply a decision to a row that is still pending, and `then` in the same transaction; a row
        decided meanwhile (by another admin, another instance) is a 409 and changes nothing."""
        decide = (
            update(submissions)
            .where(submissions.c.id == submission_id, submissions.c.status == "pending")
            .values(**decided)
        )
        with catalog.unavailable_on_outage("catalog"), self.engine.begin() as connection:
            if connection.execute(decide).rowcount != 1:
                raise Conflict(f"submission {submission_id} has already been decided")
            then(connection)

    def deliver_events(self) -> int:
        """Post the retrain events waiting in the outbox; a failure waits for the next attempt."""
        return outbox.deliver(self.engine, self.settings.retrain_webhook)
