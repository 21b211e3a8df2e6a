"""`make loadtest`: Locust at a rate that saturates the machine, against predict and validate-label.

Both functions are started here as `make up` starts them (functions-framework, one worker), on a
throw-away home: predict serves an EfficientNet-Lite0 model (the production network, its head fitted on a
few photos), validate-label an embedded catalog and store. A run never touches the stack `make up` keeps
(no load-test photos in its review queue), and the processes it measures are its own.

It fails when a request failed (a 429 or 503 with Retry-After is back-pressure, counted apart; see the
locustfile) or when a function's memory (the resident set of its processes) grew more than --max-growth
from the end of the warm-up to the end of the run. It prints the figures: requests per second, median and
95th percentile per request, failures, memory at both ends.

    python -m tests.load.run [--users 24] [--time 60] [--warmup 15]
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tests.support import ROOT, publish_model, train_tiny_model
from workflows.local.processes import free_port, start_function, stop, wait_healthy

LOCUSTFILE = ROOT / "tests" / "load" / "locustfile.py"
MiB = 1024 * 1024


def resident(pid: int) -> int:
    """Bytes resident in memory of a function: gunicorn's arbiter `pid` and its worker."""
    root = psutil.Process(pid)
    return sum(process.memory_info().rss for process in [root, *root.children(recursive=True)])


def cpu_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the machine since it started, from /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


class Sampler(threading.Thread):
    """Samples each function's resident memory every second."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.samples.append((time.monotonic(), {name: resident(pid) for name, pid in self.pids.items()}))

    def at(self, moment: float) -> dict[str, int]:
        """The first sample taken at or after `moment`."""
        return next(sample for taken, sample in self.samples if taken >= moment)


def figures(stats_csv: Path) -> list[dict[str, str]]:
    with stats_csv.open() as handle:
        return list(csv.DictReader(handle))


def report(rows: list[dict[str, str]], seconds: float) -> None:
    print(f"\n{'request':58} {'count':>7} {'fail':>5} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for row in rows:
        name = f"{row['Type']} {row['Name']}".strip() if row["Name"] != "Aggregated" else "all"
        print(
            f"{name:58} {row['Request Count']:>7} {row['Failure Count']:>5} "
            f"{float(row['Requests/s']):>7.1f} {row['50%']:>7} {row['95%']:>7}"
        )
    print(f"over {seconds:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--time", type=int, default=60, help="seconds")
    parser.add_argument("--warmup", type=int, default=15, help="seconds before the first memory sample")
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed growth of resident memory")
    args = parser.parse_args()
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="dandelion-load-") as folder:
        home = Path(folder)
        store_url = (home / "objects").as_uri()
        print("fitting a head on the pretrained backbone for predict to serve ...", flush=True)
        publish_model(store_url, "1", train_tiny_model(0, backbone="efficientnet-lite0"))
        env = dict(
            os.environ,
            DANDELION_HOME=str(home),
            DANDELION_STORE_URL=store_url,
            DANDELION_ADMIN_TOKEN=token,
            DANDELION_RETRAIN_MIN_NEW_LABELS="1000000",  # no retraining: the webhook is nobody
            DANDELION_RETRAIN_WEBHOOK="http://127.0.0.1:9/retrain",
        )
        ports = {"predict": free_port(), "validate-label": free_port()}
        processes = {
            part: start_function(part, port, env, home / f"{part}.log") for part, port in ports.items()
        }
        urls = {part: f"http://127.0.0.1:{port}" for part, port in ports.items()}
        try:
            for part, process in processes.items():
                wait_healthy(f"{urls[part]}/health", process, timeout=120)
            sampler = Sampler({part: process.pid for part, process in processes.items()})
            sampler.start()
            started = time.monotonic()
            before = cpu_ticks()  # from here: the machine's busy share over the run
            command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
            command += [
                "--host",
                urls["predict"],
                "--users",
                str(args.users),
                "--spawn-rate",
                str(args.users),
            ]
            command += ["--run-time", f"{args.time}s", "--csv", str(home / "load"), "--only-summary"]
            locust_env = dict(env, DANDELION_LABELS_URL=urls["validate-label"])
            print(f"Locust: {args.users} users for {args.time} s against {urls}", flush=True)
            code = subprocess.run(command, env=locust_env, check=False).returncode
            ended = time.monotonic()
            after = cpu_ticks()
            busy = 100 * (after[0] - before[0]) / (after[1] - before[1])
            time.sleep(1.5)  # one more sample, taken after the last request
            sampler.done.set()
            sampler.join()
        finally:
            for process in processes.values():
                stop(process)
        report(figures(home / "load_stats.csv"), ended - started)
        print(f"the machine's {os.cpu_count()} CPUs were {busy:.0f}% busy over the run")
        first, last = sampler.at(started + args.warmup), sampler.at(ended)
        grew = False
        for part in processes:
            growth = (last[part] - first[part]) / first[part]
            grew |= growth > args.max_growth
            every_10s = [
                f"{sample[part] / MiB:.0f}" for taken, sample in sampler.samples[::10] if taken <= ended
            ]
            print(
                f"{part}: resident {first[part] / MiB:.0f} MiB after {args.warmup} s, "
                f"{last[part] / MiB:.0f} MiB at the end ({growth:+.1%}; at most {args.max_growth:+.0%}); "
                f"every 10 s: {' '.join(every_10s)} MiB"
            )
    if code != 0:
        print("FAILED: some requests failed (see above)")
    if grew:
        print("FAILED: memory grew under a steady load")
    return 1 if code or grew else 0


if __name__ == "__main__":
    sys.exit(main())
