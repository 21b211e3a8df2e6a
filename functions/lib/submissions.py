"""People correct the model and the data. The review queue holds two kinds of items:

- an *upload*: a submitted image waits under `incoming/` for an admin, whose decision either adds it to
  the training data (a catalog row `upload://<sha256>` and the image under `raw/`) or keeps it out;
- a *suspect*: an image of the catalog whose label the label audit doubts (`workflows.lib.audit`); the
  admin keeps the label, relabels the image (its rows move to the new `raw/<label>/` key) or excludes it
  from training. Nothing in the catalog changes until a person decides.

The database decides every change: the same image queued twice meets the unique index on (kind, SHA-256),
and a decision is a conditional UPDATE of a pending row, so deciding twice is a 409 and never a second
change. A decision, what it changes in the catalog and the retrain count commit together
(`functions.lib.retrain`).
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

from functions.lib import catalog, outbox, retrain
from functions.lib.config import Settings
from functions.lib.errors import BadRequest, Conflict, NotFound
from functions.lib.images import as_jpeg, open_checked
from functions.lib.labels import LABELS, check_label
from functions.lib.layout import incoming_key, raw_key
from functions.lib.store import ObjectStore, open_store

# Each kind's decisions, and the status each leaves.
DECISIONS = {
    "upload": {"accept": "accepted", "reject": "rejected"},
    "suspect": {"keep": "kept", "relabel": "relabelled", "exclude": "excluded"},
}
KINDS = tuple(DECISIONS)
STATUSES = ("pending", *(status for decided in DECISIONS.values() for status in decided.values()))
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
    Column("kind", String(16), nullable=False, server_default="upload"),
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
    *("id", "kind", "label", "predicted_class", "confidence", "model_version"),
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


@dataclass(frozen=True)
class Suspect:
    """An image whose label the audit doubts: its out-of-fold probability of the given label (its
    self-confidence) is low, and the label it suggests instead."""

    key: str
    sha256: str
    given: str
    suggested: str
    self_confidence: float
    split: str


def _insert_once(connection: Connection, row: dict[str, Any]) -> bool:
    """INSERT that leaves an existing row of the same kind and SHA-256 alone (the unique index decides);
    returns whether it inserted. MySQL counts a duplicate as a found row (SQLAlchemy connects with
    CLIENT_FOUND_ROWS), so there a new row is told by the AUTO_INCREMENT id it got, 0 when none."""
    if connection.dialect.name == "sqlite":
        lite = sqlite.insert(submissions).values(row)
        result = connection.execute(lite.on_conflict_do_nothing(index_elements=["kind", "sha256"]))
        return result.rowcount == 1
    my = mysql.insert(submissions).values(row)
    result = connection.execute(my.on_duplicate_key_update(sha256=my.inserted.sha256))
    return bool(result.lastrowid)


def queue_suspects(engine: Engine, suspects: list[Suspect], audit_run: str) -> int:
    """Queue suspected labels for an admin; returns how many are new. An image queued before (whatever
    was decided) or already decided on by an admin (an accepted upload, say) is not queued again."""
    with catalog.unavailable_on_outage("catalog"), engine.begin() as connection:
        decided = catalog.decided_images(connection)
        rows = [
            {
                "kind": "suspect",
                "sha256": suspect.sha256,
                "object_key": suspect.key,
                "content_type": "image/jpeg",
                "label": suspect.given,
                "predicted_class": suspect.suggested,
                "confidence": 1.0 - suspect.self_confidence,  # two classes: the suggested label's
                "model_version": audit_run,  # the MLflow run whose audit suggested it
            }
            for suspect in suspects
            if suspect.sha256 not in decided
        ]
        return sum(_insert_once(connection, row) for row in rows)


def _now() -> datetime:
    """UTC to the second, as a MySQL DATETIME keeps it: what a decision answers is what is stored."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def pending_count(engine: Engine) -> int:
    """Submissions waiting for an admin."""
    query = select(func.count()).select_from(submissions).where(submissions.c.status == "pending")
    with catalog.unavailable_on_outage("catalog"), engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


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
            "kind": "upload",
            "sha256": digest,
            "object_key": key,
            "content_type": content_type,
            "label": submission.label,
            "predicted_class": submission.predicted_class,
            "confidence": submission.confidence,
            "model_version": submission.model_version,
        }
        with catalog.unavailable_on_outage("catalog"), self.engine.begin() as connection:
            inserted = _insert_once(connection, row)
            submission_id = connection.execute(
                select(submissions.c.id).where(submissions.c.kind == "upload", submissions.c.sha256 == digest)
            ).scalar_one()
        SUBMISSIONS.labels("new" if inserted else "duplicate").inc()
        return int(submission_id), inserted

    def listing(self, status: str, kind: str | None, limit: int) -> list[dict[str, Any]]:
        """Oldest first, of one status and, if given, one kind."""
        if status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        if kind is not None and kind not in KINDS:
            raise BadRequest(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        query = (
            select(*(submissions.c[name] for name in LISTED))
            .where(submissions.c.status == status, *([submissions.c.kind == kind] if kind else []))
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

    def decide(self, submission_id: int, decision: str, label: str | None) -> dict[str, Any]:
        """An upload: accept (as submitted, or with a corrected label) or reject. A suspect: keep its
        label, relabel it (to the suggested label unless another is given) or exclude it."""
        if not any(decision in decisions for decisions in DECISIONS.values()):
            every = ", ".join(d for decisions in DECISIONS.values() for d in decisions)
            raise BadRequest(f"decision must be one of {every}, got {decision!r}")
        if label is not None:
            check_label(label)
        row = self.get(submission_id)
        decisions = DECISIONS[row["kind"]]
        if decision not in decisions:
            *others, last = decisions
            raise BadRequest(f"{row['kind']}s are decided by {', '.join(others)} or {last}, not {decision!r}")
        if row["status"] != "pending":
            raise Conflict(f"submission {submission_id} is already {row['status']}")
        decided = {"status": decisions[decision], "decided_by": ADMIN, "decided_at": _now()}
        if row["kind"] == "suspect":
            catalog_change = self._on_suspect(row, decision, label, decided)
        elif decision == "accept":
            decided["decided_label"] = label or row["label"]
            catalog_change = self._accept(row, decided)
            if row["predicted_class"]:
                REVIEWED.labels(row["model_version"] or "unknown").inc()
                if decided["decided_label"] != row["predicted_class"]:
                    CORRECTED.labels(row["model_version"] or "unknown").inc()
        else:
            self._conditionally(submission_id, decided, lambda _connection: None)
            catalog_change = None
        DECIDED.labels(decision).inc()
        self.deliver_events()
        return self.get(submission_id) | {"catalog": catalog_change}

    def _on_suspect(
        self, row: dict[str, Any], decision: str, label: str | None, decided: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply a decision on a suspected label to every catalog row of the image. A relabelled image is
        copied to its new key first (content-addressed: a retry reuses it); the old object stays, since
        frozen dataset manifests name it. A relabel or an exclusion changes the training data, so it
        counts towards the next retraining as an accepted label does."""
        changes: dict[str, Any] = {}
        if decision == "relabel":
            new_label = label or row["predicted_class"]
            if new_label == row["label"]:
                raise BadRequest(f"the image is already labelled {new_label}: keep it instead")
            key = raw_key(new_label, row["sha256"])
            if not self.store.exists(key):
                self.store.put(key, self.store.get(row["object_key"]), "image/jpeg")
            changes = {"label": new_label, "url_s3": self.store.url(key)}
        elif decision == "exclude":
            changes = {"status": "excluded"}
        decided["decided_label"] = changes.get("label", row["label"])

        def change_catalog(connection: Connection) -> None:
            if not catalog.decide_on_image(connection, row["sha256"], decided, **changes):
                raise Conflict(f"image {row['sha256']} is no longer in the training data")
            if changes:
                retrain.label_accepted(connection, self.settings.retrain_min_new_labels)

        self._conditionally(row["id"], decided, change_catalog)
        return {
            "sha256": row["sha256"],
            "label": decided["decided_label"],
            "status": changes.get("status", "ingested"),
            "url_s3": changes.get("url_s3", self.store.url(row["object_key"])),
            "decided_by": decided["decided_by"],
            "decided_at": decided["decided_at"],
        }

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

        def transaction() -> None:
            with self.engine.begin() as connection:
                if connection.execute(decide).rowcount != 1:
                    raise Conflict(f"submission {submission_id} has already been decided")
                then(connection)

        with catalog.unavailable_on_outage("catalog"):
            catalog.retry_deadlocks(transaction)

    def deliver_events(self) -> int:
        """Post the retrain events waiting in the outbox; a failure waits for the next attempt."""
        return outbox.deliver(self.engine, self.settings.retrain_webhook)
