"""The web app's image as its Knative revision runs it: the page loads in headless Chromium and classifies
a real photo through the predict container (tests/images/conftest.py); `gradio_client` gets the same
answer through the named API."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from gradio_client import Client, handle_file
from playwright.sync_api import expect, sync_playwright

from tests.browser.test_web import CHROMIUM, CHROMIUM_FLAGS, PHOTOS, TIMEOUT_MS, add_images
from tests.images.containers import Container, pod_environment
from tests.integration.test_predict_function import expected
from workflows.local.processes import free_port

pytestmark = [pytest.mark.images, pytest.mark.browser]


@pytest.fixture(scope="module")
def web(predict: Container) -> Iterator[Container]:
    env = pod_environment(
        DANDELION_PREDICT_URL=predict.url,
        DANDELION_LABELS_URL=f"http://127.0.0.1:{free_port()}",  # nobody: classifying does not need it
    )
    container = Container("web", env, ready="/")
    yield container
    container.stop()


def expected_class(model: tuple[bytes, dict], photo: int) -> str:
    probabilities = expected(model, PHOTOS[photo].read_bytes())
    return model[1]["classes"][int(np.argmax(probabilities))]


def test_the_page_classifies_a_photo_through_the_predict_container(web: Container, tiny_models: list) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(web.url)
            add_images(page, PHOTOS[:1])
            page.get_by_role("button", name="Classify", exact=True).click()
            expect(page.locator("#classify-message")).to_contain_text("classified 1 of 1 image.")
            expect(
                page.get_by_text(f"{expected_class(tiny_models[0], 0)} ", exact=False).first
            ).to_be_visible()
            expect(page.get_by_text("model 1").first).to_be_visible()
        finally:
            browser.close()


def test_the_named_api_classifies_through_the_predict_container(web: Container, tiny_models: list) -> None:
    client = Client(web.url, verbose=False)
    gallery = [{"image": handle_file(str(PHOTOS[1])), "caption": None}]
    _gallery, bars, _selected, rows, _csv, message = client.predict(gallery, api_name="/classify")
    assert message == "classified 1 of 1 image."
    assert rows["data"][0][:2] == [PHOTOS[1].name, expected_class(tiny_models[0], 1)]
    assert bars["label"] == expected_class(tiny_models[0], 1)
