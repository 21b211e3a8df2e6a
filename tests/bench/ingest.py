"""Benchmark `ingest`: all 400 images through `dandelion run extract-images` from a loopback mirror, twice.

Method: a fresh DANDELION_HOME (embedded SQLite catalog, file:// store), the mirror served over loopback
HTTP, ingest-one-url as a real functions-framework process; the 400 canonical rows seeded; then the wall
time of the whole `dandelion run extract-images` command (process start included), first and second run.
Targets on a 2-core machine: first run under 20 s, second under 3 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from functions.lib import catalog
from tests.bench.report import save
from tests.support import mirrored_env
from workflows.local.processes import free_port, serve_directory, start_function, stop, wait_healthy


def timed_run(env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "workflows.local.cli", "run", "extract-images"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, json.loads(out.stdout)["summary"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, required=True, help="the greenr dataset folder to serve")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        mirror = serve_directory(args.mirror)
        port = free_port()
        env = mirrored_env(Path(home), mirror.server_port, port)
        function = start_function("ingest-one-url", port, env)
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", function)
            engine = catalog.open_catalog(f"sqlite:///{home}/catalog.db")
            catalog.seed(engine)
            first, summary1 = timed_run(env)
            second, summary2 = timed_run(env)
            counts = catalog.counts_by_status(engine)
        finally:
            stop(function)
            mirror.shutdown()
    result = {
        "benchmark": "ingest",
        "first_run_s": round(first, 2),
        "second_run_s": round(second, 2),
        "first_summary": {k: v for k, v in summary1.items() if k != "failures"},
        "second_summary": {k: v for k, v in summary2.items() if k != "failures"},
        "catalog": counts,
        "targets_met": first < 20 and second < 3 and counts["ingested"] == 400,
    }
    save(result)
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
