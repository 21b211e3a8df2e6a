import json
from pathlib import Path

import pytest

from workflows.local.runner import LocalRunner, WorkflowFailed, substitute, when_holds


def script(
    name: str, function: str, inputs: list[dict], retries: int | None = None, outputs: tuple[str, ...] = ()
) -> dict:
    """A script template as Hera renders a runner step (outputs: named parameters written to files)."""
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
    if outputs:
        template["outputs"] = {
            "parameters": [
                {"name": n, "valueFrom": {"path": f"/tmp/hera-outputs/parameters/{n}"}} for n in outputs
            ]
        }
        template["script"]["env"] = [{"name": "hera__outputs_directory", "value": "/tmp/hera-outputs"}]
    return template


def dag(tasks: list[dict], outputs: dict[str, str], **fields) -> dict:
    """The entrypoint DAG, with its outputs (name -> expression) as a workflow declares what it returns."""
    return {
        "name": "main",
        **fields,
        "dag": {"tasks": tasks},
        "outputs": {"parameters": [{"name": k, "valueFrom": {"parameter": v}} for k, v in outputs.items()]},
    }


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
        dag(
            [
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
                    "arguments": {"parameters": [{"name": "count", "value": "{{inputs.parameters.count}}"}]},
                },
                {
                    "name": "square",
                    "template": "square",
                    "depends": "numbers",
                    "withParam": "{{tasks.numbers.outputs.parameters.numbers}}",
                    "arguments": {
                        "parameters": [
                            {"name": "n", "value": "{{item}}"},
                            {"name": "offset", "value": "{{workflow.parameters.offset}}"},
                        ]
                    },
                },
            ],
            {"total": "{{tasks.total.outputs.parameters.total}}"},
            parallelism=2,
            inputs={"parameters": [{"name": "count"}, {"name": "offset"}]},
        ),
        script("numbers", "numbers", [{"name": "count"}], outputs=("numbers",)),
        script("square", "square", [{"name": "n"}, {"name": "offset", "default": "0"}]),
        script("total", "total", [{"name": "results"}], outputs=("total",)),
    ],
)


def total(parameters: dict[str, str] | None = None) -> str:
    return LocalRunner([FAN_OUT]).run("fan-out", parameters).parameters["total"]


def test_dag_runs_in_dependency_order_and_aggregates_the_fan_out() -> None:
    assert total() == "14"  # 0 + 1 + 4 + 9


def test_parameters_override_the_workflow_arguments() -> None:
    assert total({"count": "3", "offset": "10"}) == "35"  # 5 + 30


def test_an_empty_fan_out_aggregates_to_an_empty_list() -> None:
    assert total({"count": "0"}) == "0"


def test_an_empty_list_on_stdout_is_no_list_at_all_as_on_argo() -> None:
    on_stdout = json.loads(json.dumps(FAN_OUT).replace("outputs.parameters.numbers", "outputs.result"))
    on_stdout["spec"]["templates"][1] = script("numbers", "numbers_on_stdout", [{"name": "count"}])
    with pytest.raises(WorkflowFailed, match="withParam of square is not a JSON list: ''"):
        LocalRunner([on_stdout]).run("fan-out", {"count": "0"})


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(WorkflowFailed, match="fan-out has no parameter nope"):
        LocalRunner([FAN_OUT]).run("fan-out", {"nope": "1"})


def flaky_workflow(counter: Path, failures: int, retries: int) -> dict:
    step = script("flaky", "flaky", [{"name": "counter"}, {"name": "failures"}], retries=retries)
    task = {
        "name": "flaky",
        "template": "flaky",
        "arguments": {
            "parameters": [
                {"name": "counter", "value": str(counter)},
                {"name": "failures", "value": str(failures)},
            ]
        },
    }
    return template("flaky", [], [dag([task], {"said": "{{tasks.flaky.outputs.result}}"}), step])


def test_retry_strategy_retries_with_backoff_then_succeeds(tmp_path: Path) -> None:
    waits: list[float] = []
    runner = LocalRunner([flaky_workflow(tmp_path / "attempts", failures=2, retries=2)], sleep=waits.append)
    assert runner.run("flaky").parameters == {"said": "ok after 3"}
    assert waits == [1.0, 2.0]


def test_a_step_failing_past_its_retries_fails_the_workflow_with_its_error(tmp_path: Path) -> None:
    runner = LocalRunner([flaky_workflow(tmp_path / "attempts", failures=5, retries=1)], sleep=lambda _: None)
    with pytest.raises(WorkflowFailed, match=r"flaky: exit code 1: ConnectionError: attempt 2 failed$"):
        runner.run("flaky")
    assert (tmp_path / "attempts").read_text() == "2"


def test_template_ref_runs_a_template_of_another_workflow_template() -> None:
    greeter = template("greeter", [], [script("greet", "greet", [{"name": "name"}])], entrypoint="greet")
    hi = {
        "name": "hi",
        "templateRef": {"name": "greeter", "template": "greet"},
        "arguments": {"parameters": [{"name": "name", "value": "{{inputs.parameters.who}}"}]},
    }
    caller = template(
        "caller",
        [{"name": "who", "value": "dandelion"}],
        [dag([hi], {"said": "{{tasks.hi.outputs.result}}"}, inputs={"parameters": [{"name": "who"}]})],
    )
    assert LocalRunner([greeter, caller]).run("caller").parameters == {"said": "hello dandelion"}


def test_with_items_of_objects_exposes_their_fields() -> None:
    greet = {
        "name": "greet",
        "template": "greet",
        "withItems": [{"who": "a"}, {"who": "b"}],
        "arguments": {"parameters": [{"name": "name", "value": "{{item.who}}"}]},
    }
    wf = template(
        "items",
        [],
        [
            dag([greet], {"all": "{{tasks.greet.outputs.result}}"}),
            script("greet", "greet", [{"name": "name"}]),
        ],
    )
    assert json.loads(LocalRunner([wf]).run("items").parameters["all"]) == ["hello a", "hello b"]


def passing(step: str, outputs: tuple[str, ...], source: str) -> dict:
    """`step` then `double`, fed with what Argo would read from `step`: `source` names which output."""
    tasks = [
        {"name": "first", "template": "first"},
        {
            "name": "second",
            "template": "second",
            "depends": "first",
            "arguments": {"parameters": [{"name": "data", "value": source}]},
        },
    ]
    return template(
        "passing",
        [],
        [
            dag(tasks, {"doubled": "{{tasks.second.outputs.result}}"}),
            script("first", step, [], outputs=outputs),
            script("second", "double", [{"name": "data"}]),
        ],
    )


def test_a_steps_result_is_its_stdout_so_a_stray_print_breaks_the_next_step_as_on_argo() -> None:
    """What MLflow does when a run ends: a print before Hera's runner prints the return value."""
    with pytest.raises(WorkflowFailed, match=r"task second failed: second: exit code 1: .*validation error"):
        LocalRunner([passing("noisy", (), "{{tasks.first.outputs.result}}")]).run("passing")


def test_a_named_output_parameter_is_read_from_its_file_whatever_the_step_prints() -> None:
    flow = passing("clean", ("value",), "{{tasks.first.outputs.parameters.value}}")
    assert LocalRunner([flow]).run("passing").parameters == {"doubled": "2"}


def test_an_output_the_step_did_not_write_fails_it() -> None:
    flow = passing("silent", ("value",), "{{tasks.first.outputs.parameters.value}}")
    with pytest.raises(WorkflowFailed, match="first: output 'value' was not written"):
        LocalRunner([flow]).run("passing")


def test_unresolved_expression_fails_like_argo() -> None:
    with pytest.raises(WorkflowFailed, match=r"unresolved expression \{\{tasks.x.outputs.result\}\}"):
        substitute("{{tasks.x.outputs.result}}", {})


def test_unsupported_templates_are_refused_by_name() -> None:
    wf = template("c", [], [{"name": "main", "container": {"image": "alpine", "command": ["true"]}}])
    with pytest.raises(WorkflowFailed, match="only dag and Hera runner script templates run locally"):
        LocalRunner([wf]).run("c")


@pytest.mark.parametrize(
    ("expression", "holds"),
    [
        ("", True),
        ("Succeeded == Succeeded", True),  # bare words are strings, as Argo turns govaluate's variables
        ("Failed == Succeeded", False),
        ("Failed != Succeeded", True),
        ("'promoted' == promoted", True),
        ("\"a b\" != 'a b'", False),
        ("1 == 1.0", True),  # numbers compare by value
        ("1 == '1'", False),
    ],
)
def test_when_compares_as_argo_does(expression: str, holds: bool) -> None:
    assert when_holds(expression) is holds


def test_a_when_beyond_a_comparison_is_refused_by_name() -> None:
    with pytest.raises(WorkflowFailed, match="only `a == b` and `a != b` are evaluated locally"):
        when_holds("a == a && b == b")


def test_a_steps_progress_lines_reach_the_runners_log(caplog: pytest.LogCaptureFixture) -> None:
    flow = template(
        "chatty",
        [],
        [
            dag(
                [
                    {
                        "name": "talk",
                        "template": "talk",
                        "arguments": {"parameters": [{"name": "count", "value": "3"}]},
                    }
                ],
                {"count": "{{tasks.talk.outputs.parameters.count}}"},
            ),
            script("talk", "chatty", [{"name": "count"}], outputs=("count",)),
        ],
    )
    with caplog.at_level("INFO", logger="dandelion.runner"):
        assert LocalRunner([flow]).run("chatty").parameters == {"count": "3"}
    relayed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("talk: ")]
    assert relayed == ["talk: step 1 of 3", "talk: step 2 of 3", "talk: step 3 of 3"]
