"""The predict container the image tests share: model 1 promoted into a store folder, mounted read-only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.images.containers import Container, pod_environment, readable
from tests.support import publish_model


@pytest.fixture(scope="package")
def predict(tmp_path_factory: pytest.TempPathFactory, tiny_models: list) -> Iterator[Container]:
    """predict serving from a store folder where model 1 was promoted as promotion does it."""
    objects = tmp_path_factory.mktemp("predict-image") / "objects"
    publish_model(objects.as_uri(), "1", tiny_models[0])
    env = pod_environment(DANDELION_STORE_URL="file:///store", DANDELION_INFERENCE_THREADS="2")
    container = Container("predict", env, mounts=[(readable(objects), "/store", "ro")])
    yield container
    container.stop()
