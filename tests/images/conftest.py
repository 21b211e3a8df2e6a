"""The containers the image tests share: predict on model 1 promoted into a store folder mounted
read-only, and ingest-one-url on MariaDB and moto S3 reading the loopback mirror."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from functions.lib.catalog import CANONICAL_PREFIX
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


@pytest.fixture
def ingest(mysql_url: str, s3_url: str, source: str) -> Iterator[Container]:
    """ingest-one-url, which extraction's steps call, reading the sources from the loopback mirror."""
    env = pod_environment(
        DANDELION_DB_URL=mysql_url,
        DANDELION_STORE_URL=s3_url,
        DANDELION_SOURCE_MIRROR=f"{CANONICAL_PREFIX}={source}/",
        DANDELION_ALLOW_PRIVATE_URLS="1",
    )
    container = Container("ingest-one-url", env)
    yield container
    container.stop()
