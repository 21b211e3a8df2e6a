"""The transactional outbox: an event is written in the same transaction as the change that decides it,
and posted afterwards as a CloudEvent, until a receiver accepts it. Whoever posts claims the row first
(a conditional UPDATE), so several instances never post the same event at once; a failed post leaves
the row for a later attempt, by any instance, so nothing is lost. Delivery is at least once (a crash
between a post and its record repeats it), and the CloudEvent id is the row's, so a receiver can tell.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from cloudevents.http import CloudEvent, to_structured
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.exc import OperationalError

from functions.lib import catalog

SOURCE = "dandelion/validate-label"
CLAIM_SECONDS = 60  # a poster that dies holding a claim blocks the event this long, no longer
POST_TIMEOUT = 10.0

log = logging.getLogger("dandelion")

metadata = MetaData()
outbox = Table(
    "outbox",
    metadata,
    catalog.surrogate_key(),
    Column("event_type", String(128), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime, nullable=False, server_default=func.current_timestamp()),
    Column("claimed_until", DateTime),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("sent_at", DateTime),
)


def _now() -> datetime:
    """UTC without a zone: the columns are zone-less, and only this module writes and compares them."""
    return datetime.now(UTC).replace(tzinfo=None)


def enqueue(connection: Connection, event_type: str, payload: dict[str, Any]) -> None:
    """Write an event inside the caller's transaction: it exists if and only if the change commits."""
    connection.execute(insert(outbox).values(event_type=event_type, payload=json.dumps(payload)))


def _update(engine: Engine, event_id: int, condition: Any, **values: Any) -> bool:
    """One conditional UPDATE of an event, in a transaction of its own; whether it matched."""

    def transaction() -> bool:
        with engine.begin() as connection:
            statement = update(outbox).where(outbox.c.id == event_id, condition).values(**values)
            return connection.execute(statement).rowcount == 1

    return catalog.retry_deadlocks(transaction)


def _claim(engine: Engine, event_id: int) -> bool:
    now = _now()
    unclaimed = outbox.c.sent_at.is_(None) & (
        outbox.c.claimed_until.is_(None) | (outbox.c.claimed_until < now)
    )
    claimed_until = now + timedelta(seconds=CLAIM_SECONDS)
    return _update(engine, event_id, unclaimed, claimed_until=claimed_until, attempts=outbox.c.attempts + 1)


def _post(url: str, event_id: int, event_type: str, payload: str) -> None:
    event = CloudEvent(
        {"id": f"dandelion-outbox-{event_id}", "source": SOURCE, "type": event_type}, json.loads(payload)
    )
    headers, body = to_structured(event)
    response = requests.post(url, data=body, headers=headers, timeout=POST_TIMEOUT)
    response.raise_for_status()


def deliver(engine: Engine, url: str) -> int:
    """Post every event not yet delivered; returns how many were. Errors are kept on the row and logged,
    never raised: the change that made the event has committed, and the next attempt will come."""
    delivered: list[int] = []
    try:
        _deliver(engine, url, delivered)
    except OperationalError as exc:  # the catalog is down, or still deadlocked: the rows wait
        log.warning("retrain events wait for the next attempt", extra={"fields": {"error": str(exc.orig)}})
    return len(delivered)


def _deliver(engine: Engine, url: str, delivered: list[int]) -> None:
    pending = select(outbox.c.id, outbox.c.event_type, outbox.c.payload).where(outbox.c.sent_at.is_(None))
    with engine.connect() as connection:
        events = connection.execute(pending.order_by(outbox.c.id)).all()
    for event_id, event_type, payload in events:
        if not _claim(engine, event_id):
            continue  # another instance holds it, or has just sent it
        try:
            _post(url, event_id, event_type, payload)
        except requests.RequestException as exc:
            log.warning(
                "retrain event not delivered", extra={"fields": {"event": event_id, "error": str(exc)}}
            )
            done: dict[str, Any] = {"claimed_until": None, "last_error": str(exc)[:2000]}
        else:
            done = {"sent_at": _now(), "last_error": None}
            delivered.append(event_id)
        _update(engine, event_id, true(), **done)


def recent(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest events, delivered or not, with when they were sent, their attempts and last error."""
    columns = (outbox.c.id, outbox.c.event_type, outbox.c.created_at, outbox.c.sent_at, outbox.c.attempts)
    query = select(*columns, outbox.c.last_error).order_by(outbox.c.id.desc()).limit(limit)
    return [dict(row) for row in connection.execute(query).mappings()]
