from pathlib import Path

import pytest

from functions.lib.config import Settings
from functions.lib.errors import ConfigError


def test_embedded_defaults_live_under_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"DANDELION_HOME": str(tmp_path)})
    assert settings.db_url == f"sqlite:///{tmp_path}/catalog.db"
    assert settings.store_url == f"file://{tmp_path}/objects"
    assert settings.ingest_url == "http://127.0.0.1:8082/"
    assert settings.allow_private_urls is False
    assert settings.max_download_bytes == 10 * 1024 * 1024
    assert settings.predict_url == "http://127.0.0.1:8081"
    assert settings.model_version is None
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.model_poll_seconds == 10.0
    assert settings.inference_threads == 2
    assert settings.backbone == "efficientnet-lite0"
    assert Settings.from_env({"DANDELION_BACKBONE": "scratch"}).backbone == "scratch"


def test_mirror_rewrites_only_its_prefix() -> None:
    settings = Settings.from_env({"DANDELION_SOURCE_MIRROR": "https://a.example/data/=http://127.0.0.1:9/"})
    assert settings.rewrite_source("https://a.example/data/grass/1.jpg") == "http://127.0.0.1:9/grass/1.jpg"
    assert settings.rewrite_source("https://b.example/data/x.jpg") == "https://b.example/data/x.jpg"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DANDELION_SOURCE_MIRROR": "no-equals-sign"}, "PREFIX=REPLACEMENT"),
        ({"DANDELION_MAX_DOWNLOAD_BYTES": "ten"}, "whole number"),
        ({"DANDELION_MAX_DOWNLOAD_BYTES": "0"}, "must be positive"),
        ({"DANDELION_MAX_UPLOAD_BYTES": "1.5"}, "DANDELION_MAX_UPLOAD_BYTES must be a whole number"),
        ({"DANDELION_MODEL_POLL_SECONDS": "soon"}, "must be a number of seconds"),
        ({"DANDELION_MODEL_POLL_SECONDS": "-1"}, "must be positive"),
        ({"DANDELION_BACKBONE": "resnet50"}, "DANDELION_BACKBONE must be one of efficientnet-lite0, scratch"),
    ],
)
def test_bad_environment_is_reported_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("", False), ("0", False)])
def test_allow_private_urls_flag(value: str, expected: bool) -> None:
    assert Settings.from_env({"DANDELION_ALLOW_PRIVATE_URLS": value}).allow_private_urls is expected
