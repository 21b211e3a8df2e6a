"""Every Argo object Dandelion deploys from Python, and how they are written into platform/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hera.workflows import CronWorkflow, WorkflowTemplate

from functions.catalog import mysql_init_sql
from workflows.extraction import extract_images
from workflows.retraining import train_model_template, weekly_retrain

WORKFLOWS: dict[str, Callable[[], WorkflowTemplate | CronWorkflow]] = {
    "extract-images": extract_images,
    "train-model": train_model_template,
    "weekly-retrain": weekly_retrain,
}


def manifests() -> list[dict[str, Any]]:
    return [build().to_dict() for build in WORKFLOWS.values()]


def rendered_files() -> dict[str, str]:
    """Relative path under platform/ -> content: the Argo YAML and the MySQL init script."""
    files = {f"argo/{name}.yaml": build().to_yaml() for name, build in WORKFLOWS.items()}
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
