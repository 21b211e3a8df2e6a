"""Run a rendered Argo workflow on this machine, the way the Argo controller would, without a cluster.

It reads the same manifests `dandelion render` writes (Hera's `to_dict()`), walks the entrypoint's DAG
in dependency order, substitutes `{{...}}` expressions, fans out `withParam`/`withItems` with the
template's `parallelism`, aggregates looped results into a JSON list, honours `retryStrategy.limit`,
follows `templateRef` into other WorkflowTemplates, and runs each Hera runner script in-process through
Hera's own runner, exactly the call the pod makes. What it does not support it refuses by name.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

from hera.shared.serialization import serialize
from hera.workflows._runner.util import _runner as hera_runner

log = logging.getLogger("dandelion.runner")

Manifest = dict[str, Any]
_EXPRESSION = re.compile(r"{{\s*([^{}]+?)\s*}}")
_DEPENDENCY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


class WorkflowFailed(RuntimeError):
    pass


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace every `{{name}}` by its value in `scope`; an unknown name fails, as in Argo."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in scope:
            raise WorkflowFailed(f"unresolved expression {{{{{name}}}}}")
        return scope[name]

    return _EXPRESSION.sub(value, text)


def _item_scope(item: Any) -> dict[str, str]:
    if isinstance(item, dict):
        return {"item": json.dumps(item)} | {f"item.{k}": _as_param(v) for k, v in item.items()}
    return {"item": _as_param(item)}


def _as_param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _aggregate(results: Iterable[str]) -> str:
    """A looped task's `outputs.result`: a JSON list, each JSON result parsed, as Argo does."""

    def parsed(result: str) -> Any:
        try:
            return json.loads(result)
        except ValueError:
            return result

    return json.dumps([parsed(r) for r in results])


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


class LocalRunner:
    """Runs workflows from a set of manifests (WorkflowTemplates, Workflows, CronWorkflows) by name."""

    def __init__(self, manifests: Iterable[Manifest], sleep: Callable[[float], None] = time.sleep) -> None:
        self.manifests = {m["metadata"]["name"]: m for m in manifests}
        self.sleep = sleep

    def arguments(self, name: str) -> dict[str, str]:
        """The parameters workflow `name` declares, with their default values."""
        if name not in self.manifests:
            raise WorkflowFailed(f"no workflow {name!r}; known: {', '.join(sorted(self.manifests))}")
        spec = self._spec(self.manifests[name])
        return {p["name"]: p.get("value", "") for p in spec.get("arguments", {}).get("parameters", [])}

    def run(self, name: str, parameters: Mapping[str, str] | None = None) -> str:
        """Run workflow `name` to completion; returns the entrypoint's result, raises WorkflowFailed."""
        arguments = self.arguments(name)
        spec = self._spec(self.manifests[name])
        unknown = set(parameters or {}) - set(arguments)
        if unknown:
            raise WorkflowFailed(f"{name} has no parameter {', '.join(sorted(unknown))}")
        arguments |= dict(parameters or {})
        workflow_scope = {"workflow.name": f"{name}-local-{uuid.uuid4().hex[:5]}"} | {
            f"workflow.parameters.{k}": v for k, v in arguments.items()
        }
        # Argo hands the workflow's arguments to the entrypoint template's inputs, by name.
        return self._run_template(name, spec["entrypoint"], arguments, workflow_scope)

    @staticmethod
    def _spec(manifest: Manifest) -> dict[str, Any]:
        spec = manifest["spec"]
        return spec["workflowSpec"] if manifest.get("kind") == "CronWorkflow" else spec

    def _template(self, manifest_name: str, template_name: str) -> dict[str, Any]:
        if manifest_name not in self.manifests:
            raise WorkflowFailed(f"no WorkflowTemplate {manifest_name!r}")
        for template in self._spec(self.manifests[manifest_name])["templates"]:
            if template["name"] == template_name:
                return template
        raise WorkflowFailed(f"no template {template_name!r} in {manifest_name}")

    def _run_template(
        self,
        manifest_name: str,
        template_name: str,
        arguments: Mapping[str, str],
        workflow: Mapping[str, str],
    ) -> str:
        template = self._template(manifest_name, template_name)
        inputs: dict[str, str] = {}
        for declared in template.get("inputs", {}).get("parameters", []):
            name = declared["name"]
            if name in arguments:
                inputs[name] = arguments[name]
            elif "default" in declared:
                inputs[name] = declared["default"]
            else:
                raise WorkflowFailed(f"template {template_name}: input {name!r} has no value")
        scope = dict(workflow) | {f"inputs.parameters.{k}": v for k, v in inputs.items()}
        if "dag" in template:
            return self._run_dag(manifest_name, template, scope, workflow)
        if "script" in template:
            return self._run_script(template, inputs)
        raise WorkflowFailed(
            f"template {template_name}: only dag and Hera runner script templates run locally"
        )

    def _run_script(self, template: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
        args = template["script"].get("args", [])
        if args[:2] != ["-m", "hera.workflows.runner"] or "-e" not in args:
            raise WorkflowFailed(f"template {template['name']}: not a Hera runner script")
        entrypoint = args[args.index("-e") + 1]
        limit, delay, factor = _retries(template)
        for attempt in range(limit + 1):
            try:
                result = hera_runner(entrypoint, [{"name": k, "value": v} for k, v in inputs.items()])
                return "" if result is None else str(serialize(result))
            except Exception as exc:
                if attempt == limit:
                    raise WorkflowFailed(f"{template['name']}: {type(exc).__name__}: {exc}") from exc
                log.warning("%s failed (%s), retry %d of %d", template["name"], exc, attempt + 1, limit)
                self.sleep(delay * factor**attempt)
        raise AssertionError("unreachable")

    def _run_dag(
        self,
        manifest_name: str,
        template: Mapping[str, Any],
        scope: dict[str, str],
        workflow: Mapping[str, str],
    ) -> str:
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
                    finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                    failed = [f for f in finished if f.exception()]
                    if failed:
                        for future in futures:
                            future.cancel()
                        raise WorkflowFailed(f"task {name} failed: {failed[0].exception()}")
                    results = [f.result() for f in futures]
                    scope[f"tasks.{name}.outputs.result"] = _aggregate(results) if looped else results[0]
                    log.info(
                        "task %s succeeded (%d node%s)", name, len(results), "" if len(results) == 1 else "s"
                    )
                    done.append(name)
        return scope.get(f"tasks.{done[-1]}.outputs.result", "") if done else ""

    def _launch(
        self,
        pool: ThreadPoolExecutor,
        manifest_name: str,
        task: Mapping[str, Any],
        scope: Mapping[str, str],
        workflow: Mapping[str, str],
    ) -> tuple[bool, list[Future[str]]]:
        if "when" in task:
            raise WorkflowFailed(f"task {task['name']}: `when` is not supported locally")
        if "withParam" in task:
            items: list[Any] | None = json.loads(substitute(task["withParam"], scope))
        else:
            items = task.get("withItems")
        if "templateRef" in task:
            target, template_name = task["templateRef"]["name"], task["templateRef"]["template"]
        else:
            target, template_name = manifest_name, task["template"]

        def run_one(item_scope: Mapping[str, str]) -> str:
            local = dict(scope) | dict(item_scope)
            arguments = {
                p["name"]: substitute(str(p.get("value", "")), local)
                for p in task.get("arguments", {}).get("parameters", [])
            }
            return self._run_template(target, template_name, arguments, workflow)

        if items is None:
            return False, [pool.submit(run_one, {})]
        return True, [pool.submit(run_one, _item_scope(item)) for item in items]
