"""How every step and workflow is packaged for Argo.

A step is a Hera runner script in the workflows image: on Argo the pod runs
`python -m hera.workflows.runner -e <module>:<function>`, and the local runner makes the same call.
Configuration reaches the pod from the `dandelion-config` ConfigMap and the `dandelion-secrets` Secret:
the same variables the local processes read from their environment.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from hera.workflows import ConfigMapEnvFrom, Parameter, SecretEnvFrom, WorkflowTemplate, script
from hera.workflows.models import Mutex, Synchronization, ValueFrom

from workflows.defaults import IMAGE, SERVICE_ACCOUNT

step = functools.partial(
    script,
    # The runner constructor imports the function from the installed package instead of pasting its
    # source into the YAML: one definition, importable and testable like any other code.
    constructor="runner",
    image=IMAGE,
    env_from=[ConfigMapEnvFrom(name="dandelion-config"), SecretEnvFrom(name="dandelion-secrets")],
)


def workflow_template(
    name: str, entrypoint: str, parameters: Mapping[str, str], one_at_a_time: bool = False
) -> WorkflowTemplate:
    """A WorkflowTemplate running as the workflows' service account, with `parameters` (name -> default);
    `one_at_a_time` holds a mutex named after it, so a second run waits for the first."""
    return WorkflowTemplate(
        name=name,
        entrypoint=entrypoint,
        service_account_name=SERVICE_ACCOUNT,
        arguments=arguments(parameters),
        synchronization=Synchronization(mutexes=[Mutex(name=name)]) if one_at_a_time else None,
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
