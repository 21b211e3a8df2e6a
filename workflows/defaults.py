"""The workflows' defaults, written once. The Hera definitions render them as the Argo parameters'
values (so `platform/argo/*.yaml` shows them), and the steps and the training code fall back to them."""

from __future__ import annotations

# extract-images
INGEST_URL = "http://ingest-one-url.dandelion.svc.cluster.local/"  # the function's in-cluster address
EXTRACT_LIMIT = 0  # rows per run; 0 means every row not yet ingested
EXTRACT_PARALLELISM = 8  # ingest-one-url calls at once
MAX_FAILED_FRACTION = 0.1  # more failed rows than this fails the run

# train-model
EPOCHS = 45
SEED = 0
MIN_ACCURACY = 0.85  # the gate's floor on the frozen test split

# weekly-retrain: Mondays at 03:00 UTC
WEEKLY_SCHEDULE = "0 3 * * 1"

# Retraining on events: the alert (observability) that reports live quality dropped.
QUALITY_ALERT = "DandelionLiveQualityDrop"

# What every workflow runs as and in (platform/ defines both), and what the retrain Sensor runs as.
SERVICE_ACCOUNT = "dandelion-workflows"
# Each workflow's credentials (platform/README.md, "Secrets"): extract-images reads the catalog;
# train-model reads it, queues suspected labels and uses the store's training prefixes.
EXTRACT_CREDENTIALS = "dandelion-extract-images-secrets"
TRAIN_CREDENTIALS = "dandelion-train-model-secrets"
SENSOR_SERVICE_ACCOUNT = "dandelion-retrain-sensor"
IMAGE = "dandelion-workflows:latest"

# The workflows' parameters as Argo declares them (name -> default), shared by the CronWorkflow that
# runs both WorkflowTemplates.
EXTRACT_PARAMETERS = {
    "ingest-url": INGEST_URL,
    "limit": str(EXTRACT_LIMIT),
    "max-failed-fraction": str(MAX_FAILED_FRACTION),
}
TRAIN_PARAMETERS = {"epochs": str(EPOCHS), "seed": str(SEED), "min-accuracy": str(MIN_ACCURACY)}
