"""The web app's logic: what the page shows for what the platform answered."""

import csv
import io

import pytest
import requests

from web import views
from web.clients import Service, WebError

ANSWER = {
    "predicted_class": "grass",
    "confidence": 0.9312,
    "probabilities": {"dandelion": 0.0688, "grass": 0.9312},
    "model_version": "4",
    "prediction_time": 0.01,
}
GOOD = views.Result("lawn.jpg", "/tmp/lawn.jpg", ANSWER)
BAD = views.Result("notes.jpg", "/tmp/notes.jpg", error="predict answered 415: the file is not an image")


def test_results_become_captions_a_table_and_a_csv() -> None:
    assert GOOD.caption() == "grass 93% · model 4"
    assert BAD.caption() == "notes.jpg: predict answered 415: the file is not an image"
    assert views.table([GOOD, BAD]) == [
        ["lawn.jpg", "grass", 0.9312, 0.0688, 0.9312, "4"],
        ["notes.jpg", "error: predict answered 415: the file is not an image", None, None, None, None],
    ]
    rows = list(csv.reader(io.StringIO(views.to_csv([GOOD]))))
    assert rows == [list(views.TABLE_COLUMNS), ["lawn.jpg", "grass", "0.9312", "0.0688", "0.9312", "4"]]
    assert views.confidences(GOOD) == {"dandelion": 0.0688, "grass": 0.9312}
    assert views.confidences(BAD) is None


def test_the_summary_says_what_failed_and_what_was_left_out() -> None:
    assert views.summary([GOOD], 0) == "classified 1 of 1 image."
    assert views.summary([GOOD, BAD], 3) == (
        "classified 1 of 2 images; 1 could not be: predict answered 415: the file is not an image; "
        f"only the first {views.MAX_IMAGES} were sent; send the other 3 in another batch."
    )


def test_right_and_wrong_mean_a_label() -> None:
    assert views.correction(GOOD, right=True) == "grass"
    assert views.correction(GOOD, right=False) == "dandelion"
    with pytest.raises(WebError, match=r"notes\.jpg was not classified"):
        views.correction(BAD, right=False)
    assert views.thanks(GOOD, "dandelion", {"id": 7, "new": True}) == (
        "Thank you: lawn.jpg as dandelion waits for review (submission #7)."
    )
    assert views.thanks(GOOD, "dandelion", {"id": 7, "new": False}) == (
        "lawn.jpg was already sent for review (submission #7)."
    )


UPLOAD = {
    "id": 3,
    "kind": "upload",
    "label": "grass",
    "predicted_class": "dandelion",
    "confidence": 0.8,
    "model_version": "4",
}
SUSPECT = {
    "id": 5,
    "kind": "suspect",
    "label": "grass",
    "predicted_class": "dandelion",
    "confidence": 0.97,
    "model_version": "run",
}


@pytest.mark.parametrize(
    ("item", "action", "expected"),
    [
        (UPLOAD, "accept", ("accept", None)),
        (UPLOAD, "relabel", ("accept", "dandelion")),
        (UPLOAD, "reject", ("reject", None)),
        (SUSPECT, "accept", ("keep", None)),
        (SUSPECT, "relabel", ("relabel", "dandelion")),
        (SUSPECT, "exclude", ("exclude", None)),
    ],
)
def test_each_button_is_the_decision_of_its_kind(item: dict, action: str, expected: tuple) -> None:
    assert views.decision(item, action) == expected


def test_a_button_of_the_other_kind_is_refused_with_what_is_allowed() -> None:
    with pytest.raises(WebError, match="a submission is decided by accept, relabel, reject"):
        views.decision(UPLOAD, "exclude")
    with pytest.raises(WebError, match="a suspected label is decided by accept, relabel, exclude"):
        views.decision(SUSPECT, "reject")


def test_queue_captions_and_decisions_read_as_sentences() -> None:
    assert views.item_caption(UPLOAD) == "#3 upload: sent as grass, the model said dandelion (80%, model 4)"
    assert (
        views.item_caption(UPLOAD | {"predicted_class": None, "confidence": None})
        == "#3 upload: sent as grass"
    )
    assert (
        views.item_caption(SUSPECT)
        == "#5 suspected label: labelled grass, the audit suggests dandelion (97%)"
    )
    assert views.decided({"id": 3, "status": "accepted", "decided_label": "grass"}) == "#3 accepted as grass."
    assert views.decided({"id": 5, "status": "excluded", "decided_label": "grass"}) == "#5 excluded."


def test_the_retraining_status_lists_the_requests() -> None:
    status = {
        "new_labels": 12,
        "threshold": 10,
        "remaining": 8,
        "events": [
            {
                "created_at": "2026-12-01T10:00:00+00:00",
                "sent_at": "2026-12-01T10:00:01+00:00",
                "last_error": None,
            },
            {"created_at": "2026-11-30T09:30:00+00:00", "sent_at": None, "last_error": "connection refused"},
        ],
    }
    assert views.retraining(status) == (
        "**12** new labels since the last training; **8** more start the next retraining (every 10).\n"
        "- retraining requested 2026-12-01 10:00 UTC: delivered 2026-12-01 10:00 UTC\n"
        "- retraining requested 2026-11-30 09:30 UTC: not delivered yet (connection refused)"
    )


def test_the_champion_and_the_plot_come_from_predict_and_the_registry() -> None:
    info = {
        "version": "2",
        "dataset_version": "abc",
        "mlflow_run_id": "r2",
        "num_parameters": 1234567,
        "input_size": 128,
        "metrics": {"test_accuracy": 0.935, "test_ece": 0.033},
    }
    versions = [
        {"version": 1, "aliases": [], "trained_at": 1764583200000, "metrics": {"test_accuracy": 0.9}},
        {
            "version": 2,
            "aliases": ["champion"],
            "trained_at": 1764669600000,
            "metrics": {"test_accuracy": 0.935},
        },
        {"version": 3, "aliases": [], "trained_at": None, "metrics": {}},
    ]
    assert views.champion(info, versions).splitlines() == [
        "### Model 2 serves",
        "Trained 2025-12-02 10:00 UTC on dataset abc (MLflow run `r2`); 1,234,567 parameters, input 128 px.",
        "",
        "| test metric | value |",
        "|---|---|",
        "| accuracy | 0.9350 |",
        "| expected calibration error | 0.0330 |",
    ]
    assert views.accuracy_points(versions) == [
        {"version": "1", "test_accuracy": 0.9, "champion": False},
        {"version": "2", "test_accuracy": 0.935, "champion": True},
    ]


def test_links_appear_only_where_configured() -> None:
    assert views.links(None, None, None, "m") == "No MLflow, Argo or Grafana URL is configured."
    assert views.links("http://mlflow:5000/", "https://argo", None, "m") == (
        "[MLflow: the registered model](http://mlflow:5000/#/models/m) · [Argo: the workflows](https://argo/workflows)"
    )
    assert views.links("sqlite:///mlflow.db", None, "http://grafana", "m") == (
        "[Grafana: the dashboards](http://grafana/dashboards)"
    )


def test_a_function_that_is_down_or_refuses_is_a_sentence() -> None:
    with pytest.raises(WebError, match=r"^predict is not reachable at http://127.0.0.1:9: is it running\?$"):
        Service("predict", "http://127.0.0.1:9").call("GET", "/health")


def test_an_error_answer_carries_the_functions_message(monkeypatch) -> None:
    answer = requests.Response()
    answer.status_code, answer.reason = 415, "Unsupported Media Type"
    answer._content = b'{"error": "unsupported_media_type", "message": "the file is not an image"}'
    monkeypatch.setattr(requests, "request", lambda *_args, **_kwargs: answer)
    with pytest.raises(WebError, match=r"^predict answered 415: the file is not an image$"):
        Service("predict", "http://predict").call("POST", "/predict")
