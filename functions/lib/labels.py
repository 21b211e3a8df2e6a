"""The two classes, once: the catalog's CHECK constraint, ingestion, the dataset and the models' output
order (the default preprocessing) all read this tuple."""

from __future__ import annotations

from functions.lib.errors import BadRequest

LABELS: tuple[str, ...] = ("dandelion", "grass")


def check_label(label: str) -> str:
    """`label` when it is one of LABELS; a 400 otherwise, before anything is written."""
    if label not in LABELS:
        raise BadRequest(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    return label
