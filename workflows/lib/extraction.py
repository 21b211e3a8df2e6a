"""What extract-images does with each catalog row: one call of ingest-one-url, and the run's summary."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests

from functions.lib.api import REQUEST_ID_HEADER

# Answers that settle a row (ingested, unchanged, or refused for a reason the row records); anything
# else means the function itself is in trouble, and the step fails so that Argo retries it.
SETTLED = {200, 201, 400, 403, 409, 413, 415, 502, 504}


class ExtractionFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class RowOutcome:
    url: str
    outcome: str  # ingested, unchanged or failed
    error: str = ""  # why it failed: the function's error code and message


def ingest_row(ingest_url: str, url: str, label: str) -> RowOutcome:
    """One call of ingest-one-url: a refused image is an outcome, an unreachable function an error."""
    headers = {REQUEST_ID_HEADER: f"extract-{uuid.uuid4().hex}"}  # the function logs the call under it
    response = requests.post(ingest_url, json={"url": url, "label": label}, headers=headers, timeout=120)
    if response.status_code not in SETTLED:
        raise RuntimeError(f"ingest-one-url answered HTTP {response.status_code}: {response.text[:200]}")
    body = response.json()
    if response.status_code in (200, 201):
        return RowOutcome(url, body["outcome"])
    return RowOutcome(url, "failed", f"{body.get('error')}: {body.get('message')}")


def summarise(results: list[dict[str, str]], max_failed_fraction: float) -> dict[str, Any]:
    """Count the outcomes; fail the workflow when more than `max_failed_fraction` of the rows failed."""
    counts = Counter(r["outcome"] for r in results)
    summary: dict[str, Any] = {
        "total": len(results),
        "ingested": counts["ingested"],
        "unchanged": counts["unchanged"],
        "failed": counts["failed"],
        "failures": [r for r in results if r["outcome"] == "failed"][:20],
    }
    if results and counts["failed"] / len(results) > max_failed_fraction:
        raise ExtractionFailed(
            f"{counts['failed']} of {len(results)} rows failed, over the {max_failed_fraction:.0%} allowed: "
            f"{summary['failures'][:3]}"
        )
    return summary
