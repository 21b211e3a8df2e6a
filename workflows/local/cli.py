"""`dandelion`: the local face of the platform. Every command reads the DESIGN.md environment variables;
each is a few lines over the library (`workflows.local.stack`, `workflows.manifests`, the catalog)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from functions.lib.config import DEFAULT_PORTS, Settings
from functions.lib.errors import DandelionError
from workflows import defaults
from workflows.local.processes import SERVED, disable_mlflow_telemetry

PLATFORM_DIR = Path("platform")
DASHBOARDS_DIR = Path("observability/grafana/dashboards")


def _settings() -> Settings:
    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings


def cmd_seed(_args: argparse.Namespace) -> int:
    from functions.lib import catalog

    engine = catalog.open_catalog(_settings().db_url)
    added = catalog.seed(engine)
    print(f"seeded {added} new rows; plants_data holds {catalog.count(engine)}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """What the cluster's catalog-migrate Job runs as the schema's owner (`--grant`: then the roles'
    privileges, for the tables a migration added); a process that may migrate does the same first."""
    from functions.lib import catalog, privileges, schema

    engine = catalog.open_catalog(_settings().db_url)
    with engine.connect() as connection:
        print(f"catalog schema at revision {schema.current(connection)} (head {schema.head()})")
    if args.grant:
        users = ", ".join(privileges.default_users().values())
        print(f"granted {len(privileges.grant(engine))} privileges to {users}")
    return 0


def _default_mlflow() -> None:
    """DESIGN.md: without MLFLOW_TRACKING_URI, the MLflow server that `dandelion up` starts."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{DEFAULT_PORTS['mlflow']}")


def cmd_promote(args: argparse.Namespace) -> int:
    """Make VERSION the champion: the registry's alias, then the pointer, then the roll-out."""
    from functions.lib.store import open_store
    from workflows.lib import promotion, rollout

    _default_mlflow()
    pointer = promotion.make_champion(open_store(_settings().store_url), args.version)
    print(f"champion: {json.dumps(pointer)}")
    print(rollout.roll_out_predict(args.version))
    return 0


def cmd_audit_labels(args: argparse.Namespace) -> int:
    """The label audit alone, on a fresh snapshot, in an MLflow run of its own; suspects join the queue."""
    from dataclasses import asdict

    from functions.lib import catalog
    from functions.lib.store import open_store
    from workflows.lib import audit, dataset, tracking

    _default_mlflow()
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # stdout is the summary, JSON alone
    settings = _settings()
    engine, store = catalog.open_catalog(settings.db_url), open_store(settings.store_url)
    version, _examples, _new = dataset.snapshot(engine, store)
    with tracking.audit_run(version) as run_id:
        result, queued = audit.review(engine, store, version, run_id, args.seed)
    summary = {"dataset_version": version, "mlflow_run_id": run_id, "examples": result.examples}
    summary |= {"queued": queued, "suspects": [asdict(suspect) for suspect in result.suspects]}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from workflows.local.runner import WorkflowFailed
    from workflows.local.stack import run_workflow

    parameters = {}
    for item in args.parameter:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-p expects name=value, got {item!r}")
        parameters[name] = value
    _default_mlflow()
    try:
        print(json.dumps(run_workflow(args.workflow, parameters, _settings()), indent=2))
    except WorkflowFailed as exc:
        print(f"workflow {args.workflow} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from observability.grafana import dashboards
    from workflows.manifests import render

    for path in [*render(Path(args.directory)), *dashboards.write(Path(args.dashboards))]:
        print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from workflows.local.processes import function_command, function_environment

    port = int(os.environ.get("PORT") or DEFAULT_PORTS[args.part])
    command = function_command(args.part, os.environ.get("HOST", "127.0.0.1"), port)
    os.execve(command[0], command, function_environment(os.environ))  # noqa: S606  # our own interpreter
    return 0  # not reached: the process is now the function


def cmd_status(args: argparse.Namespace) -> int:
    from workflows.local import status

    report = status.collect(_settings())
    print(json.dumps(report, indent=2, default=str) if args.json else status.render(report))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM; a failure to start is one line naming what to read, not a traceback."""
    from workflows.local.runner import WorkflowFailed
    from workflows.local.stack import local_stack

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    try:
        with local_stack(Path(args.serve_mirror) if args.serve_mirror else None):
            print("serving; Ctrl-C stops everything")
            while True:  # the supervisor restarts what crashes; a signal is handled between two naps
                time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopped")
        return 0
    except (DandelionError, WorkflowFailed, RuntimeError, TimeoutError, OSError) as exc:
        print(f"dandelion up failed: {exc} (logs: {_settings().home / 'logs'}/)", file=sys.stderr)
        return 1


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

    status = commands.add_parser(
        "status", help="the catalog, the champion and last runs, labels waiting, which services are up"
    )
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.set_defaults(func=cmd_status)

    serve = commands.add_parser("serve", help="run one part in the foreground on $PORT (or its default port)")
    serve.add_argument("part", choices=sorted(SERVED))
    serve.set_defaults(func=cmd_serve)

    seed = commands.add_parser("seed", help="insert the 400 canonical rows into plants_data (idempotent)")
    seed.set_defaults(func=cmd_seed)

    migrate = commands.add_parser("migrate", help="bring the catalog's schema to the newest migration")
    migrate.add_argument(
        "--grant",
        action="store_true",
        help="then give each role's database user its privileges (MySQL/MariaDB, as the schema's owner)",
    )
    migrate.set_defaults(func=cmd_migrate)

    run = commands.add_parser("run", help="run a workflow locally from its Hera definition")
    run.add_argument("workflow", help="extract-images, train-model or weekly-retrain")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    run.set_defaults(func=cmd_run)

    audit = commands.add_parser(
        "audit-labels", help="find the images whose label looks wrong and queue them for an admin"
    )
    audit.add_argument("--seed", type=int, default=defaults.SEED)
    audit.set_defaults(func=cmd_audit_labels)

    promote = commands.add_parser(
        "promote",
        help="make a registered version the champion (the alias, the pointer, predict): a roll-back",
    )
    promote.add_argument("version", help="the registered version of dandelion-grass")
    promote.set_defaults(func=cmd_promote)

    render = commands.add_parser(
        "render",
        help="write the Argo YAML, the MySQL init SQL and grants into platform/, the Grafana dashboards' "
        f"JSON into {DASHBOARDS_DIR}/",
    )
    render.add_argument("directory", nargs="?", default=str(PLATFORM_DIR))
    render.add_argument(
        "--dashboards", metavar="DIR", default=str(DASHBOARDS_DIR), help="where the dashboards' JSON goes"
    )
    render.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Our progress at INFO; the libraries' (alembic's plugin list, MLflow's) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("dandelion").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    disable_mlflow_telemetry()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
