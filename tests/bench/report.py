"""`make bench`'s report: each benchmark saves its result here, and `python -m tests.bench.report` joins
them with the machine they ran on into one JSON file and prints the table docs/benchmarks.md quotes.

The report is written to `test-output/bench/` (not committed): the figures belong to the machine and
the commit that measured them, both recorded in it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support import ROOT
from workflows.local.images import code_version

OUTPUT = ROOT / "test-output" / "bench"
PARTS = ("ingest", "train", "predict", "stack")


def save(result: dict[str, Any]) -> None:
    """Print a benchmark's result and keep it for the report."""
    print(json.dumps(result, indent=2))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"{result['benchmark']}.json").write_text(json.dumps(result, indent=2) + "\n")


def machine() -> dict[str, Any]:
    """What the figures depend on: the CPU (model and instruction sets that matter to the model), its
    cores, memory, Python, and the commit measured."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    flags = set(fields.get("flags\t\t", "").split())
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    commit = code_version() or "unknown"
    return {
        "cpu": fields.get("model name\t", platform.processor()).strip(),
        "cores": os.cpu_count(),
        "instruction_sets": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "memory_gib": round(int(meminfo[1]) / 1024**2, 1) if meminfo else None,
        "python": platform.python_version(),
        "commit": commit,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The headline figures, as (figure, value) rows."""
    table = []
    if ingest := results.get("ingest"):
        table += [
            ("ingest 400 images, first run", f"{ingest['first_run_s']} s"),
            ("ingest, second run (nothing to do)", f"{ingest['second_run_s']} s"),
        ]
    if train := results.get("train"):
        table += [
            (f"train-model ({train['backbone']}), wall time", f"{train['wall_time_s']} s"),
            (
                "test accuracy / balanced",
                f"{train['test']['accuracy']} / {train['test']['balanced_accuracy']}",
            ),
            ("test ECE / log loss", f"{train['test']['ece']} / {train['test']['log_loss']}"),
            ("retrain after 10 new labels", f"{train['retrain_after_10_new_labels']['wall_time_s']} s"),
        ]
    if predict := results.get("predict"):
        for backbone, figures in predict["backbones"].items():
            table += [
                (f"predict ({backbone}) cold start, median", f"{figures['cold_start_s']['median']} s"),
                (f"predict ({backbone}) p50 at 1 client", f"{figures['p50_ms_1_client']} ms"),
                (
                    f"predict ({backbone}) decode + preprocess + ONNX in-process, 1 thread",
                    f"{figures['in_process_ms_1_thread']} ms",
                ),
                (f"predict ({backbone}) around the model at 1 client", f"{figures['p50_overhead_ms']} ms"),
                (
                    f"predict ({backbone}) 8 clients, share of the in-process rate",
                    str(figures["throughput_8_clients_share_of_limit"]),
                ),
            ]
    if stack := results.get("stack"):
        for run, name in (
            ("first_up", "first `make up` (extract, train)"),
            ("second_up", "second `make up`"),
        ):
            figures = stack[run]
            memory = figures["memory_once_serving"]
            table += [
                (f"{name} to serving", f"{figures['to_serving_s']} s"),
                (
                    f"{name}, memory once serving: resident (distinct pages) / proportional / RSS summed",
                    f"{memory.get('resident_mb') or 'hidden'} / {memory['pss_mb']}"
                    f" / {memory.get('rss_sum_mb')} MiB"
                    f" ({memory['processes']} processes)",
                ),
                (
                    f"{name}, Ctrl-C to exit, processes left",
                    f"{figures['stop_s']} s, {len(figures['processes_left'])}",
                ),
            ]
    return table


def main() -> int:
    saved = {part: OUTPUT / f"{part}.json" for part in PARTS}
    results = {part: json.loads(path.read_text()) for part, path in saved.items() if path.exists()}
    report = {
        "machine": machine(),
        "results": results,
        "targets_met": {part: result["targets_met"] for part, result in results.items()},
    }
    (OUTPUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, commit {m['commit']}, {m['measured_at']}")
    print("| figure | value |\n|---|---|")
    for figure, value in rows(results):
        print(f"| {figure} | {value} |")
    print(f"report: {OUTPUT / 'report.json'}")
    missing = [part for part in PARTS if part not in results]
    if missing:
        print(f"not measured: {', '.join(missing)}", file=sys.stderr)
    return 0 if results and not missing and all(report["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
