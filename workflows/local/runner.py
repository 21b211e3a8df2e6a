"""Run a rendered Argo workflow on this machine, the way the Argo controller and executor would.

It reads the manifests `dandelion render` writes (Hera's `to_dict()`), walks the entrypoint's DAG in
dependency order, substitutes `{{...}}` expressions, fans out `withParam`/`withItems` with the
template's `parallelism`, aggregates looped outputs into JSON lists, honours `retryStrategy`, follows
`templateRef` into other WorkflowTemplates, and returns the entrypoint's output parameters. What it does
not support it refuses by name.

Each script step runs as its pod would: in a process of its own, `python -m hera.workflows.runner` with
the rendered arguments, the inputs written to a file as Argo writes the script's `source`, the pod's
environment, and a /tmp of its own. As Argo's executor does, the step's `outputs.result` is what it
printed to stdout, and each output parameter is read from the file its `valueFrom.path` names; nothing
is passed in memory, so a step that prints where it should write, or writes nothing, fails here as it
would on the cluster. The processes are forked from a fork server that has imported the workflow
modules once: a fan-out of hundreds of steps does not pay Python's start-up for each.

With a `WorkflowMetrics`, it emits the templates' and the workflow's Argo custom metrics when each node
completes, succeeded or failed, with the variables Argo's controller gives them: a step's metrics after
each attempt, a DAG's when its tasks are done, the workflow's when it ends (before a failure is raised).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import re
import runpy
import select
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflows.progress import PROGRESS

if TYPE_CHECKING:  # workflow_metrics imports this module's expressions
    from workflows.local.workflow_metrics import WorkflowMetrics

log = logging.getLogger("dandelion.runner")

Manifest = dict[str, Any]
_EXPRESSION = re.compile(r"{{\s*([^{}]+?)\s*}}")
_DEPENDENCY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_WHEN_OPERAND = r"""\s*('[^']*'|"[^"]*"|[\w.]+)\s*"""
_WHEN = re.compile(rf"{_WHEN_OPERAND}(==|!=){_WHEN_OPERAND}")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
POD_TMP = "/tmp/"  # noqa: S108  # the pod's /tmp, where Hera's runner writes its outputs; a fresh folder here
STDERR_TAIL = 2000  # characters of a failed step's stderr quoted in the failure


class WorkflowFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Outputs:
    """What a template leaves to its callers: `outputs.result` (a script's stdout) and its parameters."""

    result: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace every `{{name}}` by its value in `scope`; an unknown name fails, as in Argo."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in scope:
            raise WorkflowFailed(f"unresolved expression {{{{{name}}}}}")
        return scope[name]

    return _EXPRESSION.sub(value, text)


def when_holds(expression: str) -> bool:
    """Whether a substituted `when` holds, as Argo's govaluate reads a comparison: `a == b` or `a != b`,
    each side a quoted string, a number, or a bare word, which Argo takes as a string (so that
    `Failed == Succeeded` needs no quotes). An empty `when` holds; anything else is refused by name."""
    if not expression.strip():
        return True
    match = _WHEN.fullmatch(expression)
    if match is None:
        raise WorkflowFailed(f"`when: {expression}`: only `a == b` and `a != b` are evaluated locally")
    left, operator, right = match.groups()
    equal = _operand(left) == _operand(right)
    return equal if operator == "==" else not equal


def _operand(token: str) -> str | float:
    """A `when` operand as govaluate compares it: numbers by value, strings and bare words as text."""
    if token[0] in "'\"":
        return token[1:-1]
    return float(token) if _NUMBER.fullmatch(token) else token


def _input_scope(template: Mapping[str, Any], arguments: Mapping[str, str]) -> dict[str, str]:
    """`inputs.parameters.*` of a template called with `arguments`: each declared input from its argument,
    else its default."""
    inputs: dict[str, str] = {}
    for declared in template.get("inputs", {}).get("parameters", []):
        name = declared["name"]
        if name in arguments:
            inputs[name] = arguments[name]
        elif "default" in declared:
            inputs[name] = declared["default"]
        else:
            raise WorkflowFailed(f"template {template['name']}: input {name!r} has no value")
    scope = {f"inputs.parameters.{k}": v for k, v in inputs.items()}
    scope["inputs.parameters"] = json.dumps([{"name": k, "value": v} for k, v in inputs.items()])
    return scope


def _output_scope(outputs: Outputs) -> dict[str, str]:
    """`outputs.*` of a completed node, as its metrics read them."""
    scope = {f"outputs.parameters.{k}": v for k, v in outputs.parameters.items()}
    if outputs.result is not None:
        scope["outputs.result"] = outputs.result
    return scope


def _item_scope(item: Any) -> dict[str, str]:
    if isinstance(item, dict):
        return {"item": json.dumps(item)} | {f"item.{k}": _as_param(v) for k, v in item.items()}
    return {"item": _as_param(item)}


def _as_param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _task_scope(name: str, outputs: list[Outputs], looped: bool) -> dict[str, str]:
    """`tasks.<name>.outputs.*` as Argo exposes them: one node's values, or, for a looped task, JSON lists
    in item order (each result parsed as JSON when it is, each parameter value a string)."""
    prefix = f"tasks.{name}.outputs"
    if not looped:
        scope = {f"{prefix}.parameters.{k}": v for k, v in outputs[0].parameters.items()}
        if outputs[0].result is not None:
            scope[f"{prefix}.result"] = outputs[0].result
        return scope

    def parsed(result: str) -> Any:
        try:
            return json.loads(result)
        except ValueError:
            return result

    scope = {
        f"{prefix}.result": json.dumps([parsed(o.result) for o in outputs if o.result is not None]),
        f"{prefix}.parameters": json.dumps([o.parameters for o in outputs if o.parameters]),
    }
    for name_ in {n for o in outputs for n in o.parameters}:
        values = [o.parameters[name_] for o in outputs if name_ in o.parameters]
        scope[f"{prefix}.parameters.{name_}"] = json.dumps(values)
    return scope


def _wait_reporting(name: str, futures: list[Future[Outputs]]) -> None:
    """Wait for a task's nodes; a fan-out reports its progress every tenth of the way (what the terminal
    of `dandelion up` shows), and the first failure cancels the rest and fails the task."""
    every = max(1, len(futures) // 10)
    for finished, future in enumerate(as_completed(futures), start=1):
        if future.exception():
            for other in futures:
                other.cancel()
            raise WorkflowFailed(f"task {name} failed: {future.exception()}")
        if len(futures) > 1 and (finished % every == 0 or finished == len(futures)):
            log.info("%s: %d/%d", name, finished, len(futures))


def _dependencies(task: Mapping[str, Any]) -> set[str]:
    if "depends" in task:
        if re.search(r"\.(Failed|Errored|Skipped|Omitted|Daemoned)|\|\||!", task["depends"]):
            raise WorkflowFailed(f"task {task['name']}: only plain `a && b` depends are supported locally")
        return {name for name in _DEPENDENCY.findall(task["depends"]) if name not in ("Succeeded",)}
    return set(task.get("dependencies", []))


def _retries(template: Mapping[str, Any]) -> tuple[int, float, float]:
    strategy = template.get("retryStrategy") or {}
    backoff = strategy.get("backoff") or {}
    duration = str(backoff.get("duration", "0")).removesuffix("s")
    return int(strategy.get("limit", 0)), float(duration or 0), float(backoff.get("factor", 1) or 1)


@contextmanager
def _relaying_progress(step: str, stderr: Path) -> Iterator[None]:
    """While a pod runs, relay the progress lines of its stderr (`workflows.progress.PROGRESS`) to this log as
    they come, as `kubectl logs -f` would show them."""
    done = threading.Event()

    def relay() -> None:
        offset = 0
        while True:
            finished = done.is_set()
            if stderr.exists():
                with stderr.open("rb") as log_file:
                    log_file.seek(offset)
                    text = log_file.read()
                complete = text[: text.rfind(b"\n") + 1]
                offset += len(complete)
                for line in complete.decode(errors="replace").splitlines():
                    if line.startswith(PROGRESS):
                        log.info("%s: %s", step, line.removeprefix(PROGRESS))
            if finished:
                return
            done.wait(0.5)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _exception_line(pod_log: str) -> str:
    """The line that names the exception in a Python traceback (the first one back at the margin after
    the last `Traceback` header), else the log's last line."""
    lines = pod_log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    after = lines[starts[-1] + 1 :] if starts else []
    return next((line for line in after if line[:1].strip()), lines[-1] if lines else "no output")


def _pod(module: str, args: list[str], env: dict[str, str], stdout: str, stderr: str) -> int:
    """The pod's main container, in a fresh process: `python -m <module> <args>` with the pod's
    environment and its standard streams going to files; returns its exit code as Python's would be."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [module, *args]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # what the interpreter does with it at exit
        if isinstance(exc.code, int | None):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _end_with(runner: int) -> None:
    """Make this pod's process end when the runner's does, however it ends: a runner killed with SIGKILL
    runs no clean-up, and its pool's workers would wait for work forever, the fork server for its last
    child (the fork server goes once they are gone). A pidfd names that very process, never a successor
    with its number (Linux; elsewhere the pods may outlive a killed runner)."""
    if not hasattr(os, "pidfd_open"):
        return
    try:
        runner_fd = os.pidfd_open(runner)
    except ProcessLookupError:
        os._exit(1)

    def watch() -> None:
        select.select([runner_fd], [], [])  # readable when the runner has exited
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


class Pods:
    """Runs each step in a process of its own, forked from a fork server that has imported `preload`
    (the workflow modules) once; it starts with the `Pods`, so that it imports while its caller goes on
    (builds the manifests). A process pool whose workers each run one step and exit: it starts and reaps
    them from one thread, which forkserver processes need (their exit codes are read from a pipe that
    concurrent joins race for). No worker outlives the runner (`_end_with`).

    A step whose process is killed (SIGKILL, the OOM killer) fails with exit code 137, as Kubernetes
    reports such a container, so that its retryStrategy applies and the run goes on or fails as Argo's
    would. Its pool is then broken (and has terminated its other workers, whose steps fail the same way):
    the next step gets a new one."""

    KILLED = 128 + signal.SIGKILL

    def __init__(self, preload: Iterable[str], workers: int = 16) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(sorted(set(preload)))
        multiprocessing.forkserver.ensure_running()  # it imports `preload` while the caller goes on
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=self.context,
            max_tasks_per_child=1,
            initializer=_end_with,
            initargs=(os.getpid(),),
        )

    def __enter__(self) -> Pods:
        self.pool = self._new_pool()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()  # no idle worker outlives the run
            self.pool = None

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self.pool is broken:
                self.pool = self._new_pool()
                broken.shutdown(wait=False)

    def execute(self, target: Callable[..., int], *args: Any) -> int:
        """`target(*args)` in a pod's process: its exit code, KILLED when the process was killed."""
        while True:
            pool = self.pool
            if pool is None:
                raise RuntimeError("Pods.execute outside `with pods:`")
            try:
                future = pool.submit(target, *args)
            except BrokenProcessPool:  # another step's process was killed: this one has not started
                self._replace(pool)
                continue
            try:
                return future.result()
            except BrokenProcessPool:
                self._replace(pool)
                return self.KILLED

    def run(self, args: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> int:
        if args[:1] != ["-m"] or len(args) < 2:
            raise WorkflowFailed(f"not a module invocation: {args}")
        return self.execute(_pod, args[1], args[2:], env, str(stdout), str(stderr))


def _entrypoint_modules(manifests: Iterable[Manifest]) -> set[str]:
    modules = set()
    for manifest in manifests:
        for template in LocalRunner.spec(manifest).get("templates", []):
            args = template.get("script", {}).get("args", [])
            if "-e" in args[:-1]:
                modules.add(args[args.index("-e") + 1].split(":")[0])
    return modules


class LocalRunner:
    """Runs workflows from a set of manifests (WorkflowTemplates, Workflows, CronWorkflows) by name.

    `pods` starts the step processes: by default `Pods`, preloading the steps' modules;
    anything with its `run` and context manager will do (a test passes one that starts
    `python -m hera.workflows.runner` itself). `metrics` receives the Argo custom metrics the manifests
    declare; without it none are emitted."""

    def __init__(
        self,
        manifests: Iterable[Manifest],
        sleep: Callable[[float], None] = time.sleep,
        pods: Pods | None = None,
        metrics: WorkflowMetrics | None = None,
    ) -> None:
        self.manifests = {m["metadata"]["name"]: m for m in manifests}
        self.sleep = sleep
        self.pods = pods or Pods(_entrypoint_modules(self.manifests.values()))
        self.metrics = metrics

    def arguments(self, name: str) -> dict[str, str]:
        """The parameters workflow `name` declares, with their default values."""
        if name not in self.manifests:
            raise WorkflowFailed(f"no workflow {name!r}; known: {', '.join(sorted(self.manifests))}")
        spec = self.spec(self.manifests[name])
        return {p["name"]: p.get("value", "") for p in spec.get("arguments", {}).get("parameters", [])}

    def run(self, name: str, parameters: Mapping[str, str] | None = None) -> Outputs:
        """Run workflow `name` to completion; returns its entrypoint's outputs, raises WorkflowFailed."""
        arguments = self.arguments(name)
        spec = self.spec(self.manifests[name])
        unknown = set(parameters or {}) - set(arguments)
        if unknown:
            raise WorkflowFailed(f"{name} has no parameter {', '.join(sorted(unknown))}")
        arguments |= dict(parameters or {})
        workflow_scope = {"workflow.name": f"{name}-local-{uuid.uuid4().hex[:5]}"} | {
            f"workflow.parameters.{k}": v for k, v in arguments.items()
        }
        # Argo hands the workflow's arguments to the entrypoint template's inputs, by name; the workflow's
        # metrics see the entrypoint's node.
        entrypoint = self._template(name, spec["entrypoint"])
        variables = workflow_scope | _input_scope(entrypoint, arguments)
        with self.pods:
            return self._node(
                spec,
                variables,
                lambda: self._run_template(name, spec["entrypoint"], arguments, workflow_scope),
                workflow_level=True,
            )

    @staticmethod
    def spec(manifest: Manifest) -> dict[str, Any]:
        spec = manifest["spec"]
        return spec["workflowSpec"] if manifest.get("kind") == "CronWorkflow" else spec

    def _template(self, manifest_name: str, template_name: str) -> dict[str, Any]:
        if manifest_name not in self.manifests:
            raise WorkflowFailed(f"no WorkflowTemplate {manifest_name!r}")
        for template in self.spec(self.manifests[manifest_name])["templates"]:
            if template["name"] == template_name:
                return template
        raise WorkflowFailed(f"no template {template_name!r} in {manifest_name}")

    def _run_template(
        self,
        manifest_name: str,
        template_name: str,
        arguments: Mapping[str, str],
        workflow: Mapping[str, str],
    ) -> Outputs:
        template = self._template(manifest_name, template_name)
        scope = dict(workflow) | _input_scope(template, arguments)
        if "dag" in template:
            return self._node(
                template, scope, lambda: self._run_dag(manifest_name, template, dict(scope), workflow)
            )
        if "script" in template:
            return self._run_script(template, scope)
        raise WorkflowFailed(
            f"template {template_name}: only dag and Hera runner script templates run locally"
        )

    def _run_script(self, template: Mapping[str, Any], scope: Mapping[str, str]) -> Outputs:
        script = template["script"]
        args = [substitute(str(a), scope) for a in script.get("args", [])]
        if script.get("command") != ["python"] or args[:2] != ["-m", "hera.workflows.runner"]:
            raise WorkflowFailed(f"template {template['name']}: not a Hera runner script")
        limit, delay, factor = _retries(template)
        for attempt in range(limit + 1):
            try:  # each attempt is a node of its own, which emits the template's metrics
                return self._node(template, scope, lambda: self._run_pod(template, args, scope))
            except WorkflowFailed as exc:
                if attempt == limit:
                    raise
                log.warning("%s failed (%s), retry %d of %d", template["name"], exc, attempt + 1, limit)
                self.sleep(delay * factor**attempt)
        raise AssertionError("unreachable")

    def _node(
        self,
        owner: Mapping[str, Any],
        variables: Mapping[str, str],
        run: Callable[[], Outputs],
        workflow_level: bool = False,
    ) -> Outputs:
        """`run` one node, then emit the metrics of `owner` (its template, or the workflow's spec) whether
        it succeeded or failed, with `variables` and the node's `status`, `duration` (seconds) and
        outputs; for the workflow, also as `workflow.status` and `workflow.duration`."""
        prometheus = owner.get("metrics", {}).get("prometheus", [])
        if self.metrics is None or not prometheus:
            return run()
        started, status, outputs = time.monotonic(), "Failed", Outputs()
        try:
            outputs = run()
            status = "Succeeded"
            return outputs
        finally:
            node = {"status": status, "duration": f"{time.monotonic() - started:f}"}
            if workflow_level:
                node |= {"workflow.status": node["status"], "workflow.duration": node["duration"]}
            self.metrics.emit(prometheus, dict(variables) | node | _output_scope(outputs))

    def _run_pod(self, template: Mapping[str, Any], args: list[str], scope: Mapping[str, str]) -> Outputs:
        """One attempt of a script step, in its own process and its own /tmp, read back as Argo reads it."""
        with tempfile.TemporaryDirectory(prefix="pod-") as folder:
            pod = Path(folder)

            def local(path: str) -> Path:
                if not path.startswith(POD_TMP):
                    raise WorkflowFailed(f"template {template['name']}: {path} is outside the pod's /tmp")
                return pod / "tmp" / path.removeprefix(POD_TMP)

            env = dict(os.environ)
            for variable in template["script"].get("env", []):
                value = substitute(str(variable.get("value", "")), scope)
                env[variable["name"]] = str(local(value)) if value.startswith(POD_TMP) else value
            source = pod / "source"  # Argo writes the script's source to a file and passes its path last
            source.write_text(substitute(template["script"].get("source", ""), scope))
            stdout, stderr = pod / "stdout", pod / "stderr"
            with _relaying_progress(template["name"], stderr):
                code = self.pods.run([*args, str(source)], env, stdout, stderr)
            if code != 0:  # the pod failed: its log is shown, and the exception's line is the reason
                # A pod killed before it wrote anything has no log at all.
                pod_log = stderr.read_text(errors="replace").strip() if stderr.exists() else ""
                log.warning("%s exited with code %d:\n%s", template["name"], code, pod_log[-STDERR_TAIL:])
                raise WorkflowFailed(f"{template['name']}: exit code {code}: {_exception_line(pod_log)}")
            result = stdout.read_text().removesuffix("\n")  # Argo trims one trailing newline
            parameters = {}
            for declared in template.get("outputs", {}).get("parameters", []):
                path = local(declared["valueFrom"]["path"])
                if not path.is_file():
                    raise WorkflowFailed(f"{template['name']}: output {declared['name']!r} was not written")
                parameters[declared["name"]] = path.read_text()
            return Outputs(result, parameters)

    def _run_dag(
        self,
        manifest_name: str,
        template: Mapping[str, Any],
        scope: dict[str, str],
        workflow: Mapping[str, str],
    ) -> Outputs:
        tasks = {task["name"]: task for task in template["dag"]["tasks"]}
        needs = {name: _dependencies(task) for name, task in tasks.items()}
        done: list[str] = []
        with ThreadPoolExecutor(max_workers=int(template.get("parallelism") or 32)) as pool:
            while len(done) < len(tasks):
                ready = [n for n in tasks if n not in done and needs[n] <= set(done)]
                if not ready:
                    raise WorkflowFailed(f"{template['name']}: tasks wait on unknown or cyclic dependencies")
                launched = {
                    name: self._launch(pool, manifest_name, tasks[name], scope, workflow) for name in ready
                }
                for name, (looped, futures) in launched.items():
                    _wait_reporting(name, futures)
                    outputs = [f.result() for f in futures]
                    scope |= _task_scope(name, outputs, looped)
                    log.info(
                        "task %s succeeded (%d node%s)", name, len(outputs), "" if len(outputs) == 1 else "s"
                    )
                    done.append(name)
        # A DAG's outputs are what it declares, each taken from its tasks' outputs.
        return Outputs(
            parameters={
                p["name"]: substitute(p["valueFrom"]["parameter"], scope)
                for p in template.get("outputs", {}).get("parameters", [])
            }
        )

    def _launch(
        self,
        pool: ThreadPoolExecutor,
        manifest_name: str,
        task: Mapping[str, Any],
        scope: Mapping[str, str],
        workflow: Mapping[str, str],
    ) -> tuple[bool, list[Future[Outputs]]]:
        if "when" in task:
            raise WorkflowFailed(f"task {task['name']}: `when` is not supported locally")
        if "withParam" in task:
            text = substitute(task["withParam"], scope)
            try:
                items: list[Any] | None = json.loads(text)
            except ValueError:
                items = None
            if not isinstance(items, list):
                raise WorkflowFailed(f"withParam of {task['name']} is not a JSON list: {text[:200]!r}")
        else:
            items = task.get("withItems")
        if "templateRef" in task:
            target, template_name = task["templateRef"]["name"], task["templateRef"]["template"]
        else:
            target, template_name = manifest_name, task["template"]

        def run_one(item_scope: Mapping[str, str]) -> Outputs:
            local = dict(scope) | dict(item_scope)
            arguments = {
                p["name"]: substitute(str(p.get("value", "")), local)
                for p in task.get("arguments", {}).get("parameters", [])
            }
            return self._run_template(target, template_name, arguments, workflow)

        if items is None:
            return False, [pool.submit(run_one, {})]
        return True, [pool.submit(run_one, _item_scope(item)) for item in items]
