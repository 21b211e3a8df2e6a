"""What the page shows, computed from what the platform answered: pure functions, tested without a browser."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from functions.lib.labels import LABELS
from web.clients import WebError

MAX_IMAGES = 32  # classified per click; a person with more sends them in batches
TABLE_COLUMNS = (
    "image",
    "predicted_class",
    "confidence",
    *(f"p_{label}" for label in LABELS),
    "model_version",
)
ACTIONS = ("accept", "relabel", "reject", "exclude")
# What each button means for each kind of item in the review queue.
DECISIONS = {
    "upload": {"accept": "accept", "relabel": "accept", "reject": "reject"},
    "suspect": {"accept": "keep", "relabel": "relabel", "exclude": "exclude"},
}


@dataclass(frozen=True)
class Result:
    """One classified image, or why it could not be."""

    name: str
    path: str
    answer: dict[str, Any] | None = None
    error: str | None = None

    def row(self) -> list[Any]:
        if self.answer is None:
            return [self.name, f"error: {self.error}", None, *(None for _ in LABELS), None]
        probabilities = self.answer["probabilities"]
        return [
            self.name,
            self.answer["predicted_class"],
            round(self.answer["confidence"], 4),
            *(round(probabilities[label], 4) for label in LABELS),
            self.answer["model_version"],
        ]

    def caption(self) -> str:
        if self.answer is None:
            return f"{self.name}: {self.error}"
        answer = self.answer
        return f"{answer['predicted_class']} {answer['confidence']:.0%} · model {answer['model_version']}"


def selection(result: Result) -> str:
    return f"Selected: **{result.name}**, {result.caption() if result.answer else result.error}"


def table(results: list[Result]) -> list[list[Any]]:
    return [result.row() for result in results]


def to_csv(results: list[Result]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    writer.writerows(table(results))
    return out.getvalue()


def summary(results: list[Result], dropped: int) -> str:
    done = sum(result.answer is not None for result in results)
    parts = [f"classified {done} of {len(results)} image{'s' if len(results) != 1 else ''}"]
    failed = [result for result in results if result.answer is None]
    if failed:
        parts.append(f"{len(failed)} could not be: {failed[0].error}")
    if dropped:
        parts.append(f"only the first {MAX_IMAGES} were sent; send the other {dropped} in another batch")
    return "; ".join(parts) + "."


def confidences(result: Result | None) -> dict[str, float] | None:
    """The probabilities as gr.Label draws them (a bar per class)."""
    return dict(result.answer["probabilities"]) if result and result.answer else None


def correction(result: Result, right: bool) -> str:
    """The label a person means by 'this is right' or 'this is wrong' (two classes: the other one)."""
    if result.answer is None:
        raise WebError(f"{result.name} was not classified, so there is nothing to confirm or correct")
    said = result.answer["predicted_class"]
    return said if right else next(label for label in LABELS if label != said)


def thanks(result: Result, label: str, answer: dict[str, Any]) -> str:
    if not answer["new"]:
        return f"{result.name} was already sent for review (submission #{answer['id']})."
    return f"Thank you: {result.name} as {label} waits for review (submission #{answer['id']})."


def item_caption(item: dict[str, Any]) -> str:
    if item["kind"] == "suspect":
        return (
            f"#{item['id']} suspected label: labelled {item['label']}, "
            f"the audit suggests {item['predicted_class']} ({item['confidence']:.0%})"
        )
    said = f", the model said {item['predicted_class']}" if item["predicted_class"] else ""
    if item["predicted_class"] and item["confidence"] is not None:
        said += f" ({item['confidence']:.0%}, model {item['model_version']})"
    return f"#{item['id']} upload: sent as {item['label']}{said}"


def decision(item: dict[str, Any], action: str) -> tuple[str, str | None]:
    """The validate-label decision (and label) a button means for this item."""
    decisions = DECISIONS[item["kind"]]
    if action not in decisions:
        allowed = ", ".join(decisions)
        raise WebError(
            f"a {'suspected label' if item['kind'] == 'suspect' else 'submission'} is decided by {allowed}"
        )
    other = next(label for label in LABELS if label != item["label"])
    return decisions[action], other if action == "relabel" else None


def decided(answer: dict[str, Any]) -> str:
    """'#3 accepted as grass.', '#4 excluded.': the label only where it stays in the training data."""
    label = answer.get("decided_label") if answer["status"] in ("accepted", "kept", "relabelled") else None
    return f"#{answer['id']} {answer['status']}" + (f" as {label}" if label else "") + "."


def retraining(status: dict[str, Any]) -> str:
    """How far the next retraining is, and the retrain requests posted so far."""
    lines = [
        f"**{status['new_labels']}** new labels since the last training; "
        f"**{status['remaining']}** more start the next retraining (every {status['threshold']})."
    ]
    for event in status["events"]:
        state = (
            f"delivered {_when(event['sent_at'])}"
            if event["sent_at"]
            else f"not delivered yet ({event['last_error']})"
        )
        lines.append(f"- retraining requested {_when(event['created_at'])}: {state}")
    return "\n".join(lines)


def _when(value: str | int | None) -> str:
    """An RFC 3339 string or MLflow's milliseconds, as a person reads a UTC time."""
    if value is None:
        return "unknown"
    moment = (
        datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int) else datetime.fromisoformat(value)
    )
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


HEADLINE_METRICS = (
    ("test_accuracy", "accuracy"),
    ("test_balanced_accuracy", "balanced accuracy"),
    ("test_accuracy_unflagged", "accuracy, photos the audit did not flag"),
    ("test_ece", "expected calibration error"),
    ("test_log_loss", "log loss"),
)


def champion(info: dict[str, Any], versions: list[dict[str, Any]]) -> str:
    """The serving model: its version, when and on what data it was trained, its test metrics."""
    version = next((v for v in versions if str(v["version"]) == str(info["version"])), None)
    trained = _when(version["trained_at"]) if version else "unknown (not in the registry)"
    lines = [
        f"### Model {info['version']} serves",
        f"Trained {trained} on dataset {info['dataset_version']} (MLflow run `{info['mlflow_run_id']}`); "
        f"{info['num_parameters']:,} parameters, input {info['input_size']} px.",
        "",
        "| test metric | value |",
        "|---|---|",
    ]
    metrics = info.get("metrics") or {}
    lines += [f"| {name} | {metrics[key]:.4f} |" for key, name in HEADLINE_METRICS if key in metrics]
    return "\n".join(lines)


def accuracy_points(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per registered version that was evaluated: what the accuracy plot draws."""
    return [
        {
            "version": str(v["version"]),  # a name on the axis, not a quantity
            "test_accuracy": v["metrics"]["test_accuracy"],
            "champion": "champion" in v["aliases"],
        }
        for v in versions
        if "test_accuracy" in v["metrics"]
    ]


def links(mlflow_url: str | None, argo_url: str | None, grafana_url: str | None, model_name: str) -> str:
    found = []
    if mlflow_url and mlflow_url.startswith(("http://", "https://")):
        found.append(f"[MLflow: the registered model]({mlflow_url.rstrip('/')}/#/models/{model_name})")
    if argo_url:
        found.append(f"[Argo: the workflows]({argo_url.rstrip('/')}/workflows)")
    if grafana_url:
        found.append(f"[Grafana: the dashboards]({grafana_url.rstrip('/')}/dashboards)")
    return " · ".join(found) or "No MLflow, Argo or Grafana URL is configured."
