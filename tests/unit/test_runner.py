import json

import pytest

from tests.unit import runner_steps
from workflows.local.runner import LocalRunner, WorkflowFailed, substitute


def script(name: str, function: str, inputs: list[dict], retries: int | None = None) -> dict:
    template = {
        "name": name,
        "inputs": {"parameters": inputs},
        "script": {
            "image": "test",
            "command": ["python"],
            "source": "{{inputs.parameters}}",
            "args": ["-m", "hera.workflows.runner", "-e", f"tests.unit.runner_steps:{function}"],
        },
    }
    if retries is not None:
        template["retryStrategy"] = {"limit": retries, "backoff": {"duration": "1s", "factor": "2"}}
    return template


def template(name: str, arguments: list[dict], templates: list[dict], entrypoint: str = "main") -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": name},
        "spec": {"entrypoint": entrypoint, "arguments": {"parameters": arguments}, "templates": templates},
    }


FAN_OUT = template(
    "fan-out",
    [{"name": "count", "value": "4"}, {"name": "offset", "value": "0"}],
    [
        {
            "name": "main",
            "parallelism": 2,
            "inputs": {"parameters": [{"name": "count"}, {"name": "offset"}]},
            "dag": {
                "tasks": [
                    {
                        "name": "total",
                        "template": "total",
                        "depends": "square",
                        "arguments": {
                            "parameters": [{"name": "results", "value": "{{tasks.square.outputs.result}}"}]
                        },
                    },
                    {
                        "name": "numbers",
                        "template": "numbers",
                        "arguments": {
                            "parameters": [{"name": "count", "value": "{{inputs.parameters.count}}"}]
                        },
                    },
                    {
                        "name": "square",
                        "template": "square",
                        "depends": "numbers",
                        "withParam": "{{tasks.numbers.outputs.result}}",
                        "arguments": {
                            "parameters": [
                                {"name": "n", "value": "{{item}}"},
                                {"name": "offset", "value": "{{workflow.parameters.offset}}"},
                            ]
                        },
                    },
                ]
            },
        },
        script("numbers", "numbers", [{"name": "count"}]),
        script("square", "square", [{"name": "n"}, {"name": "offset", "default": "0"}]),
        script("total", "total", [{"name": "results"}]),
    ],
)


def test_dag_runs_in_dependency_order_and_aggregates_the_fan_out() -> None:
    assert LocalRunner([FAN_OUT]).run("fan-out") == "14"  # 0 + 1 + 4 + 9


def test_parameters_override_the_workflow_arguments() -> None:
    assert LocalRunner([FAN_OUT]).run("fan-out", {"count": "3", "offset": "10"}) == "35"  # 5 + 30


def test_an_empty_fan_out_aggregates_to_an_empty_list() -> None:
    assert LocalRunner([FAN_OUT]).run("fan-out", {"count": "0"}) == "0"


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(WorkflowFailed, match="fan-out has no parameter nope"):
        LocalRunner([FAN_OUT]).run("fan-out", {"nope": "1"})


def test_retry_strategy_retries_with_backoff_then_succeeds() -> None:
    waits: list[float] = []
    flaky = template(
        "flaky",
        [{"name": "key", "value": "retry-ok"}],
        [script("main", "flaky", [{"name": "key"}, {"name": "failures", "default": "2"}], retries=2)],
    )
    assert LocalRunner([flaky], sleep=waits.append).run("flaky") == "ok after 3"
    assert waits == [1.0, 2.0]


def test_a_step_failing_past_its_retries_fails_the_workflow() -> None:
    flaky = template(
        "flaky",
        [{"name": "key", "value": "retry-exhausted"}],
        [script("main", "flaky", [{"name": "key"}, {"name": "failures", "default": "5"}], retries=1)],
    )
    with pytest.raises(WorkflowFailed, match="ConnectionError: attempt 2 failed"):
        LocalRunner([flaky], sleep=lambda _: None).run("flaky")
    assert runner_steps.calls["retry-exhausted"] == 2


def test_template_ref_runs_a_template_of_another_workflow_template() -> None:
    greeter = template("greeter", [], [script("greet", "greet", [{"name": "name"}])], entrypoint="greet")
    caller = template(
        "caller",
        [{"name": "who", "value": "dandelion"}],
        [
            {
                "name": "main",
                "inputs": {"parameters": [{"name": "who"}]},
                "dag": {
                    "tasks": [
                        {
                            "name": "hi",
                            "templateRef": {"name": "greeter", "template": "greet"},
                            "arguments": {
                                "parameters": [{"name": "name", "value": "{{inputs.parameters.who}}"}]
                            },
                        },
                    ]
                },
            }
        ],
    )
    assert LocalRunner([greeter, caller]).run("caller") == "hello dandelion"


def test_with_items_of_objects_exposes_their_fields() -> None:
    wf = template(
        "items",
        [],
        [
            {
                "name": "main",
                "dag": {
                    "tasks": [
                        {
                            "name": "greet",
                            "template": "greet",
                            "withItems": [{"who": "a"}, {"who": "b"}],
                            "arguments": {"parameters": [{"name": "name", "value": "{{item.who}}"}]},
                        },
                    ]
                },
            },
            script("greet", "greet", [{"name": "name"}]),
        ],
    )
    assert json.loads(LocalRunner([wf]).run("items")) == ["hello a", "hello b"]


def test_unresolved_expression_fails_like_argo() -> None:
    with pytest.raises(WorkflowFailed, match=r"unresolved expression \{\{tasks.x.outputs.result\}\}"):
        substitute("{{tasks.x.outputs.result}}", {})


def test_unsupported_templates_are_refused_by_name() -> None:
    wf = template("c", [], [{"name": "main", "container": {"image": "alpine", "command": ["true"]}}])
    with pytest.raises(WorkflowFailed, match="only dag and Hera runner script templates run locally"):
        LocalRunner([wf]).run("c")
