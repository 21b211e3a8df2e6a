"""Benchmark `stack`: `dandelion up` as `make up` runs it, on a fresh home, then again on the same home.

Method: the real command in its own process (with the loopback mirror of the dataset, the default ports,
which must be free), its terminal read line by line. Measured: the wall time from start to its
"serving" line; once serving and settled, the memory of every process it started (the sum of resident
sets, which counts shared pages once per process, and the sum of proportional sets, which shares them
out: what the stack costs the machine); a prediction through predict; then the time from Ctrl-C
(SIGINT) to its exit and the processes still alive after it. Targets: under 1.5 GB (1430 MiB) resident
once serving, counted as proportional sets, the second start serving within 15 s, nothing left running.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from functions.lib.config import DEFAULT_PORTS
from tests.bench.report import save
from tests.support import DATASET

SERVING = "serving; Ctrl-C stops everything"
SETTLE_SECONDS = 10  # after the serving line: first requests, Prometheus's first scrapes
MEMORY_TARGET_MIB = 1430  # 1.5 GB
SECOND_START_TARGET_S = 15


def memory(root: psutil.Process) -> dict[str, Any]:
    """The sums of resident and proportional set sizes over `root` and every process it started, in MB."""
    processes = [root, *root.children(recursive=True)]
    rss = pss = 0
    for process in processes:
        try:
            full = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss, pss = rss + full.rss, pss + full.pss
    return {"processes": len(processes), "rss_mb": round(rss / 2**20), "pss_mb": round(pss / 2**20)}


def run_up(home: Path, mirror: Path) -> dict[str, Any]:
    """One `dandelion up`: until it serves, measured, then stopped with SIGINT."""
    env = dict(os.environ, DANDELION_HOME=str(home))
    started = time.monotonic()
    up = subprocess.Popen(
        [sys.executable, "-m", "workflows.local.cli", "up", "--serve-mirror", str(mirror)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell's background job ignores SIGINT, and a child would inherit that: Ctrl-C's default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    serving = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in up.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            if line.startswith(SERVING):
                serving.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        while not serving.wait(1):
            if up.poll() is not None:
                raise RuntimeError("dandelion up exited:\n" + "\n".join(lines[-20:]))
        to_serving = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        photo = (DATASET / "dandelion" / "00000001.jpg").read_bytes()
        answer = requests.post(
            f"http://127.0.0.1:{DEFAULT_PORTS['predict']}/predict",
            files={"file": ("d.jpg", photo)},
            timeout=30,
        )
        answer.raise_for_status()
        root = psutil.Process(up.pid)
        started_processes = root.children(recursive=True)
        measured = memory(root)
    finally:
        stopping = time.monotonic()
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    stop_s = time.monotonic() - stopping
    time.sleep(1)
    left = [p.pid for p in started_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return {
        "to_serving_s": round(to_serving, 1),
        "memory_once_serving": measured,
        "stop_s": round(stop_s, 1),
        "exit_code": up.returncode,
        "processes_left": left,
        "predicted": answer.json()["predicted_class"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=DATASET, help="the greenr dataset folder to serve")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        first = run_up(Path(home), args.mirror.resolve())
        second = run_up(Path(home), args.mirror.resolve())
    runs = (first, second)
    result = {
        "benchmark": "stack",
        "first_up": first,
        "second_up": second,
        "targets": {
            "pss_mb_once_serving": f"< {MEMORY_TARGET_MIB}",
            "second_up_to_serving_s": f"< {SECOND_START_TARGET_S}",
            "processes_left": 0,
        },
        "targets_met": all(run["memory_once_serving"]["pss_mb"] < MEMORY_TARGET_MIB for run in runs)
        and second["to_serving_s"] < SECOND_START_TARGET_S
        and not any(run["processes_left"] for run in runs)
        and all(run["exit_code"] == 0 for run in runs),
    }
    save(result)
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
