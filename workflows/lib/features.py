"""The pretrained backbone's features, cached in the object store: computed once per image and backbone,
so a retraining after new labels computes only the new images' and fits its head in seconds."""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from functions.lib.layout import feature_key, features_prefix
from functions.lib.store import ObjectStore
from workflows.lib import dataset, pretrained

CHUNK = 256


@dataclass(frozen=True)
class Features:
    values: np.ndarray  # (N, 1280) float32, in the order of the examples asked for
    computed: int  # how many were not in the cache
    cached: int


def _encode(vector: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, vector.astype(np.float32), allow_pickle=False)
    return out.getvalue()


def _decode(data: bytes) -> np.ndarray:
    vector = np.load(io.BytesIO(data), allow_pickle=False)
    if vector.shape != (pretrained.FEATURES,):
        raise ValueError(f"a cached feature vector has shape {vector.shape}")
    return vector


def features(store: ObjectStore, examples: Sequence[dataset.Example]) -> Features:
    """The pretrained backbone's features of `examples`, from the cache where it has them."""
    backbone = pretrained.identity()
    have = set(store.keys(features_prefix(backbone)))  # one listing instead of a request per image
    missing = [e for e in examples if feature_key(backbone, e.sha256) not in have]
    prep = pretrained.PREPROCESSING

    def put(example: dataset.Example, vector: np.ndarray) -> None:
        store.put(feature_key(backbone, example.sha256), _encode(vector), "application/octet-stream")

    with ThreadPoolExecutor(8) as pool:  # the store's round trips overlap
        for start in range(0, len(missing), CHUNK):  # a chunk of images in memory at a time
            part = missing[start : start + CHUNK]
            images, _ = dataset.load_images(store, part, prep)
            computed = pretrained.features(np.stack([prep.normalise(prep.centre_crop(i)) for i in images]))
            list(pool.map(put, part, computed))
        vectors = list(pool.map(lambda e: _decode(store.get(feature_key(backbone, e.sha256))), examples))
    values = np.stack(vectors) if vectors else np.zeros((0, pretrained.FEATURES), np.float32)
    return Features(values, computed=len(missing), cached=len(examples) - len(missing))
