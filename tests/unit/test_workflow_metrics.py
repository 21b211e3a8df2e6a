"""The Argo custom metrics, emitted by the local runner as Argo's controller emits them: small workflows
run through the runner (steps in processes of their own, as in test_runner), and the samples read back
exactly as Prometheus would scrape them."""

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
from hera.workflows import WorkflowTemplate
from prometheus_client import generate_latest

from tests.unit.test_runner import FAN_OUT, flaky_workflow
from workflows.argo import workflow_metrics
from workflows.local.runner import LocalRunner, WorkflowFailed
from workflows.local.workflow_metrics import WorkflowMetrics
from workflows.manifests import manifests

SUCCEEDED = "{{status}} == Succeeded"


def exposed(metrics: WorkflowMetrics) -> list[str]:
    """The samples as scraped, one a line, without the comments."""
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if not line.startswith("#")]


def counter(name: str, labels: dict[str, str] | None = None, when: str | None = None) -> dict:
    metric: dict[str, Any] = {"name": name, "help": f"{name} help", "counter": {"value": "1"}}
    if labels:
        metric["labels"] = [{"key": k, "value": v} for k, v in labels.items()]
    if when:
        metric["when"] = when
    return metric


def gauge(name: str, value: str, when: str | None = None) -> dict:
    metric: dict[str, Any] = {
        "name": name,
        "help": f"{name} help",
        "gauge": {"realtime": False, "value": value},
    }
    if when:
        metric["when"] = when
    return metric


def with_metrics(manifest: dict, templates: dict[str, list[dict]]) -> dict:
    """A copy of a test workflow with the workflow metrics as the real workflows render them, and
    `templates`' metrics (template name -> entries as rendered)."""
    name = manifest["metadata"]["name"]
    manifest = copy.deepcopy(manifest)
    manifest["spec"]["metrics"] = WorkflowTemplate(name=name, metrics=workflow_metrics(name)).to_dict()[
        "spec"
    ]["metrics"]
    for template in manifest["spec"]["templates"]:
        if template["name"] in templates:
            template["metrics"] = {"prometheus": templates[template["name"]]}
    return manifest


FAN_OUT_METRICS = with_metrics(
    FAN_OUT,
    {
        # The entrypoint DAG: a node of its own, which completes when its tasks have.
        "main": [counter("dags_total", {"status": "{{status}}", "count": "{{inputs.parameters.count}}"})],
        # Four nodes of the fan-out, each with its inputs.
        "square": [counter("squares_total", {"offset": "{{inputs.parameters.offset}}"})],
        "total": [
            gauge("total", "{{outputs.parameters.total}}", when=SUCCEEDED),
            counter("total_failures_total", when="{{status}} == Failed"),
        ],
    },
)


def test_a_succeeded_run_emits_the_workflow_metrics_and_the_templates() -> None:
    metrics = WorkflowMetrics()
    assert LocalRunner([FAN_OUT_METRICS], metrics=metrics).run("fan-out").parameters == {"total": "14"}
    samples = exposed(metrics)
    for sample in (
        'argo_workflows_dandelion_workflow_runs_total{status="Succeeded",workflow="fan-out"} 1.0',
        'argo_workflows_dandelion_workflow_succeeded{workflow="fan-out"} 1.0',
        'argo_workflows_dandelion_workflow_duration_seconds_count{workflow="fan-out"} 1.0',
        'argo_workflows_dandelion_workflow_duration_seconds_bucket{le="7200.0",workflow="fan-out"} 1.0',
        'argo_workflows_dags_total{count="4",status="Succeeded"} 1.0',
        'argo_workflows_squares_total{offset="0"} 4.0',
        "argo_workflows_total 14.0",  # from the step's output parameter
    ):
        assert sample in samples
    assert not [s for s in samples if s.startswith("argo_workflows_total_failures")]  # `when` was false
    assert not [s for s in samples if 'status="Failed"' in s]
    assert not [s for s in samples if "_created" in s]  # prometheus_client's, which Argo has not


def test_a_run_adds_to_the_counters_and_sets_the_gauges_again() -> None:
    metrics = WorkflowMetrics()
    runner = LocalRunner([FAN_OUT_METRICS], metrics=metrics)
    runner.run("fan-out")
    runner.run("fan-out", {"count": "3"})
    samples = exposed(metrics)
    assert (
        'argo_workflows_dandelion_workflow_runs_total{status="Succeeded",workflow="fan-out"} 2.0' in samples
    )
    assert 'argo_workflows_dandelion_workflow_duration_seconds_count{workflow="fan-out"} 2.0' in samples
    assert 'argo_workflows_squares_total{offset="0"} 7.0' in samples
    assert "argo_workflows_total 5.0" in samples  # the last run's


def test_a_failed_run_emits_the_workflow_metrics_with_status_failed_before_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = with_metrics(
        flaky_workflow(tmp_path / "attempts", failures=5, retries=1),
        {
            "flaky": [
                counter("attempts_total", {"status": "{{status}}"}),
                # Waits for success: not emitted, and not an error, when the step fails.
                counter("said_total", {"said": "{{outputs.result}}"}, when=SUCCEEDED),
            ]
        },
    )
    metrics = WorkflowMetrics()
    with caplog.at_level(logging.WARNING, "dandelion.workflow_metrics"), pytest.raises(WorkflowFailed):
        LocalRunner([flaky], sleep=lambda _: None, metrics=metrics).run("flaky")
    samples = exposed(metrics)
    assert 'argo_workflows_dandelion_workflow_runs_total{status="Failed",workflow="flaky"} 1.0' in samples
    assert 'argo_workflows_dandelion_workflow_succeeded{workflow="flaky"} 0.0' in samples
    assert 'argo_workflows_dandelion_workflow_duration_seconds_count{workflow="flaky"} 1.0' in samples
    assert 'argo_workflows_attempts_total{status="Failed"} 2.0' in samples  # each attempt is a node
    assert not [s for s in samples if "said_total" in s]
    assert not [r for r in caplog.records if r.name == "dandelion.workflow_metrics"]


def test_a_retried_step_emits_for_each_attempt_and_a_later_success_resets_the_gauge(tmp_path: Path) -> None:
    metrics = WorkflowMetrics()
    templates = {"flaky": [counter("attempts_total", {"status": "{{status}}"})]}
    failing = with_metrics(flaky_workflow(tmp_path / "a", failures=5, retries=0), templates)
    with pytest.raises(WorkflowFailed):
        LocalRunner([failing], metrics=metrics).run("flaky")
    recovering = with_metrics(flaky_workflow(tmp_path / "b", failures=1, retries=1), templates)
    LocalRunner([recovering], sleep=lambda _: None, metrics=metrics).run("flaky")
    samples = exposed(metrics)
    assert 'argo_workflows_attempts_total{status="Failed"} 2.0' in samples
    assert 'argo_workflows_attempts_total{status="Succeeded"} 1.0' in samples
    assert 'argo_workflows_dandelion_workflow_runs_total{status="Failed",workflow="flaky"} 1.0' in samples
    assert 'argo_workflows_dandelion_workflow_runs_total{status="Succeeded",workflow="flaky"} 1.0' in samples
    assert 'argo_workflows_dandelion_workflow_succeeded{workflow="flaky"} 1.0' in samples


def test_a_metric_that_cannot_be_emitted_is_logged_and_the_workflow_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = with_metrics(FAN_OUT, {"total": [gauge("nope", "{{outputs.parameters.missing}}")]})
    metrics = WorkflowMetrics()
    with caplog.at_level(logging.WARNING, "dandelion.workflow_metrics"):
        assert LocalRunner([broken], metrics=metrics).run("fan-out").parameters == {"total": "14"}
    assert "metric nope not emitted: unresolved expression {{outputs.parameters.missing}}" in caplog.text
    assert 'argo_workflows_dandelion_workflow_succeeded{workflow="fan-out"} 1.0' in exposed(metrics)


def test_without_metrics_the_runner_emits_nothing() -> None:
    assert LocalRunner([FAN_OUT_METRICS]).metrics is None
    assert LocalRunner([FAN_OUT_METRICS]).run("fan-out").parameters == {"total": "14"}


def rendered(template_name: str) -> list[dict]:
    """The metrics of a step of the real workflows, as rendered."""
    for manifest in manifests():
        for template in LocalRunner.spec(manifest)["templates"]:
            if template["name"] == template_name:
                return template["metrics"]["prometheus"]
    raise AssertionError(f"no template {template_name}")


def step(outputs: dict[str, str], status: str = "Succeeded") -> dict[str, str]:
    """A step node's variables when it completes, as the runner hands them to `emit`."""
    return {"status": status, "duration": "1.000000"} | {
        f"outputs.parameters.{k}": v for k, v in outputs.items()
    }


def test_the_workflows_steps_report_their_scalar_outputs() -> None:
    metrics = WorkflowMetrics()
    metrics.emit(
        rendered("summarise"), step({"summary": "{}", "ingested": "3", "unchanged": "2", "failed": "1"})
    )
    metrics.emit(rendered("evaluate-model"), step({"evaluated": "{}", "test-accuracy": "0.9375"}))
    for outcome in ("promoted", "rejected", "rejected"):
        metrics.emit(rendered("promote-model"), step({"promoted": "{}", "outcome": outcome}))
    samples = exposed(metrics)
    for sample in (
        'argo_workflows_dandelion_extraction_images{outcome="ingested"} 3.0',
        'argo_workflows_dandelion_extraction_images{outcome="unchanged"} 2.0',
        'argo_workflows_dandelion_extraction_images{outcome="failed"} 1.0',
        "argo_workflows_dandelion_training_test_accuracy 0.9375",
        'argo_workflows_dandelion_promotions_total{outcome="promoted"} 1.0',
        'argo_workflows_dandelion_promotions_total{outcome="rejected"} 2.0',
    ):
        assert sample in samples


def test_a_failed_step_of_the_workflows_reports_nothing() -> None:
    """Hera's runner writes blank outputs when the step fails; no metric reads them."""
    metrics = WorkflowMetrics()
    blanks = {"summary": "", "ingested": "", "unchanged": "", "failed": ""}
    metrics.emit(rendered("summarise"), step(blanks, status="Failed"))
    assert exposed(metrics) == []


def test_a_name_keeps_its_type_and_help_as_in_argo(caplog: pytest.LogCaptureFixture) -> None:
    metrics = WorkflowMetrics()
    variables = step({})
    metrics.emit([gauge("twice", "1")], variables)
    with caplog.at_level(logging.WARNING, "dandelion.workflow_metrics"):
        metrics.emit([counter("twice")], variables)
    assert "metric twice not emitted: twice is already" in caplog.text
    assert exposed(metrics) == ["argo_workflows_twice 1.0"]


def test_gauge_operations_add_and_subtract() -> None:
    metrics = WorkflowMetrics()
    for operation, value in (("Set", "5"), ("Add", "2"), ("Sub", "4")):
        entry = gauge("level", value)
        entry["gauge"]["operation"] = operation
        metrics.emit([entry], step({}))
    assert exposed(metrics) == ["argo_workflows_level 3.0"]


def test_the_registry_is_served_over_http_until_shut_down() -> None:
    metrics = WorkflowMetrics()
    metrics.emit([gauge("served", "{{duration}}")], step({}))
    server = metrics.serve(0)
    try:
        body = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    assert "argo_workflows_served 1.0" in body.splitlines()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
