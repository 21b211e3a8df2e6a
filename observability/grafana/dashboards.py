"""Dandelion's four Grafana dashboards, built with Grafana's own SDK and rendered to committed JSON.

Why code: a panel's query names a metric the functions or the workflows export, so the dashboards live
beside the code and are checked like it. `dandelion render` writes the JSON into
observability/grafana/dashboards/, Grafana's file provisioning and `observability.grafana.provision` load
it from there, and a unit test fails when the committed JSON and this module drift apart.

Every query is plain PromQL with explicit windows and no Grafana template variables, so Prometheus
itself can evaluate each one (`expressions` lists them for the tests that do); panels read the recorded
series of observability/prometheus/rules.yml where one exists. Every panel names the data source by its
fixed uid, the one both provisioning paths give it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    LineInterpolation,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from workflows.defaults import MIN_ACCURACY

DATASOURCE_UID = "dandelion-prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
TAG = "dandelion"
# Where the rendered JSON is committed; provisioning reads it from here.
DIRECTORY = Path(__file__).parent / "dashboards"

Panel = timeseries.Panel | stat.Panel | bargauge.Panel
P = TypeVar("P", timeseries.Panel, stat.Panel, bargauge.Panel)


def _query(expr: str, legend: str, *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)
    return query.instant() if instant else query


def _with_queries(panel: P, title: str, description: str, queries: list[prometheus.Dataquery]) -> P:
    """Title, description, data source and the queries with refIds A, B, ...: what every panel has."""
    panel = panel.title(title).description(description).datasource(DATASOURCE)
    for index, query in enumerate(queries):
        panel = panel.with_target(query.ref_id(chr(ord("A") + index)))
    return panel


def _graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = timeseries.Panel().unit(unit).fill_opacity(10).span(12).height(8)
    return _with_queries(panel, title, description, list(queries))


def _steps(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    """A graph of values that change only when a run ends: drawn as steps, not slopes."""
    return _graph(title, description, unit, *queries).line_interpolation(LineInterpolation.STEP_AFTER)


def _latest(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> stat.Panel:
    panel = (
        stat.Panel()
        .unit(unit)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(BigValueGraphMode.NONE)
        .span(6)
        .height(8)
    )
    return _with_queries(panel, title, description, list(queries))


def _bars(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .unit(unit)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .display_mode(BarGaugeDisplayMode.BASIC)
        .orientation(VizOrientation.HORIZONTAL)
        .span(12)
        .height(8)
    )
    return _with_queries(panel, title, description, list(queries))


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Colours from a floor up: the first step's value is None (from minus infinity)."""
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def _dashboard(name: str, title: str, description: str, rows: dict[str, list[Panel]]) -> dashboard.Dashboard:
    """A dashboard of titled rows with stable panel ids (row order), linked to its three siblings."""
    builder = (
        dashboard.Dashboard(title)
        .uid(f"dandelion-{name}")
        .description(description)
        .tags([TAG])
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard.DashboardLink("Dandelion")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .keep_time(True)
        )
    )
    ids = itertools.count(1)
    for row_title, panels in rows.items():
        builder = builder.with_row(dashboard.Row(row_title).id(next(ids)))
        for panel in panels:
            builder = builder.with_panel(panel.id(next(ids)))
    return builder


def serving() -> dashboard.Dashboard:
    return _dashboard(
        "serving",
        "Dandelion · serving",
        "The three functions as their users see them: traffic, errors, latency, and predict's instances.",
        {
            "Traffic and errors": [
                _graph(
                    "Requests by function and route",
                    "Requests per second over 5 minutes (recorded series).",
                    "reqps",
                    _query("function_route:dandelion_http_requests:rate5m", "{{function}} {{route}}"),
                ).span(24),
                _graph(
                    "Server errors (5xx) by function",
                    "Share of requests answered with a 5xx over 5 minutes; predict pages above 5%.",
                    "percentunit",
                    _query("function:dandelion_http_errors:ratio_rate5m", "{{function}}"),
                )
                .min(0)
                .thresholds(_thresholds((None, "green"), (0.05, "red"))),
                _graph(
                    "Client errors (4xx) by function",
                    "Share of requests refused as the caller's fault over 5 minutes: bad uploads, missing "
                    "tokens; a rise means a client broke, not the service.",
                    "percentunit",
                    _query("function:dandelion_http_client_errors:ratio_rate5m", "{{function}}"),
                ).min(0),
            ],
            "Latency": [
                _graph(
                    "Latency by function and route (p50, p95, p99)",
                    "Quantiles of request duration over 5 minutes, from the histogram (recorded series); "
                    "predict warns when its p99 stays above 1 s.",
                    "s",
                    *(
                        _query(
                            "function_route:dandelion_http_request_duration_seconds:quantile5m"
                            f'{{quantile="{quantile}"}}',
                            f"p{label} {{{{function}}}} {{{{route}}}}",
                        )
                        for quantile, label in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
                    ),
                ).span(24),
                _graph(
                    "Predict stages (p95)",
                    "Where predict's time goes: preprocessing, the ONNX inference, postprocessing.",
                    "s",
                    _query(
                        "histogram_quantile(0.95, sum by (stage, le) "
                        "(rate(dandelion_predict_stage_duration_seconds_bucket[5m])))",
                        "{{stage}}",
                    ),
                ),
                _graph(
                    "Predictions by model version",
                    "Images classified per second over 5 minutes (recorded series): shows a roll-out "
                    "moving traffic from one version to the next.",
                    "ops",
                    _query("model_version:dandelion_predictions:rate5m", "model {{model_version}}"),
                ),
            ],
            "Instances": [
                _graph(
                    "Targets up by job",
                    "Scraped instances answering, per job: scale-to-zero shows as 0 while idle.",
                    "none",
                    _query("sum by (job) (up)", "{{job}}"),
                ).decimals(0),
                _graph(
                    "Cold starts (predict processes in the last hour)",
                    "Predict processes that loaded their first model and ran within the hour: under "
                    "scale-to-zero each is one cold start.",
                    "none",
                    _query(
                        "count(max_over_time(dandelion_cold_starts_total[1h]) > 0)",
                        "cold-started processes",
                    ),
                ).decimals(0),
                _graph(
                    "Model load duration by instance",
                    "Mean time each running predict process took to fetch and load a model (its first "
                    "load is the cost of a cold start).",
                    "s",
                    _query(
                        "sum by (instance) (dandelion_model_load_duration_seconds_sum)"
                        " / sum by (instance) (dandelion_model_load_duration_seconds_count)",
                        "{{instance}}",
                    ),
                ),
                _graph(
                    "Instances with a model loaded",
                    "Predict processes ready to answer; an instance at 0 for 5 minutes pages.",
                    "none",
                    _query("sum(dandelion_model_ready)", "ready"),
                ).decimals(0),
            ],
        },
    )


def model() -> dashboard.Dashboard:
    return _dashboard(
        "model",
        "Dandelion · model",
        "The served model: which version, what it promised on its test split, and how it behaves on live "
        "traffic (confidence, class mix, admins' corrections).",
        {
            "Served model": [
                _latest(
                    "Model version served",
                    "The version each predict instance reports (two during a roll-out).",
                    "none",
                    _query(
                        "count by (model_version) (dandelion_model_info)",
                        "model {{model_version}}",
                        instant=True,
                    ),
                ).text_mode(BigValueTextMode.NAME),
                _latest(
                    "Test metrics of the served model",
                    "Measured on the frozen test split at training time: accuracy and balanced accuracy "
                    "(higher is better), expected calibration error and log loss (lower is better).",
                    "none",
                    _query(
                        "max by (model_version, metric) (dandelion_model_test_metric)",
                        "{{metric}} (model {{model_version}})",
                        instant=True,
                    ),
                )
                .decimals(3)
                .color_mode(BigValueColorMode.NONE)
                .span(18),
            ],
            "Live behaviour": [
                _bars(
                    "Confidence distribution (last hour)",
                    "Predictions per confidence bucket over the hour (the histogram's buckets, "
                    "de-accumulated); mass moving towards 0.5 means the model is unsure of what it sees.",
                    "none",
                    _query(
                        "sum by (le) (increase(dandelion_prediction_confidence_bucket[1h]))",
                        "≤ {{le}}",
                        instant=True,
                    ).format(PromQueryFormat.HEATMAP),
                ).decimals(0),
                _graph(
                    "Predicted-class mix (last hour) vs expected",
                    "Share of each predicted class over the last hour (recorded series) beside its share in "
                    "the model's labelled test data; a gap above 25 points for 30 minutes warns.",
                    "percentunit",
                    _query(
                        "model_version_class:dandelion_predictions:ratio1h",
                        "{{predicted_class}} (model {{model_version}})",
                    ),
                    _query(
                        "max by (model_version, predicted_class) (dandelion_model_expected_class_ratio)",
                        "{{predicted_class}} expected (model {{model_version}})",
                    ),
                )
                .min(0)
                .max(1),
            ],
            "Admins' corrections": [
                _graph(
                    "Corrected predictions (last day) by model version",
                    "Of the predictions admins reviewed in the last day, the share they corrected (recorded "
                    "series); above 20% with at least 20 reviews asks for a retraining.",
                    "percentunit",
                    _query(
                        "model_version:dandelion_corrected_predictions:ratio1d", "model {{model_version}}"
                    ),
                )
                .min(0)
                .thresholds(_thresholds((None, "green"), (0.2, "red"))),
                _graph(
                    "Reviewed predictions (last day) by model version",
                    "How many reviews the corrected share rests on (recorded series).",
                    "none",
                    _query(
                        "model_version:dandelion_reviewed_predictions:increase1d", "model {{model_version}}"
                    ),
                ),
            ],
        },
    )


SUCCEEDED = ValueMap(
    {
        "0": ValueMappingResult(text="failed", color="red"),
        "1": ValueMappingResult(text="succeeded", color="green"),
    }
)


def pipelines() -> dashboard.Dashboard:
    return _dashboard(
        "pipelines",
        "Dandelion · pipelines",
        "The Argo workflows (or the local runner): runs, durations, and what the last extraction and "
        "training produced.",
        {
            "Runs": [
                _latest(
                    "Last run succeeded",
                    "Whether each workflow's last run succeeded; a failed one warns until a run succeeds.",
                    "none",
                    _query("max by (workflow) (argo_workflows_dandelion_workflow_succeeded)", "{{workflow}}"),
                )
                .mappings([SUCCEEDED])
                .color_mode(BigValueColorMode.BACKGROUND)
                .span(24)
                .height(4),
                _steps(
                    "Workflow runs by workflow and status",
                    "Runs since the workflow controller (or the local runner) started: the steps show when "
                    "runs ended.",
                    "none",
                    _query(
                        "sum by (workflow, status) (argo_workflows_dandelion_workflow_runs_total)",
                        "{{workflow}} {{status}}",
                    ),
                ).decimals(0),
                _steps(
                    "Workflow durations",
                    "Mean and p95 duration of each workflow's runs since the controller started.",
                    "s",
                    _query(
                        "sum by (workflow) (argo_workflows_dandelion_workflow_duration_seconds_sum)"
                        " / sum by (workflow) (argo_workflows_dandelion_workflow_duration_seconds_count)",
                        "{{workflow}} mean",
                    ),
                    _query(
                        "histogram_quantile(0.95, sum by (workflow, le) "
                        "(argo_workflows_dandelion_workflow_duration_seconds_bucket))",
                        "{{workflow}} p95",
                    ),
                ),
            ],
            "Extraction": [
                _bars(
                    "Extraction images by outcome (last run)",
                    "What the last extract-images run did with its rows.",
                    "none",
                    _query(
                        "max by (outcome) (argo_workflows_dandelion_extraction_images)",
                        "{{outcome}}",
                        instant=True,
                    ),
                ).decimals(0),
                _graph(
                    "Ingestion attempts by outcome",
                    "ingest-one-url's answers per second over 5 minutes: ingested, unchanged, or an error "
                    "code.",
                    "ops",
                    _query("sum by (outcome) (rate(dandelion_ingest_total[5m]))", "{{outcome}}"),
                ),
            ],
            "Training and promotion": [
                _latest(
                    "Training test accuracy (last run)",
                    f"Accuracy on the frozen test split of the last trained model; below {MIN_ACCURACY:.0%} "
                    "the gate refuses to promote it.",
                    "percentunit",
                    _query("max(argo_workflows_dandelion_training_test_accuracy)", "test accuracy"),
                )
                .graph_mode(BigValueGraphMode.AREA)
                .decimals(1)
                .thresholds(_thresholds((None, "red"), (MIN_ACCURACY, "green")))
                .span(12),
                _bars(
                    "Promotion outcomes",
                    "Trained models the gate promoted or rejected, since the controller started.",
                    "none",
                    _query(
                        "sum by (outcome) (argo_workflows_dandelion_promotions_total)",
                        "{{outcome}}",
                        instant=True,
                    ),
                ).decimals(0),
            ],
        },
    )


def labels() -> dashboard.Dashboard:
    return _dashboard(
        "labels",
        "Dandelion · labels",
        "The labelling loop: photos users submit with a label, the admin's queue and decisions, and the "
        "model's predictions the admin corrected.",
        {
            "Submissions": [
                _graph(
                    "Submissions per hour by outcome",
                    "Submitted images over the last hour: new ones join the queue, duplicates do not.",
                    "none",
                    _query("sum by (outcome) (increase(dandelion_submissions_total[1h]))", "{{outcome}}"),
                ),
                _latest(
                    "Pending submissions",
                    "Submissions and suspected labels waiting for an admin, counted in the catalog.",
                    "none",
                    _query("max(dandelion_pending_submissions)", "pending"),
                )
                .graph_mode(BigValueGraphMode.AREA)
                .decimals(0)
                .span(12),
            ],
            "Decisions": [
                _graph(
                    "Decisions per hour by decision",
                    "The admin's decisions over the last hour: accept, relabel, reject, keep, exclude.",
                    "none",
                    _query(
                        "sum by (decision) (increase(dandelion_label_decisions_total[1h]))", "{{decision}}"
                    ),
                ),
                _graph(
                    "Corrections (last day) by model version",
                    "Reviewed predictions (recorded series) and those the admin corrected over the last day: "
                    "each accepted label that differs from the model's prediction is one correction.",
                    "none",
                    _query(
                        "model_version:dandelion_reviewed_predictions:increase1d",
                        "reviewed (model {{model_version}})",
                    ),
                    _query(
                        "sum by (model_version) (increase(dandelion_corrected_predictions_total[1d]))"
                        " or model_version:dandelion_reviewed_predictions:increase1d * 0",
                        "corrected (model {{model_version}})",
                    ),
                ),
            ],
        },
    )


# Name -> builder; observability/grafana/dashboards/<name>.json is rendered from it, uid dandelion-<name>.
DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "serving": serving,
    "model": model,
    "pipelines": pipelines,
    "labels": labels,
}


def render() -> dict[str, str]:
    """File name -> JSON text, deterministic (sorted keys, trailing newline) so the drift test can compare."""
    return {
        f"{name}.json": json.dumps(
            build().build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False
        )
        + "\n"
        for name, build in DASHBOARDS.items()
    }


def write(directory: Path) -> list[Path]:
    """What `dandelion render` calls: every dashboard's JSON into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row keeps its panels inside it


def expressions(dashboard_json: dict[str, Any]) -> list[str]:
    """Every PromQL `expr` of a dashboard's panels, in panel order: what a real Prometheus is asked."""
    return [
        target["expr"]
        for panel in _panels(dashboard_json.get("panels", []))
        for target in panel.get("targets", [])
        if "expr" in target
    ]
