"""`extract-images` (WorkflowTemplate): list the catalog rows not yet ingested, call ingest-one-url once
per row with bounded parallelism, summarise, fail if too many failed.

Steps hand each other named output parameters, which Hera's runner writes to files and Argo reads from
there (`Annotated[..., Parameter(name=...)]`), never stdout. Each row's outcome is three parameters;
Argo aggregates a fan-out's parameters into a JSON list of {name: value} maps, which `summarise` reads.
`summarise` writes the counts again as scalar parameters, which its metric reads (an Argo metric cannot
look inside the JSON `summary`).
No `from __future__ import annotations` here: Hera reads the step signatures at render time.
"""

from typing import Annotated, Any

from hera.workflows import DAG, Parameter, RetryStrategy, WorkflowTemplate
from hera.workflows.models import Backoff, IntOrString

from functions.lib import catalog
from functions.lib.config import Settings
from workflows import defaults
from workflows.argo import inputs, output, step, step_gauge, workflow_template
from workflows.lib import extraction

OUTCOMES = ("ingested", "unchanged", "failed")


@step(credentials=defaults.EXTRACT_CREDENTIALS)
def list_pending(
    limit: int = defaults.EXTRACT_LIMIT,
) -> Annotated[list[dict[str, str]], Parameter(name="rows")]:
    """Rows still to ingest; `limit` 0 means all of them."""
    return catalog.not_ingested(catalog.open_catalog(Settings.from_env().db_url), limit)


# Retried only when the function cannot answer (a refused image is an outcome, not an error); the
# backoff lets a scaled-to-zero ingest-one-url start.
@step(retry_strategy=RetryStrategy(limit=3, backoff=Backoff(duration="2", factor=IntOrString("2"))))
def ingest_row(
    ingest_url: str, url: str, label: str
) -> tuple[
    Annotated[str, Parameter(name="url")],
    Annotated[str, Parameter(name="outcome")],
    Annotated[str, Parameter(name="error")],
]:
    """One call of ingest-one-url; retried when the function cannot answer."""
    outcome = extraction.ingest_row(ingest_url, url, label)
    return outcome.url, outcome.outcome, outcome.error


@step(
    metrics=[
        step_gauge(
            "dandelion_extraction_images",
            "Rows the last extract-images run settled, by outcome",
            f"{{{{outputs.parameters.{outcome}}}}}",
            {"outcome": outcome},
        )
        for outcome in OUTCOMES
    ]
)
def summarise(
    results: list[dict[str, str]], max_failed_fraction: float = defaults.MAX_FAILED_FRACTION
) -> tuple[
    Annotated[dict[str, Any], Parameter(name="summary")],
    Annotated[int, Parameter(name="ingested")],
    Annotated[int, Parameter(name="unchanged")],
    Annotated[int, Parameter(name="failed")],
]:
    """Counts of ingested, unchanged and failed rows, as the summary and one by one; fails past
    `max_failed_fraction`."""
    summary = extraction.summarise(results, max_failed_fraction)
    return summary, summary["ingested"], summary["unchanged"], summary["failed"]


def build() -> WorkflowTemplate:
    with (
        workflow_template("extract-images", "extract", defaults.EXTRACT_PARAMETERS) as template,
        DAG(
            name="extract",
            parallelism=defaults.EXTRACT_PARALLELISM,
            inputs=inputs(defaults.EXTRACT_PARAMETERS),
            outputs=[output("summary", "{{tasks.summarise.outputs.parameters.summary}}")],
        ),
    ):
        rows = list_pending(arguments={"limit": "{{inputs.parameters.limit}}"})
        outcomes = ingest_row(
            with_param="{{tasks.list-pending.outputs.parameters.rows}}",
            arguments={
                "ingest_url": "{{inputs.parameters.ingest-url}}",
                "url": "{{item.url}}",
                "label": "{{item.label}}",
            },
        )
        summary = summarise(
            arguments={
                "results": "{{tasks.ingest-row.outputs.parameters}}",
                "max_failed_fraction": "{{inputs.parameters.max-failed-fraction}}",
            }
        )
        rows >> outcomes >> summary
    return template
