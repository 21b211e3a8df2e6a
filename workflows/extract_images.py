"""`extract-images` (WorkflowTemplate): list the catalog rows not yet ingested, call ingest-one-url once
per row with bounded parallelism, summarise, fail if too many failed.

No `from __future__ import annotations` here: Hera reads the step signatures at render time.
"""

from typing import Any

from hera.workflows import DAG, RetryStrategy, WorkflowTemplate
from hera.workflows.models import Backoff, IntOrString

from functions.lib import catalog
from functions.lib.config import Settings
from workflows import defaults
from workflows.argo import inputs, step, workflow_template
from workflows.lib import extraction


@step()
def list_pending(limit: int = defaults.EXTRACT_LIMIT) -> list[dict[str, str]]:
    """Rows still to ingest; `limit` 0 means all of them."""
    return catalog.not_ingested(catalog.open_catalog(Settings.from_env().db_url), limit)


# Retried only when the function cannot answer (a refused image is an outcome, not an error); the
# backoff lets a scaled-to-zero ingest-one-url start.
@step(retry_strategy=RetryStrategy(limit=3, backoff=Backoff(duration="2", factor=IntOrString("2"))))
def ingest_row(ingest_url: str, url: str, label: str) -> dict[str, Any]:
    """One call of ingest-one-url; retried when the function cannot answer."""
    return extraction.ingest_row(ingest_url, url, label)


@step()
def summarise(
    results: list[dict[str, Any]], max_failed_fraction: float = defaults.MAX_FAILED_FRACTION
) -> dict[str, Any]:
    """Counts of ingested, unchanged and failed rows; fails past `max_failed_fraction`."""
    return extraction.summarise(results, max_failed_fraction)


def build() -> WorkflowTemplate:
    with (
        workflow_template("extract-images", "extract", defaults.EXTRACT_PARAMETERS) as template,
        DAG(
            name="extract",
            parallelism=defaults.EXTRACT_PARALLELISM,
            inputs=inputs(defaults.EXTRACT_PARAMETERS),
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
