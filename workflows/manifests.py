"""Every Argo object Dandelion deploys from Python (one Hera module each), and how `dandelion render`
writes them, with the MySQL init script, into platform/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hera.workflows import CronWorkflow, WorkflowTemplate

from functions.lib.catalog import mysql_init_sql
from workflows import extract_images, retrain_events, train_model, weekly_retrain

# Argo object name -> its Hera builder; platform/argo/<name>.yaml is rendered from it.
WORKFLOWS: dict[str, Callable[[], WorkflowTemplate | CronWorkflow]] = {
    "extract-images": extract_images.build,
    "train-model": train_model.build,
    "weekly-retrain": weekly_retrain.build,
}


def manifests() -> list[dict[str, Any]]:
    return [build().to_dict() for build in WORKFLOWS.values()]


def rendered_files() -> dict[str, str]:
    """Relative path under platform/ -> content: the Argo YAML and the MySQL init script."""
    files = {f"argo/{name}.yaml": build().to_yaml() for name, build in WORKFLOWS.items()}
    for name, manifest in (
        ("eventsource", retrain_events.event_source()),
        ("sensor", retrain_events.sensor()),
    ):
        files[f"argo-events/{name}.yaml"] = yaml.safe_dump(manifest, sort_keys=False)
    files["mysql/init.sql"] = mysql_init_sql()
    return files


def render(platform_dir: Path) -> list[Path]:
    written = []
    for relative, content in rendered_files().items():
        path = platform_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
