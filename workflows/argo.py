"""How every step and workflow is packaged for Argo.

A step is a Hera runner script in the workflows image: on Argo the pod runs
`python -m hera.workflows.runner -e <module>:<function>`, and the local runner makes the same call.
Configuration reaches the pod from the `dandelion-config` ConfigMap, and the credentials of its
workflow's database and S3 users from that workflow's own Secret, to the steps that use them only: the
same variables the local processes read from their environment.

Metrics are Argo's own custom metrics: the controller emits them when a workflow or a step completes,
under `argo_workflows_<name>`, and the local runner emits them the same way (workflows.local.
workflow_metrics). A metric's value may only name a scalar variable, so a step that reports a figure
writes it as an output parameter of its own beside its JSON output.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from hera.workflows import (
    ConfigMapEnvFrom,
    Counter,
    Gauge,
    Histogram,
    Label,
    Parameter,
    SecretEnvFrom,
    WorkflowTemplate,
    script,
)
from hera.workflows.models import Mutex, Synchronization, ValueFrom

from workflows.defaults import IMAGE, SERVICE_ACCOUNT


def step(credentials: str | None = None, **kwargs: Any) -> Any:
    """Hera's `script` decorator for a step, configured from `dandelion-config`; `credentials` names the
    Secret of its workflow's users (workflows.defaults), for a step that opens the catalog or the object
    store. The runner constructor imports the function from the installed package instead of pasting its
    source into the YAML: one definition, importable and testable like any other code."""
    env_from: list[ConfigMapEnvFrom | SecretEnvFrom] = [ConfigMapEnvFrom(name="dandelion-config")]
    if credentials is not None:
        env_from.append(SecretEnvFrom(name=credentials))
    return script(constructor="runner", image=IMAGE, env_from=env_from, **kwargs)


# Workflow durations from a quick extraction to a long training: 10 s to 2 h.
DURATION_BUCKETS: list[float] = [10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200]

# A failed step's outputs are empty (Hera's runner writes blanks so Argo can collect them), which no
# metric can hold: a step's metrics are emitted only when it succeeds.
SUCCEEDED = "{{status}} == Succeeded"


def workflow_metrics(name: str) -> list[Counter | Gauge | Histogram]:
    """What every workflow reports when it ends, labelled with its name (a literal: a workflow submitted
    from a template gets a generated name): runs by status, duration, and whether the last run succeeded
    (two gauges, one of which each run's `when` selects, as Argo's documentation does it)."""
    workflow = Label(key="workflow", value=name)
    succeeded = functools.partial(
        Gauge,
        name="dandelion_workflow_succeeded",
        help="1 if the workflow's last run succeeded, else 0",
        labels=[workflow],
        realtime=False,
    )
    return [
        Counter(
            name="dandelion_workflow_runs_total",
            help="Workflow runs, by how they ended",
            labels=[workflow, Label(key="status", value="{{workflow.status}}")],
            value="1",
        ),
        Histogram(
            name="dandelion_workflow_duration_seconds",
            help="How long workflow runs took, in seconds",
            labels=[workflow],
            buckets=list(DURATION_BUCKETS),
            value="{{workflow.duration}}",
        ),
        succeeded(value="1", when="{{workflow.status}} == Succeeded"),
        succeeded(value="0", when="{{workflow.status}} != Succeeded"),
    ]


def step_gauge(name: str, help: str, value: str, labels: Mapping[str, str] | None = None) -> Gauge:
    """A gauge a step sets from `value` (a scalar variable, usually one of its output parameters) when it
    succeeds."""
    return Gauge(name=name, help=help, labels=_labels(labels), realtime=False, value=value, when=SUCCEEDED)


def step_counter(name: str, help: str, labels: Mapping[str, str] | None = None) -> Counter:
    """A counter a step adds one to when it succeeds."""
    return Counter(name=name, help=help, labels=_labels(labels), value="1", when=SUCCEEDED)


def _labels(labels: Mapping[str, str] | None) -> list[Label] | None:
    return [Label(key=key, value=value) for key, value in labels.items()] if labels else None


def workflow_template(
    name: str, entrypoint: str, parameters: Mapping[str, str], one_at_a_time: bool = False
) -> WorkflowTemplate:
    """A WorkflowTemplate running as the workflows' service account, with `parameters` (name -> default)
    and the workflow metrics; `one_at_a_time` holds a mutex named after it, so a second run waits for the
    first."""
    return WorkflowTemplate(
        name=name,
        entrypoint=entrypoint,
        service_account_name=SERVICE_ACCOUNT,
        arguments=arguments(parameters),
        synchronization=Synchronization(mutexes=[Mutex(name=name)]) if one_at_a_time else None,
        metrics=workflow_metrics(name),
    )


def arguments(defaults: Mapping[str, str]) -> list[Parameter]:
    """A workflow's parameters with their default values, as `argo submit -p name=value` overrides them."""
    return [Parameter(name=name, value=value) for name, value in defaults.items()]


def inputs(names: Mapping[str, str]) -> list[Parameter]:
    """The entrypoint DAG's inputs: Argo hands it the workflow's arguments of the same names."""
    return [Parameter(name=name) for name in names]


def output(name: str, source: str) -> Parameter:
    """A DAG's output parameter, taken from one of its tasks' outputs (`{{tasks.x.outputs.parameters.y}}`):
    what a workflow returns, and what a `templateRef` caller reads."""
    return Parameter(name=name, value_from=ValueFrom(parameter=source))


def pass_inputs(names: Mapping[str, str]) -> dict[str, str]:
    """A task's arguments that forward the DAG's inputs of the same names."""
    return {name: f"{{{{inputs.parameters.{name}}}}}" for name in names}
