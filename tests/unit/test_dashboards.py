"""The Grafana dashboards: the committed JSON is what the Python renders, and every panel asks Prometheus
for series that exist (the names the functions and the workflows export, or a recorded series).

Regenerate the JSON on purpose with `make render` (`dandelion render`).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from observability.grafana import provision
from observability.grafana.dashboards import DASHBOARDS, DATASOURCE_UID, expressions, render
from tests.support import ROOT
from workflows.local.monitoring import CONFIGS

COMMITTED = ROOT / "observability" / "grafana" / "dashboards"
PROVISIONING = ROOT / "observability" / "grafana" / "provisioning"
RULES = CONFIGS / "rules.yml"

HISTOGRAMS = {
    "dandelion_http_request_duration_seconds",
    "dandelion_predict_stage_duration_seconds",
    "dandelion_prediction_confidence",
    "dandelion_model_load_duration_seconds",
    "argo_workflows_dandelion_workflow_duration_seconds",
}
EXPORTED = {
    "dandelion_http_requests_total",
    "dandelion_predictions_total",
    "dandelion_cold_starts_total",
    "dandelion_model_info",
    "dandelion_model_ready",
    "dandelion_model_test_metric",
    "dandelion_model_expected_class_ratio",
    "dandelion_ingest_total",
    "dandelion_submissions_total",
    "dandelion_label_decisions_total",
    "dandelion_reviewed_predictions_total",
    "dandelion_corrected_predictions_total",
    "dandelion_pending_submissions",
    "up",
    "argo_workflows_dandelion_workflow_runs_total",
    "argo_workflows_dandelion_workflow_succeeded",
    "argo_workflows_dandelion_extraction_images",
    "argo_workflows_dandelion_training_test_accuracy",
    "argo_workflows_dandelion_promotions_total",
} | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
RECORDED = {
    "function_route:dandelion_http_requests:rate5m",
    "function:dandelion_http_requests:rate5m",
    "function:dandelion_http_errors:ratio_rate5m",
    "function:dandelion_http_client_errors:ratio_rate5m",
    "function_route:dandelion_http_request_duration_seconds:quantile5m",
    "model_version:dandelion_predictions:rate5m",
    "model_version_class:dandelion_predictions:ratio1h",
    "model_version:dandelion_reviewed_predictions:increase1d",
    "model_version:dandelion_corrected_predictions:ratio1d",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
UIDS = {
    "serving": "dandelion-serving",
    "model": "dandelion-model",
    "pipelines": "dandelion-pipelines",
    "labels": "dandelion-labels",
}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: identifiers left once strings, label matchers, range
    windows and label lists (`by (...)`, `on (...)`, ...) are gone, other than function calls and keywords."""
    expr = re.sub(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""", "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:]|\s*\()", expr)
    return {name for name in names if name.lower() not in PROMQL_KEYWORDS}


def rendered() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in render().items()}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


ALL_EXPRESSIONS = sorted({expr for dashboard in rendered().values() for expr in expressions(dashboard)})


@pytest.mark.parametrize("name", sorted(render()))
def test_committed_dashboard_matches_the_python(name: str) -> None:
    path = COMMITTED / name
    assert path.is_file(), f"observability/grafana/dashboards/{name} is missing: run `make render`"
    assert path.read_text() == render()[name], (
        f"observability/grafana/dashboards/{name} drifted: run `make render`"
    )


def test_no_committed_dashboard_is_left_over() -> None:
    assert sorted(path.name for path in COMMITTED.glob("*.json")) == sorted(render())


def test_rendering_is_deterministic() -> None:
    assert render() == render()


def test_uids_and_tags_are_stable() -> None:
    assert list(DASHBOARDS) == list(UIDS)
    for name, dashboard in rendered().items():
        assert dashboard["uid"] == UIDS[name.removesuffix(".json")]
        assert dashboard["tags"] == ["dandelion"]
        assert "id" not in dashboard  # Grafana's own database id: an upload by uid must not carry one


def test_every_panel_queries_the_dandelion_data_source_with_a_non_empty_expression() -> None:
    for name, dashboard in rendered().items():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in panels(dashboard):
            where = f"{name}: {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, where
            assert panel["targets"], where
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)) and all(ref_ids), where
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], where
                assert target["expr"].strip(), where


def test_dashboards_have_no_template_variables() -> None:
    """Prometheus evaluates every query as it is: no `$datasource`, `$__rate_interval` or `${...}`."""
    for dashboard in rendered().values():
        assert not dashboard["templating"].get("list")
    for expr in ALL_EXPRESSIONS:
        assert "$" not in expr, expr


def test_the_metric_name_parser() -> None:
    expr = (
        'sum by (le) (rate(a_bucket{x="y{z}"}[5m])) / ignoring (q) group_left '
        "b:c:d{q='0.5'} or on (m) vector(0) and histogram_quantile(0.9, e) offset 1h > bool 0.5"
    )
    assert metric_names(expr) == {"a_bucket", "b:c:d", "e"}


@pytest.mark.parametrize("expr", ALL_EXPRESSIONS)
def test_every_expression_reads_only_known_series(expr: str) -> None:
    names = metric_names(expr)
    assert names, f"no series in {expr!r}"
    assert names <= EXPORTED | RECORDED, f"unknown series {sorted(names - EXPORTED - RECORDED)} in {expr!r}"


def test_every_recorded_series_the_dashboards_read_is_recorded_by_the_rules() -> None:
    rules = yaml.safe_load(RULES.read_text())
    recorded = {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}
    used = {name for expr in ALL_EXPRESSIONS for name in metric_names(expr) if ":" in name}
    assert used <= recorded


def test_every_expression_parses_as_promql(tmp_path: Path) -> None:
    """promtool checks a rule file's expressions with Prometheus' own parser: one recording rule each."""
    rules = [{"record": f"dashboard:expression:{n}", "expr": expr} for n, expr in enumerate(ALL_EXPRESSIONS)]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_expressions_reads_panels_inside_collapsed_rows() -> None:
    dashboard = {
        "panels": [
            {"type": "timeseries", "targets": [{"expr": "up", "refId": "A"}]},
            {
                "type": "row",
                "collapsed": True,
                "panels": [{"type": "stat", "targets": [{"expr": "b", "refId": "A"}]}],
            },
        ]
    }
    assert expressions(dashboard) == ["up", "b"]


def test_file_provisioning_names_the_data_source_and_folder_the_script_uses() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "dandelion.yaml").read_text())
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "dandelion.yaml").read_text())
    assert datasources["apiVersion"] == providers["apiVersion"] == 1
    (datasource,) = datasources["datasources"]
    assert datasource.pop("editable") is False
    assert datasource == provision.datasource("${PROMETHEUS_URL}")
    (provider,) = providers["providers"]
    assert (provider["type"], provider["folderUid"], provider["folder"]) == (
        "file",
        provision.FOLDER_UID,
        provision.FOLDER_TITLE,
    )
