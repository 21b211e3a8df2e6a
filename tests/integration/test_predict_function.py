"""The predict function as a real functions-framework process, serving tiny real models from a store."""

import base64
import hashlib
import io
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from functions.lib.config import BACKBONES
from functions.lib.errors import Unavailable
from functions.lib.model_server import ModelFiles
from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import open_store
from tests.conftest import DATASET, FunctionProcess, bomb_png
from tests.support import publish_model
from workflows.lib.rollout import roll_out_predict

pytestmark = pytest.mark.integration

DANDELION = (DATASET / "dandelion" / "00000001.jpg").read_bytes()
GRASS = (DATASET / "grass" / "00000003.jpg").read_bytes()
UPLOAD_LIMIT = 4 * 1024 * 1024
ANSWER_KEYS = {"predicted_class", "confidence", "probabilities", "model_version", "prediction_time"}


def encoded(image: Image.Image, format: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format)
    return out.getvalue()


def predict_env(tmp_path: Path, store_url: str, **extra: str) -> dict[str, str]:
    return dict(
        os.environ,
        DANDELION_HOME=str(tmp_path / "home"),
        DANDELION_STORE_URL=store_url,
        DANDELION_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
        **extra,
    )


def expected(model: tuple[bytes, dict], data: bytes) -> list[float]:
    """The probabilities the model gives in this process: what the function must answer."""
    onnx_bytes, metadata = model
    classifier = OnnxClassifier(onnx_bytes, Preprocessing.from_dict(metadata))
    return classifier.classify([Image.open(io.BytesIO(data))])[0].tolist()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_models) -> tuple[FunctionProcess, str]:
    tmp = tmp_path_factory.mktemp("served")
    store_url = (tmp / "objects").as_uri()
    publish_model(store_url, "1", tiny_models[0])
    function = FunctionProcess("predict", predict_env(tmp, store_url), log=tmp / "predict.log")
    yield function
    function.stop()


def test_predict_answers_the_contract(served, tiny_models) -> None:
    response = requests.post(f"{served.url}/predict", files={"file": ("d.jpg", DANDELION, "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == ANSWER_KEYS
    probabilities = expected(tiny_models[0], DANDELION)
    assert body["probabilities"] == pytest.approx(
        dict(zip(("dandelion", "grass"), probabilities, strict=True)), abs=1e-6
    )
    assert body["predicted_class"] == ("dandelion", "grass")[int(np.argmax(probabilities))]
    assert body["confidence"] == pytest.approx(max(probabilities), abs=1e-6)
    assert body["model_version"] == "1"
    assert 0 < body["prediction_time"] < 5


@pytest.mark.parametrize("backbone", BACKBONES)
def test_each_backbone_serves_the_probabilities_onnxruntime_gives_here(
    tmp_path, backbone, tiny_models, pretrained_tiny_model
) -> None:
    """The model a backbone trains, published as promotion publishes it, served unchanged: predict's
    preprocessing comes from the metadata, whichever normalisation the backbone has."""
    model = pretrained_tiny_model if backbone == "efficientnet-lite0" else tiny_models[0]
    store_url = (tmp_path / "objects").as_uri()
    publish_model(store_url, "1", model)
    function = FunctionProcess("predict", predict_env(tmp_path, store_url))
    try:
        files = [("file", ("d.jpg", DANDELION, "image/jpeg")), ("file", ("g.jpg", GRASS, "image/jpeg"))]
        answers = requests.post(f"{function.url}/predict", files=files, timeout=30).json()
        for answer, data in zip(answers, (DANDELION, GRASS), strict=True):
            want = dict(zip(("dandelion", "grass"), expected(model, data), strict=True))
            assert answer["probabilities"] == pytest.approx(want, abs=1e-6)
        info = requests.get(f"{function.url}/model/info", timeout=30).json()
        assert (info["dataset_version"], info["num_parameters"]) == (
            model[1]["dataset_version"],
            model[1]["num_parameters"],
        )
    finally:
        function.stop()


def test_trailing_slash_and_raw_body_give_the_same_answer(served) -> None:
    multipart = requests.post(f"{served.url}/predict", files={"file": ("g.jpg", GRASS)}).json()
    slash = requests.post(f"{served.url}/predict/", files={"file": ("g.jpg", GRASS)}).json()
    raw = requests.post(f"{served.url}/predict", data=GRASS, headers={"Content-Type": "image/jpeg"}).json()
    for answer in (slash, raw):
        assert answer["probabilities"] == multipart["probabilities"]


def test_several_file_parts_answer_a_list_in_order(served, tiny_models) -> None:
    files = [("file", ("d.jpg", DANDELION)), ("file", ("g.jpg", GRASS))]
    response = requests.post(f"{served.url}/predict", files=files)
    assert response.status_code == 200
    answers = response.json()
    assert [list(a["probabilities"].values()) for a in answers] == [
        pytest.approx(expected(tiny_models[0], data), abs=1e-6) for data in (DANDELION, GRASS)
    ]


GRADIENT = Image.linear_gradient("L").resize((300, 200))
VARIANTS = {
    "grayscale": encoded(GRADIENT, "JPEG"),
    "rgba-png": encoded(Image.merge("RGBA", [GRADIENT] * 4), "PNG"),
    "palette-png": encoded(Image.open(io.BytesIO(GRASS)).convert("P"), "PNG"),
    "webp": encoded(Image.open(io.BytesIO(DANDELION)), "WEBP"),
    "tiny-10x10": encoded(Image.new("RGB", (10, 10), (240, 200, 20)), "JPEG"),
    "large-4000x4000": encoded(Image.linear_gradient("L").resize((4000, 4000)).convert("RGB"), "JPEG"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_kind_of_image_predicts(served, name: str) -> None:
    response = requests.post(f"{served.url}/predict", files={"file": (name, VARIANTS[name])})
    assert response.status_code == 200, response.text
    assert response.json()["predicted_class"] in ("dandelion", "grass")


BAD_INPUTS = {
    "no-body": (
        {},
        400,
        "bad_request",
        "no file: send the image as the multipart field 'file' or as an image/* body",
    ),
    "no-file-field": (
        {"files": {"image": ("d.jpg", DANDELION)}},
        400,
        "bad_request",
        "no file: send the image as the multipart field 'file'",
    ),
    "empty-file": ({"files": {"file": ("d.jpg", b"")}}, 400, "bad_request", "a 'file' part is empty"),
    "not-an-image": (
        {"files": {"file": ("a.txt", b"hello, not a picture")}},
        415,
        "not_an_image",
        "not an image in an accepted format (JPEG, PNG, WEBP, GIF, BMP)",
    ),
    "json-body": (
        {"json": {"url": "https://example.org/x.jpg"}},
        415,
        "not_an_image",
        "not an image in an accepted format (JPEG, PNG, WEBP, GIF, BMP)",
    ),
    "bomb": (
        {"files": {"file": ("b.png", bomb_png())}},
        413,
        "too_large",
        "the image has 144000000 pixels, over the 40000000-pixel limit",
    ),
    "over-upload-limit": (
        {"files": {"file": ("big.jpg", b"\xff" * (UPLOAD_LIMIT + 1))}},
        413,
        "too_large",
        f"the request body is over the {UPLOAD_LIMIT}-byte limit",
    ),
    "over-limit-chunked": (
        {"data": iter([b"\xff" * 1024 * 1024] * 5), "headers": {"Content-Type": "image/jpeg"}},
        413,
        "too_large",
        f"the request body is over the {UPLOAD_LIMIT}-byte limit",
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_a_json_4xx(served, name: str) -> None:
    kwargs, status, error, message = BAD_INPUTS[name]
    response = requests.post(f"{served.url}/predict", **kwargs)
    assert (response.status_code, response.json()) == (status, {"error": error, "message": message})


def test_truncated_image_is_refused(served) -> None:
    response = requests.post(f"{served.url}/predict", files={"file": ("t.jpg", GRASS[: len(GRASS) // 2])})
    assert response.status_code == 415
    assert response.json()["message"].startswith("the image is truncated or corrupt")


def test_unknown_route_and_wrong_method(served) -> None:
    missing = requests.get(f"{served.url}/nowhere")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "not_found", "message": "no route '/nowhere'"},
    )
    # Found by fuzzing: functions-framework's own router answered these with Flask's HTML page.
    for path, shown in (
        ("/predict%0A", "/predict\\n"),
        ("/favicon.ico", "/favicon.ico"),
        ("/robots.txt", "/robots.txt"),
    ):
        unrouted = requests.post(f"{served.url}{path}")
        assert (unrouted.status_code, unrouted.json()) == (
            404,
            {"error": "not_found", "message": f"no route '{shown}'"},
        )
    wrong = requests.get(f"{served.url}/predict")
    assert (wrong.status_code, wrong.json(), wrong.headers["Allow"]) == (
        405,
        {"error": "method_not_allowed", "message": "GET is not allowed on /predict; use POST"},
        "POST",
    )
    post_health = requests.post(f"{served.url}/health")
    assert (post_health.status_code, post_health.headers["Allow"]) == (405, "GET, HEAD")


@pytest.mark.parametrize(
    "path", ["/health", "/model/info", "/metrics", "/v2/health/ready", "/v2/models/dandelion-grass"]
)
def test_head_answers_where_get_does_with_the_headers_alone(served, path: str) -> None:
    get, head = requests.get(f"{served.url}{path}"), requests.head(f"{served.url}{path}")
    assert (head.status_code, head.content) == (get.status_code, b"")
    assert head.headers["Content-Type"] == get.headers["Content-Type"]


def test_a_request_id_follows_the_request_into_the_log(served) -> None:
    answer = requests.get(f"{served.url}/model/info", headers={"X-Request-ID": "web-abc123"})
    assert (answer.status_code, answer.headers["X-Request-ID"]) == (200, "web-abc123")
    made = requests.get(f"{served.url}/model/info", headers={"X-Request-ID": "not a token"})
    assert re.fullmatch("[0-9a-f]{32}", made.headers["X-Request-ID"])  # an unusable id is replaced
    logged = [json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")]
    ours = [entry for entry in logged if entry.get("request_id") == "web-abc123"]
    assert [(e["message"], e["path"], e["status"]) for e in ours] == [("request", "/model/info", 200)]


def test_health_and_model_info(served, tiny_models) -> None:
    health = requests.get(f"{served.url}/health")
    assert (health.status_code, health.json()) == (
        200,
        {"status": "healthy", "model_loaded": True, "model_version": "1", "pinned": False},
    )
    info = requests.get(f"{served.url}/model/info").json()
    onnx_bytes, metadata = tiny_models[0]
    assert info == {
        "name": "dandelion-grass",
        "version": "1",
        "classes": ["dandelion", "grass"],
        "input_size": 128,
        "num_parameters": metadata["num_parameters"],
        "metrics": {"test_accuracy": 0.5},
        "dataset_version": "tiny-scratch-0",
        "mlflow_run_id": "run-0",
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
    }
    assert isinstance(info["num_parameters"], int) and info["num_parameters"] > 1000


def test_metrics_count_predictions(served) -> None:
    requests.post(f"{served.url}/predict", files={"file": ("g.jpg", GRASS)})
    text = requests.get(f"{served.url}/metrics").text
    for line in (
        'dandelion_http_requests_total{function="predict",method="POST",route="/predict",status="200"}',
        'dandelion_http_request_duration_seconds_count{function="predict",route="/predict"}',
        'dandelion_predict_stage_duration_seconds_count{stage="preprocess"}',
        'dandelion_predict_stage_duration_seconds_count{stage="predict"}',
        'dandelion_predict_stage_duration_seconds_count{stage="postprocess"}',
        "dandelion_prediction_confidence_count",
        "dandelion_model_load_duration_seconds_count 1.0",
        "dandelion_cold_starts_total 1.0",
        'dandelion_model_info{model_version="1"} 1.0',
        "dandelion_model_ready 1.0",
        'dandelion_model_test_metric{metric="accuracy",model_version="1"} 0.5',
    ):
        assert line in text, line
    assert 'dandelion_predictions_total{model_version="1",predicted_class=' in text


# ---------------------------------------------------------------- Open Inference Protocol (KServe v2)


def test_v2_with_a_standard_client_in_both_encodings(served, tiny_models) -> None:
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("dandelion-grass")
    assert client.get_model_metadata("dandelion-grass") == {
        "name": "dandelion-grass",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "predicted_class", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    want = np.array([expected(tiny_models[0], data) for data in (DANDELION, GRASS)], dtype=np.float32)
    for binary in (True, False):
        tensor = triton.InferInput("image", [2], "BYTES")
        images = [DANDELION, GRASS] if binary else [base64.b64encode(d) for d in (DANDELION, GRASS)]
        tensor.set_data_from_numpy(np.array(images, dtype=object), binary_data=binary)
        outputs = [
            triton.InferRequestedOutput(name, binary_data=binary)
            for name in ("probabilities", "predicted_class")
        ]
        result = client.infer("dandelion-grass", [tensor], outputs=outputs, request_id="r-1")
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
        classes = [c.decode() if isinstance(c, bytes) else c for c in result.as_numpy("predicted_class")]
        assert classes == [("dandelion", "grass")[i] for i in want.argmax(axis=1)]
        assert result.get_response()["model_version"] == "1"
        assert result.get_response()["id"] == "r-1"


def test_v2_refuses_a_bad_request_with_a_4xx(served) -> None:
    url = f"{served.url}/v2/models/dandelion-grass/infer"
    wrong_name = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]}
    response = requests.post(url, json=wrong_name)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "expected exactly one input named 'image'", "code": "bad_request"},
    )
    not_base64 = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}
    response = requests.post(url, json=not_base64)
    assert (response.status_code, response.json()["error"]) == (
        400,
        "an element of 'image' is not valid base64",
    )
    not_image = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]}
    assert requests.post(url, json=not_image).status_code == 415
    nested = requests.post(
        url, data="[" * 30_000 + "]" * 30_000, headers={"content-type": "application/json"}
    )
    assert (nested.status_code, nested.json()) == (
        400,
        {"error": "the inference request header's JSON is nested too deeply", "code": "bad_request"},
    )
    missing = requests.get(f"{served.url}/v2/models/other-model")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "no route '/v2/models/other-model'", "code": "not_found"},
    )


def test_a_kserve_v2_client_shows_the_servers_message(served) -> None:
    """tritonclient raises InferenceServerException with the body's `error`: the message, not a code."""
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"not an image"], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("dandelion-grass", [tensor])
    assert raised.value.message() == ("not an image in an accepted format (JPEG, PNG, WEBP, GIF, BMP)")


# ---------------------------------------------------------------- model lifecycle


def test_no_model_is_503_until_one_is_promoted(tmp_path, tiny_models) -> None:
    store_url = (tmp_path / "objects").as_uri()
    function = FunctionProcess("predict", predict_env(tmp_path, store_url), ready="/v2/health/live")
    try:
        reason = "no model has been promoted yet (models/champion.json is missing)"
        health = requests.get(f"{function.url}/health")
        assert (health.status_code, health.json()) == (
            503,
            {"status": "unavailable", "model_loaded": False, "reason": reason},
        )
        predict = requests.post(f"{function.url}/predict", files={"file": ("g.jpg", GRASS)})
        assert (predict.status_code, predict.json()) == (503, {"error": "unavailable", "message": reason})
        assert requests.get(f"{function.url}/v2/health/ready").status_code == 503
        publish_model(store_url, "1", tiny_models[0])
        reloaded = requests.post(f"{function.url}/model/reload")
        assert (reloaded.status_code, reloaded.json()["version"]) == (200, "1")
        assert requests.post(f"{function.url}/predict", files={"file": ("g.jpg", GRASS)}).status_code == 200
    finally:
        function.stop()


def test_one_request_is_bounded_in_images_and_in_pixels(tmp_path, tiny_models) -> None:
    store_url = (tmp_path / "objects").as_uri()
    publish_model(store_url, "1", tiny_models[0])
    limits = {"DANDELION_MAX_IMAGES_PER_REQUEST": "3", "DANDELION_MAX_IMAGE_PIXELS": "20000"}
    function = FunctionProcess("predict", predict_env(tmp_path, store_url, **limits))
    png = io.BytesIO()
    Image.new("RGB", (100, 120), "yellow").save(png, format="PNG")  # 12,000 pixels, decoded whole
    url, v2 = f"{function.url}/predict", f"{function.url}/v2/models/dandelion-grass/infer"

    def tensor(count: int) -> dict:
        data = [base64.b64encode(png.getvalue()).decode()] * count
        return {"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES", "data": data}]}

    try:
        one = requests.post(url, files=[("file", ("a.png", png.getvalue()))])
        assert one.status_code == 200
        four = requests.post(url, files=[("file", (f"{n}.png", png.getvalue())) for n in range(4)])
        many = "a request may carry at most 3 images; this one carries 4"
        assert (four.status_code, four.json()) == (413, {"error": "too_large", "message": many})
        assert (requests.post(v2, json=tensor(4)).json()) == {"error": many, "code": "too_large"}
        two = requests.post(url, files=[("file", (f"{n}.png", png.getvalue())) for n in range(2)])
        together = "the request's images together pass the 20000-pixel limit of one request"
        assert (two.status_code, two.json()) == (413, {"error": "too_large", "message": together})
        assert (requests.post(v2, json=tensor(2)).json()) == {"error": together, "code": "too_large"}
    finally:
        function.stop()


@pytest.mark.parametrize(
    ("pointer", "reason"),
    [
        (b'{"version": "1", "sha2', "models/champion.json is not valid JSON"),
        (b'["1"]', "models/champion.json does not name a version and its sha256"),
    ],
)
def test_a_corrupt_champion_pointer_is_503_not_a_crash(tmp_path, pointer: bytes, reason: str) -> None:
    store_url = (tmp_path / "objects").as_uri()
    open_store(store_url).put("models/champion.json", pointer, "application/json")
    function = FunctionProcess("predict", predict_env(tmp_path, store_url), ready="/v2/health/live")
    try:
        health = requests.get(f"{function.url}/health")  # the cold start reads the pointer
        assert (health.status_code, health.json()) == (
            503,
            {"status": "unavailable", "model_loaded": False, "reason": reason},
        )
        reloaded = requests.post(f"{function.url}/model/reload")
        assert (reloaded.status_code, reloaded.json()) == (503, {"error": "unavailable", "message": reason})
    finally:
        function.stop()


def test_hot_swap_under_concurrent_requests_fails_none(tmp_path, tiny_models) -> None:
    store_url = (tmp_path / "objects").as_uri()
    publish_model(store_url, "1", tiny_models[0])
    function = FunctionProcess(
        "predict", predict_env(tmp_path, store_url, DANDELION_MODEL_POLL_SECONDS="0.2")
    )
    seen: list[list[tuple[int, str]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def client(index: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(f"{function.url}/predict", files={"file": ("d.jpg", DANDELION)})
                version = response.json().get("model_version") if response.ok else response.text
                seen[index].append((response.status_code, version))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        publish_model(store_url, "2", tiny_models[1])
        deadline = time.monotonic() + 20
        while requests.get(f"{function.url}/health").json()["model_version"] != "2":
            assert time.monotonic() < deadline, "the new champion was not picked up"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        function.stop()
    answers = [answer for per_client in seen for answer in per_client]
    assert {status for status, _ in answers} == {200}
    assert {version for _, version in answers} == {"1", "2"}
    for per_client in seen:  # once a client has seen the new model, it never sees the old one again
        versions = [version for _, version in per_client]
        assert versions == sorted(versions)


def test_a_pinned_version_ignores_the_champion_and_is_cached(tmp_path, tiny_models) -> None:
    store_url = (tmp_path / "objects").as_uri()
    publish_model(store_url, "1", tiny_models[0])
    publish_model(store_url, "2", tiny_models[1])
    env = predict_env(tmp_path, store_url, DANDELION_MODEL_VERSION="1", DANDELION_MODEL_POLL_SECONDS="0.1")
    function = FunctionProcess("predict", env)
    pinned = {"status": "healthy", "model_loaded": True, "model_version": "1", "pinned": True}
    try:
        assert requests.get(f"{function.url}/health").json() == pinned
        time.sleep(0.3)  # several poll intervals: an unpinned process would now look at the champion
        requests.get(f"{function.url}/health")
        time.sleep(0.3)
        assert requests.get(f"{function.url}/health").json() == pinned
    finally:
        function.stop()
    (tmp_path / "objects" / "models" / "1" / "model.onnx").unlink()  # only the local copy is left
    function = FunctionProcess("predict", env)
    try:
        answer = requests.post(f"{function.url}/predict", files={"file": ("g.jpg", GRASS)}).json()
        assert answer["model_version"] == "1"
    finally:
        function.stop()


def test_local_roll_out_makes_the_running_function_serve_the_new_champion(
    tmp_path, tiny_models, monkeypatch
) -> None:
    store_url = (tmp_path / "objects").as_uri()
    publish_model(store_url, "1", tiny_models[0])
    function = FunctionProcess(
        "predict", predict_env(tmp_path, store_url, DANDELION_MODEL_POLL_SECONDS="3600")
    )
    monkeypatch.setenv("DANDELION_PREDICT_URL", function.url)
    try:
        publish_model(store_url, "2", tiny_models[1])
        assert requests.get(f"{function.url}/health").json()["model_version"] == "1"  # not polled yet
        assert (
            roll_out_predict("2")
            == f"local predict function at {function.url}/model/reload now serves model 2"
        )
        assert requests.get(f"{function.url}/health").json()["model_version"] == "2"
    finally:
        function.stop()
    assert roll_out_predict("2") == (
        f"no predict function answers at {function.url}/model/reload; it loads the champion when it starts"
    )


def test_a_pinned_version_repairs_a_corrupt_or_tampered_local_copy(tmp_path, tiny_models) -> None:
    store_url = (tmp_path / "objects").as_uri()
    published = publish_model(store_url, "1", tiny_models[0])
    files = ModelFiles(open_store(store_url), tmp_path / "cache", threads=1)
    assert files.load("1", None).sha256 == published["sha256"]  # pinned: no pointer digest
    model, metadata = (
        tmp_path / "cache" / "models" / "1" / "model.onnx",
        tmp_path / "cache" / "models" / "1" / "metadata.json",
    )
    model.write_bytes(b"not onnx")
    swapped = json.loads(metadata.read_text()) | {"classes": ["grass", "dandelion"]}
    metadata.write_text(json.dumps(swapped))
    repaired = files.load("1", None)
    assert (repaired.sha256, repaired.classes) == (published["sha256"], ("dandelion", "grass"))
    assert model.read_bytes() == tiny_models[0][0]  # the local copy is whole again


def test_a_stale_local_copy_is_fetched_again_and_a_wrong_digest_refused(tmp_path, tiny_models) -> None:
    store_url = (tmp_path / "objects").as_uri()
    first = publish_model(store_url, "1", tiny_models[0])
    files = ModelFiles(open_store(store_url), tmp_path / "cache", threads=1)
    assert files.load("1", first["sha256"]).metadata["dataset_version"] == "tiny-scratch-0"
    second = publish_model(store_url, "1", tiny_models[1])  # version 1 again, as after a registry reset
    reloaded = files.load("1", second["sha256"])
    assert (reloaded.sha256, reloaded.metadata["dataset_version"]) == (second["sha256"], "tiny-scratch-1")
    with pytest.raises(Unavailable, match="not the expected 0000"):
        files.load("1", "0" * 64)
