"""`dandelion`: the local face of the platform. Every command reads the DESIGN.md environment variables."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from functions.config import DEFAULT_PORTS, Settings
from workflows.localstack import FUNCTION_TARGETS, disable_mlflow_telemetry

PLATFORM_DIR = Path("platform")


def _settings() -> Settings:
    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings


def _local_parameters(settings: Settings) -> dict[str, str]:
    """Workflow parameters whose cluster defaults mean nothing here, mapped to the local services."""
    return {"ingest-url": settings.ingest_url}


def run_workflow(name: str, parameters: dict[str, str], settings: Settings) -> str:
    from workflows.definitions import manifests
    from workflows.runner import LocalRunner

    runner = LocalRunner(manifests())
    declared = runner.arguments(name)
    local = {k: v for k, v in _local_parameters(settings).items() if k in declared}
    return runner.run(name, local | parameters)


def cmd_seed(_args: argparse.Namespace) -> int:
    from functions import catalog

    engine = catalog.open_catalog(_settings().db_url)
    added = catalog.seed(engine)
    print(f"seeded {added} new rows; plants_data holds {catalog.count(engine)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from workflows.runner import WorkflowFailed

    parameters = {}
    for item in args.parameter:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-p expects name=value, got {item!r}")
        parameters[name] = value
    # DESIGN.md: without MLFLOW_TRACKING_URI, the MLflow server that `dandelion up` starts.
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{DEFAULT_PORTS['mlflow']}")
    try:
        print(run_workflow(args.workflow, parameters, _settings()))
    except WorkflowFailed as exc:
        print(f"workflow {args.workflow} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from workflows.definitions import render

    for path in render(Path(args.directory)):
        print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from workflows.localstack import function_command

    port = int(os.environ.get("PORT") or DEFAULT_PORTS[args.part])
    command = function_command(args.part, os.environ.get("HOST", "127.0.0.1"), port)
    os.execv(command[0], command)
    return 0  # not reached: the process is now the function


def cmd_up(args: argparse.Namespace) -> int:
    from functions import catalog
    from functions.model_layout import read_champion
    from functions.store import open_store
    from workflows.localstack import serve_directory, start_function, start_mlflow, wait_healthy

    if args.serve_mirror:
        mirror = serve_directory(Path(args.serve_mirror))
        os.environ["DANDELION_SOURCE_MIRROR"] = (
            f"{catalog.CANONICAL_PREFIX}=http://127.0.0.1:{mirror.server_port}/"
        )
        os.environ["DANDELION_ALLOW_PRIVATE_URLS"] = "1"
        print(f"mirror of {args.serve_mirror} on http://127.0.0.1:{mirror.server_port}/")
    settings = _settings()
    processes = []
    try:
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            port = DEFAULT_PORTS["mlflow"]
            processes.append(start_mlflow(settings.home, settings.store_url, port))
            os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
            wait_healthy(f"http://127.0.0.1:{port}/health", processes[-1], timeout=120)
        started = {part: start_function(part, DEFAULT_PORTS[part]) for part in FUNCTION_TARGETS}
        processes.extend(started.values())
        urls = {part: f"http://127.0.0.1:{DEFAULT_PORTS[part]}" for part in FUNCTION_TARGETS}
        wait_healthy(f"{urls['ingest-one-url']}/health", started["ingest-one-url"])
        engine = catalog.open_catalog(settings.db_url)
        print(f"seeded {catalog.seed(engine)} new catalog rows")
        summary = json.loads(run_workflow("extract-images", {}, settings) or "{}")
        print(f"extract-images: {json.dumps({k: v for k, v in summary.items() if k != 'failures'})}")
        print(f"catalog: {catalog.counts_by_status(engine)}")
        store = open_store(settings.store_url)
        if read_champion(store) is None:
            print("no champion yet: running train-model (a few minutes)")
            print(f"train-model: {run_workflow('train-model', {}, settings)}")
        print(f"champion: {read_champion(store)}")
        print(f"MLflow: {os.environ['MLFLOW_TRACKING_URI']}")
        print(f"ingest-one-url: {urls['ingest-one-url']}/")
        wait_healthy(f"{urls['predict']}/health", started["predict"])  # 503 until it has a model
        print(f"predict: {urls['predict']}/predict  (curl -F file=@image.jpg {urls['predict']}/predict)")
        print(f"catalog: {settings.db_url}  store: {settings.store_url}")
        print("serving; Ctrl-C stops everything")
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        signal.sigwait(stop)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dandelion",
        description="Dandelion on one machine. Configuration comes from DANDELION_* variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the local stack, seed, extract, serve until Ctrl-C")
    up.add_argument(
        "--serve-mirror", metavar="DIR", help="serve DIR as the offline mirror of the source URLs"
    )
    up.set_defaults(func=cmd_up)

    serve = commands.add_parser("serve", help="run one part in the foreground on $PORT (or its default port)")
    serve.add_argument("part", choices=sorted(FUNCTION_TARGETS))
    serve.set_defaults(func=cmd_serve)

    seed = commands.add_parser("seed", help="insert the 400 canonical rows into plants_data (idempotent)")
    seed.set_defaults(func=cmd_seed)

    run = commands.add_parser("run", help="run a workflow locally from its Hera definition")
    run.add_argument("workflow", help="extract-images, train-model or weekly-retrain")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    run.set_defaults(func=cmd_run)

    render = commands.add_parser("render", help="write the Argo YAML and MySQL init SQL into platform/")
    render.add_argument("directory", nargs="?", default=str(PLATFORM_DIR))
    render.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    disable_mlflow_telemetry()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
