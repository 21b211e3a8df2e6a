"""The web app as a person uses it: the real page in headless Chromium (Debian's `chromium`, driven by
Playwright), served by `python -m web` against real predict and validate-label processes and a real
MLflow server whose registry holds two versions. A screenshot of each tab is saved under
`test-output/screenshots/` for a person to look at. `gradio_client` does the same through the named API.

The tests of this module run in order, on one stack: classify, correct, review, model, then predict stops.
"""

import csv
import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import requests
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from functions.lib import catalog
from functions.lib.layout import MODEL_NAME, raw_key
from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import open_store
from functions.lib.submissions import Suspect, queue_suspects
from tests.conftest import DATASET, FunctionProcess
from tests.support import ROOT, publish_model
from workflows.local.processes import free_port, start_function, stop, wait_healthy

pytestmark = pytest.mark.browser

TOKEN = "browser-admin-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machines' notes say: without these, Chromium tries the closed network and waits on it.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PHOTOS = [
    DATASET / "dandelion" / "00000001.jpg",
    DATASET / "grass" / "00000003.jpg",
    DATASET / "grass" / "00000009.jpg",
]
TIMEOUT_MS = 30_000
SUSPECT_URL = "https://example.org/7.jpg"  # a catalog row whose label the audit doubts


class Stack:
    """predict, validate-label and the web app, on one store and catalog, with MLflow's registry."""

    def __init__(self, tmp: Path, model: tuple[bytes, dict]) -> None:
        store_url, db_url = (tmp / "objects").as_uri(), f"sqlite:///{tmp / 'catalog.db'}"
        self.model, self.db_url = model, db_url
        runs = [self._registered(version, accuracy) for version, accuracy in (("1", 0.81), ("2", 0.9))]
        onnx_bytes, metadata = model
        served = {"mlflow_run_id": runs[1], "dataset_version": "d-2", "metrics": {"test_accuracy": 0.9}}
        publish_model(store_url, "2", (onnx_bytes, metadata | served))
        env = dict(
            os.environ,
            DANDELION_HOME=str(tmp / "home"),
            DANDELION_STORE_URL=store_url,
            DANDELION_DB_URL=db_url,
            DANDELION_ADMIN_TOKEN=TOKEN,
            DANDELION_RETRAIN_MIN_NEW_LABELS="3",
            DANDELION_RETRAIN_WEBHOOK=f"http://127.0.0.1:{free_port()}/retrain",  # nobody: kept to retry
        )
        self.predict = FunctionProcess("predict", env)
        self.labels = FunctionProcess("validate-label", env)
        self._suspected(db_url, store_url)
        port = free_port()
        web_env = env | {
            "DANDELION_PREDICT_URL": self.predict.url,
            "DANDELION_LABELS_URL": self.labels.url,
            "DANDELION_GRAFANA_URL": "http://grafana.example:3000",
        }
        self.web = start_function("web", port, web_env)
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.url, self.web, timeout=120)

    @staticmethod
    def _registered(version: str, accuracy: float) -> str:
        """A run with test metrics and a registered version of it, as train-model leaves them."""
        client = mlflow.MlflowClient()
        mlflow.set_experiment("dandelion")
        with mlflow.start_run() as run:
            mlflow.log_metrics({"test_accuracy": accuracy, "test_balanced_accuracy": accuracy})
        if version == "1":
            client.create_registered_model(MODEL_NAME)
        client.create_model_version(
            MODEL_NAME,
            f"runs:/{run.info.run_id}/model",
            run.info.run_id,
            tags={"dataset_version": f"d-{version}"},
        )
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
        return run.info.run_id

    @staticmethod
    def _suspected(db_url: str, store_url: str) -> None:
        """A catalog photo whose label the audit doubts, queued as train-model's audit queues it."""
        data = (DATASET / "dandelion" / "00000007.jpg").read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        store, key = open_store(store_url), raw_key("grass", sha256)
        store.put(key, data, "image/jpeg")
        engine = catalog.open_catalog(db_url)
        catalog.record(engine, SUSPECT_URL, "grass", status="ingested", sha256=sha256, url_s3=key)
        assert (
            queue_suspects(engine, [Suspect(key, sha256, "grass", "dandelion", 0.02, "train")], "run-a") == 1
        )

    def expected(self, path: Path) -> str:
        onnx_bytes, metadata = self.model
        classifier = OnnxClassifier(onnx_bytes, Preprocessing.from_dict(metadata))
        probabilities = classifier.classify([Image.open(path)])[0]
        return metadata["classes"][int(probabilities.argmax())]

    def close(self) -> None:
        stop(self.web)
        self.labels.stop()
        self.predict.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mlflow_service, pretrained_tiny_model) -> Iterator[Stack]:
    registry = mlflow.MlflowClient()
    if registry.search_registered_models(f"name = '{MODEL_NAME}'"):
        registry.delete_registered_model(MODEL_NAME)  # this module's two versions, and no other
    running = Stack(tmp_path_factory.mktemp("web"), pretrained_tiny_model)
    yield running
    running.close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, stack) -> Iterator[Page]:
    """One visitor's page for the whole module, as a person keeps the tab open."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    opened.goto(stack.url)
    yield opened
    context.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def add_images(page: Page, paths: list[Path]) -> None:
    page.get_by_role("tab", name="Classify").click()
    page.locator("input[type=file]").first.set_input_files([str(path) for path in paths])


def test_one_uploaded_image_is_classified(page: Page, stack: Stack) -> None:
    add_images(page, PHOTOS[:1])
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("#classify-message")).to_contain_text("classified 1 of 1 image.")
    expect(page.get_by_text(f"{stack.expected(PHOTOS[0])} ", exact=False).first).to_be_visible()
    expect(page.get_by_text("model 2").first).to_be_visible()


def test_a_batch_gives_a_table_and_a_csv(page: Page, stack: Stack) -> None:
    page.goto(stack.url)
    add_images(page, PHOTOS)
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("#classify-message")).to_contain_text("classified 3 of 3 images.")
    for path in PHOTOS:
        expect(page.get_by_role("gridcell", name=path.name)).to_be_visible()
    with page.expect_download() as download:
        page.locator("a[href$='dandelion-results.csv']").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [(row["image"], row["predicted_class"], row["model_version"]) for row in rows] == [
        (path.name, stack.expected(path), "2") for path in PHOTOS
    ]
    screenshot(page, "classify")


def test_a_correction_reaches_validate_label(page: Page, stack: Stack) -> None:
    # The results of the batch above are on the page; the first is selected.
    page.get_by_role("button", name="✗ This is wrong").click()
    expect(page.locator("#correct-message")).to_contain_text("waits for review (submission #2)")
    queued = requests.get(
        f"{stack.labels.url}/submissions/2", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ).json()
    said = stack.expected(PHOTOS[0])
    assert (queued["label"], queued["predicted_class"], queued["model_version"]) == (
        next(label for label in ("dandelion", "grass") if label != said),
        said,
        "2",
    )


def test_the_admin_signs_in_excludes_the_suspect_and_accepts_the_correction(page: Page, stack: Stack) -> None:
    page.get_by_role("tab", name="Review").click()
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in / refresh").click()
    expect(page.locator("#review-message")).to_contain_text("2 waiting")
    expect(
        page.get_by_text("#1 suspected label: labelled grass, the audit suggests dandelion (98%)").first
    ).to_be_visible()
    expect(page.get_by_text("#2 upload: sent as").first).to_be_visible()
    expect(page.locator("#retrain-status")).to_contain_text("3 more start the next retraining")
    screenshot(page, "review")
    page.get_by_role("button", name="Reject", exact=True).click()  # not how a suspect is decided
    expect(page.locator("#review-message")).to_contain_text("Not decided: a suspected label is decided by")
    page.get_by_role("button", name="Exclude", exact=True).click()  # the first item is selected
    expect(page.locator("#review-message")).to_contain_text("#1 excluded.")
    page.get_by_role("button", name="Accept", exact=True).click()
    expect(page.locator("#review-message")).to_contain_text("#2 accepted as")
    expect(page.locator("#retrain-status")).to_contain_text("1 more start the next retraining")
    assert catalog.get(catalog.open_catalog(stack.db_url), SUSPECT_URL)["status"] == "excluded"
    screenshot(page, "review-decided")


def test_the_model_tab_shows_the_champion_and_the_versions(page: Page) -> None:
    page.get_by_role("tab", name="Model").click()
    expect(page.locator("#champion")).to_contain_text("Model 2 serves")
    expect(page.locator("#champion")).to_contain_text("dataset d-2")
    expect(page.get_by_role("link", name="Grafana: the dashboards")).to_have_attribute(
        "href", "http://grafana.example:3000/dashboards"
    )
    expect(page.get_by_role("link", name="MLflow: the registered model")).to_be_visible()
    expect(page.locator("#champion")).to_contain_text("accuracy 0.9000")
    expect(page.get_by_role("img").filter(has_text="test_accuracy")).to_be_visible()
    screenshot(page, "model")


def test_the_named_api_classifies_and_corrects(stack: Stack) -> None:
    client = Client(stack.url, verbose=False)
    gallery = [{"image": handle_file(str(PHOTOS[1])), "caption": None}]
    _gallery, bars, _selected, rows, _csv, message = client.predict(gallery, api_name="/classify")
    assert message == "classified 1 of 1 image."
    assert rows["data"][0][:2] == [PHOTOS[1].name, stack.expected(PHOTOS[1])]
    assert bars["label"] == stack.expected(PHOTOS[1])
    said = client.predict(handle_file(str(PHOTOS[2])), "dandelion", "grass", 0.7, "2", api_name="/correct")
    assert said == f"Thank you: {PHOTOS[2].name} as dandelion waits for review (submission #3)."
    _queue, first, notice, _status = client.predict(TOKEN, api_name="/review_queue")
    assert (first, notice) == (3, "1 waiting; select one, then decide.")


def test_a_stopped_predict_is_a_message_not_a_crash(page: Page, stack: Stack) -> None:
    stack.predict.stop()
    page.goto(stack.url)
    add_images(page, PHOTOS[:1])
    page.get_by_role("button", name="Classify", exact=True).click()
    expect(page.locator("#classify-message")).to_contain_text(
        f"could not be: predict is not reachable at {stack.predict.url}: is it running?"
    )
    page.get_by_role("tab", name="Model").click()
    expect(page.locator("#champion")).to_contain_text("No model serves: predict is not reachable")
    screenshot(page, "predict-stopped")
