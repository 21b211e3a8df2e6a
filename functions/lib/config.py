"""One typed settings object, built from the environment on demand (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.lib.errors import ConfigError

MiB = 1024 * 1024
BACKBONES = ("efficientnet-lite0", "scratch")

DEFAULT_PORTS = {
    "predict": 8081,
    "ingest-one-url": 8082,
    "validate-label": 8083,
    "web": 7860,
    "mlflow": 5000,
    "retrain-webhook": 12000,  # as Argo Events' webhook EventSource listens in the cluster
    "prometheus": 9090,
    "alertmanager": 9093,
    "workflow-metrics": 9102,  # the local runner's workflow metrics (Argo's controller in the cluster)
}


@dataclass(frozen=True)
class Settings:
    """Everything a Dandelion process reads from its environment (DESIGN.md, Configuration)."""

    home: Path
    db_url: str
    store_url: str
    source_mirror: tuple[str, str] | None
    allow_private_urls: bool
    ingest_url: str
    predict_url: str
    labels_url: str
    retrain_webhook: str
    admin_token: str | None = None  # unset: the admin routes refuse everything
    # Where the web app reads the registry (MLflow's own variable) and what it links to, when set.
    mlflow_url: str | None = None
    argo_url: str | None = None
    grafana_url: str | None = None
    backbone: str = "efficientnet-lite0"  # what training starts from: a pretrained network, or scratch
    retrain_min_new_labels: int = 10
    outbox_retry_seconds: float = 30.0
    model_version: str | None = None  # set: predict serves this version only (a pinned Knative revision)
    max_upload_bytes: int = 10 * MiB
    model_poll_seconds: float = 10.0
    inference_threads: int = 2  # two cores here; one inference must not take a third core's worth
    max_download_bytes: int = 10 * MiB
    max_image_pixels: int = 40_000_000  # a 12-megapixel phone photo passes, a decompression bomb does not
    max_images_per_request: int = 32  # predict: what one request may ask to classify
    # The local runner's fork server imports these once, so that each step's process starts with them
    # (faster steps; the fork server then keeps them resident). Empty: each step imports its own.
    step_preload: tuple[str, ...] = ()
    # Bounds on what one ingestion may cost, whatever the source does (not configurable on purpose).
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    download_deadline: float = 60.0
    max_redirects: int = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("DANDELION_HOME") or ".dandelion").resolve()
        return cls(
            home=home,
            db_url=env.get("DANDELION_DB_URL") or f"sqlite:///{home / 'catalog.db'}",
            store_url=env.get("DANDELION_STORE_URL") or (home / "objects").as_uri(),
            source_mirror=_mirror(env.get("DANDELION_SOURCE_MIRROR")),
            allow_private_urls=_flag(env.get("DANDELION_ALLOW_PRIVATE_URLS")),
            ingest_url=env.get("DANDELION_INGEST_URL")
            or f"http://127.0.0.1:{DEFAULT_PORTS['ingest-one-url']}/",
            predict_url=env.get("DANDELION_PREDICT_URL") or f"http://127.0.0.1:{DEFAULT_PORTS['predict']}",
            labels_url=env.get("DANDELION_LABELS_URL")
            or f"http://127.0.0.1:{DEFAULT_PORTS['validate-label']}",
            retrain_webhook=env.get("DANDELION_RETRAIN_WEBHOOK")
            or f"http://127.0.0.1:{DEFAULT_PORTS['retrain-webhook']}/retrain",
            admin_token=env.get("DANDELION_ADMIN_TOKEN") or None,
            mlflow_url=env.get("MLFLOW_TRACKING_URI") or None,
            argo_url=env.get("DANDELION_ARGO_URL") or None,
            grafana_url=env.get("DANDELION_GRAFANA_URL") or None,
            backbone=_choice(env, "DANDELION_BACKBONE", BACKBONES, cls.backbone),
            retrain_min_new_labels=_positive_int(
                env, "DANDELION_RETRAIN_MIN_NEW_LABELS", cls.retrain_min_new_labels
            ),
            outbox_retry_seconds=_positive_float(
                env, "DANDELION_OUTBOX_RETRY_SECONDS", cls.outbox_retry_seconds
            ),
            model_version=env.get("DANDELION_MODEL_VERSION") or None,
            max_upload_bytes=_positive_int(env, "DANDELION_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            model_poll_seconds=_positive_float(env, "DANDELION_MODEL_POLL_SECONDS", cls.model_poll_seconds),
            inference_threads=_positive_int(env, "DANDELION_INFERENCE_THREADS", cls.inference_threads),
            max_download_bytes=_positive_int(env, "DANDELION_MAX_DOWNLOAD_BYTES", cls.max_download_bytes),
            max_image_pixels=_positive_int(env, "DANDELION_MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_images_per_request=_positive_int(
                env, "DANDELION_MAX_IMAGES_PER_REQUEST", cls.max_images_per_request
            ),
            step_preload=tuple(m for m in (env.get("DANDELION_STEP_PRELOAD") or "").split(",") if m),
        )

    def rewrite_source(self, url: str) -> str:
        """Apply DANDELION_SOURCE_MIRROR: the catalog keeps canonical URLs, downloads use the mirror."""
        if self.source_mirror and url.startswith(self.source_mirror[0]):
            return self.source_mirror[1] + url[len(self.source_mirror[0]) :]
        return url


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _mirror(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    prefix, sep, replacement = value.partition("=")
    if not sep or not prefix or not replacement:
        raise ConfigError(f"DANDELION_SOURCE_MIRROR must be PREFIX=REPLACEMENT, got {value!r}")
    return prefix, replacement


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _positive(env: Mapping[str, str], name: str, default: float, kind: type, what: str) -> Any:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    return _positive(env, name, default, int, "a whole number")


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    return _positive(env, name, default, float, "a number of seconds")
