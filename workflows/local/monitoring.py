"""Prometheus and Alertmanager for the local stack, from Debian's `prometheus` and
`prometheus-alertmanager` when they are installed: the committed configs of `observability/prometheus/`,
with the ports this run uses written in, so that what runs locally is what the tests check."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import observability
from workflows.local.processes import start
from workflows.retrain_events import ENDPOINTS

CONFIGS = Path(observability.__file__).parent / "prometheus"
PROGRAMS = {"prometheus": "prometheus", "alertmanager": "prometheus-alertmanager"}
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"
# Each scrape job of prometheus.yml, by the part of the stack whose port it scrapes.
JOB_PARTS = {
    "predict": "predict",
    "ingest-one-url": "ingest-one-url",
    "validate-label": "validate-label",
    "workflows": "workflow-metrics",
    "prometheus": "prometheus",
    "alertmanager": "alertmanager",
}


def missing() -> list[str]:
    """The programs that are not installed."""
    return [program for program in PROGRAMS.values() if shutil.which(program) is None]


def prometheus_config(ports: Mapping[str, int]) -> dict[str, Any]:
    config = yaml.safe_load((CONFIGS / "prometheus.yml").read_text())
    config["rule_files"] = [str(CONFIGS / name) for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[JOB_PARTS[job['job_name']]]}"]}]
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}
    ]
    return config


def alertmanager_config(webhook_port: int) -> dict[str, Any]:
    config = yaml.safe_load((CONFIGS / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{webhook_port}{ENDPOINTS['alertmanager']}"
    return config


def _write(directory: Path, name: str, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(home: Path, ports: Mapping[str, int], log: Path) -> subprocess.Popen[bytes]:
    directory = home / "prometheus"
    config = _write(directory, "prometheus.yml", prometheus_config(ports))
    command = [
        PROGRAMS["prometheus"],
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
        "--log.level=warn",
    ]
    return start(command, log=log)


def start_alertmanager(home: Path, ports: Mapping[str, int], log: Path) -> subprocess.Popen[bytes]:
    directory = home / "alertmanager"
    config = _write(directory, "alertmanager.yml", alertmanager_config(ports["retrain-webhook"]))
    command = [
        PROGRAMS["alertmanager"],
        f"--config.file={config}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
        "--cluster.listen-address=",  # one Alertmanager, no gossip port
        "--log.level=warn",
    ]
    return start(command, log=log)
