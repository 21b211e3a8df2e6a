"""New labels start a retraining: the count of accepted labels not yet in a training lives in the database
(one row of `retrain_state`), and reaching the threshold writes one event to the outbox, in the same
transaction as the accept that reached it. The UPDATE that counts locks the row, so concurrent accepts,
in any number of instances, count one after another and announce each batch exactly once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, Table, select, update

from functions.lib import outbox
from functions.lib.catalog import unavailable_on_outage

LABELS_EVENT = "dev.dandelion.labels.threshold"
STATE_ROW = 1

metadata = MetaData()
retrain_state = Table(
    "retrain_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("accepted_since_training", Integer, nullable=False),
    Column("batches_announced", Integer, nullable=False),
)
_state = retrain_state.c


def label_accepted(connection: Connection, threshold: int) -> bool:
    """Count one accepted label, inside the accept's transaction; returns whether it announced a batch."""
    connection.execute(
        update(retrain_state)
        .where(_state.id == STATE_ROW)
        .values(accepted_since_training=_state.accepted_since_training + 1)
    )
    accepted, announced = connection.execute(
        select(_state.accepted_since_training, _state.batches_announced).where(_state.id == STATE_ROW)
    ).one()
    batch = accepted // threshold
    if batch <= announced:
        return False
    connection.execute(update(retrain_state).where(_state.id == STATE_ROW).values(batches_announced=batch))
    outbox.enqueue(connection, LABELS_EVENT, {"accepted_since_training": accepted, "threshold": threshold})
    return True


def status(engine: Engine, threshold: int, events: int = 20) -> dict[str, Any]:
    """New labels since the last training, how many more start the next retraining, and the newest
    retrain events posted (read together, in one transaction)."""
    with unavailable_on_outage("catalog"), engine.begin() as connection:
        accepted, announced = connection.execute(
            select(_state.accepted_since_training, _state.batches_announced).where(_state.id == STATE_ROW)
        ).one()
        return {
            "new_labels": accepted,
            "threshold": threshold,
            "remaining": max(0, (announced + 1) * threshold - accepted),
            "events": outbox.recent(connection, events),
        }


def accepted_since_training(connection: Connection) -> int:
    query = select(_state.accepted_since_training).where(_state.id == STATE_ROW)
    return int(connection.execute(query).scalar_one())


def labels_trained(engine: Engine, count: int) -> int:
    """A training succeeded on a snapshot that held `count` new labels: what arrived after it stays
    counted, and the next batch is announced afresh. Returns the count left."""
    with unavailable_on_outage("catalog"), engine.begin() as connection:
        connection.execute(
            update(retrain_state)
            .where(_state.id == STATE_ROW)
            .values(accepted_since_training=_state.accepted_since_training - count, batches_announced=0)
        )
        return accepted_since_training(connection)
