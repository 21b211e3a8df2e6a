"""The label audit: which images of the catalog look mislabelled. Out-of-fold probabilities for every image
come from k-fold cross-validation of the pretrained backbone's head on the cached features (each image is
judged by a head that never saw it), and cleanlab's confident learning picks the label issues from them.

The audit uses the pretrained features whatever backbone trains: it is a check of the data, and k CNNs
trained from scratch would cost minutes where k logistic regressions cost a second. It only suggests;
`functions.lib.submissions.queue_suspects` puts the suspects before an admin, who decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from sqlalchemy import Engine

from functions.lib.store import ObjectStore
from functions.lib.submissions import Suspect, queue_suspects
from workflows.lib import dataset, features, pretrained


@dataclass(frozen=True)
class Audit:
    suspects: list[Suspect]  # the most doubtful first
    examples: int
    features_computed: int  # the rest came from the cache


def audit(store: ObjectStore, examples: Sequence[dataset.Example], seed: int) -> Audit:
    """Every example's label judged against the others'; the suspects ranked by self-confidence (the
    out-of-fold probability of the label it has), lowest first."""
    classes = pretrained.PREPROCESSING.classes
    got = features.features(store, examples)
    labels = np.array([classes.index(e.label) for e in examples])
    probabilities = pretrained.out_of_fold(got.values, labels, seed)
    if probabilities is None:
        return Audit([], len(examples), got.computed)
    ranked = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    suspects = [
        Suspect(
            key=examples[i].key,
            sha256=examples[i].sha256,
            given=examples[i].label,
            suggested=classes[int(probabilities[i].argmax())],
            self_confidence=float(probabilities[i, labels[i]]),
            split=examples[i].split,
        )
        for i in ranked
    ]
    return Audit(suspects, len(examples), got.computed)


def review(
    engine: Engine, store: ObjectStore, dataset_version: str, run_id: str, seed: int
) -> tuple[Audit, int]:
    """Audit a dataset version, log the suspects to the MLflow run `run_id`, queue them for an admin;
    returns the audit and how many suspects were new to the queue."""
    from workflows.lib import tracking

    result = audit(store, dataset.load(store, dataset_version), seed)
    queued = queue_suspects(engine, result.suspects, run_id)
    counts = {
        "audit_examples": result.examples,
        "audit_suspects": len(result.suspects),
        "audit_queued": queued,
        "audit_features_computed": result.features_computed,
    }
    tracking.log_audit(run_id, result.suspects, counts)
    return result, queued
