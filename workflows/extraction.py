"""`extract-images`: list the catalog rows not yet ingested, call ingest-one-url once per row, summarise.

No `from __future__ import annotations` here: Hera reads the step signatures at render time.
"""

from collections import Counter
from typing import Any

import requests
from hera.workflows import DAG, Parameter, RetryStrategy, WorkflowTemplate

from functions import catalog
from functions.config import Settings
from workflows.steps import step

CLUSTER_INGEST_URL = "http://ingest-one-url.dandelion.svc.cluster.local/"
PARALLELISM = 8
# Answers that settle a row (ingested, unchanged, or refused for a reason the row records); anything
# else means the function itself is in trouble, and the step fails so that Argo retries it.
SETTLED = {200, 201, 400, 403, 409, 413, 415, 502, 504}


class ExtractionFailed(RuntimeError):
    pass


@step()
def list_pending(limit: int = 0) -> list[dict[str, str]]:
    """Rows still to ingest; `limit` 0 means all of them."""
    return catalog.not_ingested(catalog.open_catalog(Settings.from_env().db_url), limit)


@step(retry_strategy=RetryStrategy(limit=3, backoff={"duration": "2", "factor": "2"}))
def ingest_row(ingest_url: str, url: str, label: str) -> dict[str, Any]:
    """One call of ingest-one-url: a refused image is an outcome, an unreachable function an error."""
    response = requests.post(ingest_url, json={"url": url, "label": label}, timeout=120)
    if response.status_code not in SETTLED:
        raise RuntimeError(f"ingest-one-url answered HTTP {response.status_code}: {response.text[:200]}")
    body = response.json()
    if response.status_code in (200, 201):
        return {"url": url, "outcome": body["outcome"]}
    return {"url": url, "outcome": "failed", "error": f"{body.get('error')}: {body.get('message')}"}


@step()
def summarise(results: list[dict[str, Any]], max_failed_fraction: float = 0.1) -> dict[str, Any]:
    """Count the outcomes; fail the workflow when more than `max_failed_fraction` of the rows failed."""
    counts = Counter(r["outcome"] for r in results)
    summary = {
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


def extract_images() -> WorkflowTemplate:
    with (
        WorkflowTemplate(
            name="extract-images",
            entrypoint="extract",
            service_account_name="dandelion-workflows",
            arguments=[
                Parameter(name="ingest-url", value=CLUSTER_INGEST_URL),
                Parameter(name="limit", value="0"),
                Parameter(name="max-failed-fraction", value="0.1"),
            ],
        ) as template,
        DAG(
            name="extract",
            parallelism=PARALLELISM,
            inputs=[
                Parameter(name="ingest-url"),
                Parameter(name="limit"),
                Parameter(name="max-failed-fraction"),
            ],
        ),
    ):
        rows = list_pending(arguments={"limit": "{{inputs.parameters.limit}}"})
        outcomes = ingest_row(
            with_param=rows.result,
            arguments={
                "ingest_url": "{{inputs.parameters.ingest-url}}",
                "url": "{{item.url}}",
                "label": "{{item.label}}",
            },
        )
        summary = summarise(
            arguments={
                "results": outcomes.result,
                "max_failed_fraction": "{{inputs.parameters.max-failed-fraction}}",
            }
        )
        rows >> outcomes >> summary
    return template
