"""Training, for either backbone, to one calibrated ONNX model.

`efficientnet-lite0` (the default): the pretrained trunk stays frozen and a logistic-regression head is
fitted on its cached features (`workflows.lib.pretrained`, `workflows.lib.features`). `scratch`: a compact
CNN trained end to end, its images going through `functions.lib.preprocessing` exactly as serving feeds
them, with random augmentation in place of the centre crop. Either way a temperature fitted on held-out
logits (see `fit`) divides the logits inside the exported graph (`workflows.lib.calibration`).
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from functions.lib.preprocessing import Preprocessing
from functions.lib.store import ObjectStore
from workflows import defaults
from workflows.lib import calibration, dataset, features, pretrained

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = defaults.EPOCHS
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    width: int = 32
    seed: int = defaults.SEED
    precision: str = "auto"  # "auto", "float32" or "bfloat16"

    def __post_init__(self) -> None:
        if self.precision not in ("auto", *PRECISIONS):
            raise ValueError(f"precision must be auto or one of {sorted(PRECISIONS)}, not {self.precision!r}")

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class DandelionNet(nn.Module):
    """Four conv stages (stride-2 stem, then pooled pairs), global average pooling, a linear head."""

    def __init__(self, classes: int = 2, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            *_block(w, w),
            nn.MaxPool2d(2),
            *_block(w, 2 * w),
            *_block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
            *_block(4 * w, 4 * w),
            nn.MaxPool2d(2),
            *_block(4 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8 * w, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_computes_bfloat16(cpuinfo: str) -> bool:
    """Whether the CPU flags (Linux's /proc/cpuinfo) include AVX512-BF16 or AMX-BF16. Read from the
    kernel, because torch answers this only through private functions."""
    return bool(re.search(r"^flags\s*:.*\b(avx512_bf16|amx_bf16)\b", cpuinfo, re.MULTILINE))


def compute_dtype(precision: str) -> torch.dtype:
    """bfloat16 only where the hardware computes it natively (CUDA, or a CPU with AVX512-BF16 or AMX): there
    it more than halves the training time; elsewhere it would be emulated and gain nothing."""
    if precision != "auto":
        return PRECISIONS[precision]
    if torch.cuda.is_available():
        native = torch.cuda.is_bf16_supported()
    else:
        cpuinfo = Path("/proc/cpuinfo")
        native = cpuinfo.is_file() and cpu_computes_bfloat16(cpuinfo.read_text())
    return torch.bfloat16 if native else torch.float32


def augmentation(prep: Preprocessing) -> Callable[[Image.Image], Image.Image]:
    """Random crops, flips and mild brightness, contrast and saturation changes. Hue stays: yellow against
    green is the signal, and Pillow's hue shift alone took over a third of the time spent augmenting."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(prep.input_size, scale=(0.45, 1.0), ratio=(0.8, 1.25)),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2),
        ]
    )


def batches(arrays: np.ndarray, labels: np.ndarray, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (torch.from_numpy(arrays[i : i + size]), torch.from_numpy(labels[i : i + size]))
        for i in range(0, len(arrays), size)
    ]


def evaluate_loss(
    model: nn.Module, arrays: np.ndarray, labels: np.ndarray, loss_fn: nn.Module
) -> tuple[float, float]:
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for x, y in batches(arrays, labels, 128):
            logits = model(x.to(device()))
            total_loss += loss_fn(logits, y.to(device())).item() * len(y)
            correct += int((logits.argmax(1).cpu() == y).sum())
    return total_loss / len(labels), correct / len(labels)


def train(
    config: TrainConfig,
    prep: Preprocessing,
    train_images: Sequence[Image.Image],
    train_labels: Sequence[int],
    val_images: Sequence[Image.Image],
    val_labels: Sequence[int],
    on_epoch: Callable[[int, dict[str, float]], None],
) -> DandelionNet:
    """Train from scratch; `train_images` are already `prep.resized`. Reports metrics after each epoch."""
    seed_everything(config.seed)
    model = DandelionNet(len(prep.classes), config.width).to(device()).to(memory_format=torch.channels_last)
    dtype = compute_dtype(config.precision)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps = config.epochs * -(-len(train_images) // config.batch_size)  # ceil: the last batch is partial
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    augment = augmentation(prep)
    y_train = np.asarray(train_labels, dtype=np.int64)
    # Validation sees images exactly as serving will: centre crop, no augmentation.
    x_val = (
        np.stack([prep.normalise(prep.centre_crop(image)) for image in val_images]) if val_images else None
    )
    y_val = np.asarray(val_labels, dtype=np.int64)
    order = np.random.default_rng(config.seed)  # its own generator: the epoch order depends on the seed only
    for epoch in range(config.epochs):
        model.train()
        permutation = order.permutation(len(train_images))
        # A fresh augmentation of every image each epoch, normalised by the one shared function.
        x_epoch = np.stack([prep.normalise(augment(train_images[i])) for i in permutation])
        seen_loss, correct = 0.0, 0
        for x, y in batches(x_epoch, y_train[permutation], config.batch_size):
            x, y = x.to(device(), memory_format=torch.channels_last), y.to(device())
            with torch.autocast(device().type, dtype=dtype, enabled=dtype != torch.float32):
                logits = model(x)
                loss = loss_fn(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            seen_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
        metrics = {"train_loss": seen_loss / len(y_train), "train_accuracy": correct / len(y_train)}
        if x_val is not None:
            metrics["val_loss"], metrics["val_accuracy"] = evaluate_loss(model, x_val, y_val, loss_fn)
        on_epoch(epoch, metrics)
    # Back to the default layout for the export: ONNX Runtime gets plain NCHW weights.
    return model.cpu().to(memory_format=torch.contiguous_format).eval()


class Scaled(nn.Module):
    """A model whose logits are divided by a temperature: calibration inside the exported graph."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images) / self.temperature


@dataclass(frozen=True)
class Fitted:
    """A trained, calibrated model, and what the run logs of it."""

    onnx_bytes: bytes
    prep: Preprocessing
    num_parameters: int
    temperature: float
    calibrated_on: str  # the held-out logits the temperature was fitted on
    metrics: dict[str, float]  # the calibration's accuracy and error before and after it; the cache's use
    weights: dict[str, torch.Tensor]  # what MLflow keeps: the whole state dict, or the head's


def _calibrate(logits: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, float]]:
    """The temperature fitted on held-out logits, and their accuracy and calibration error before and
    after it."""
    temperature = calibration.fit_temperature(logits, labels)
    before = calibration.expected_calibration_error(calibration.calibrated(logits, 1.0), labels)
    after = calibration.expected_calibration_error(calibration.calibrated(logits, temperature), labels)
    accuracy = float((logits.argmax(axis=1) == labels).mean()) if len(labels) else 0.0
    return temperature, {
        "calibration_accuracy": accuracy,
        "calibration_ece_before": before,
        "calibration_ece_after": after,
        "calibration_images": float(len(labels)),
    }


def fit(
    backbone: str,
    config: TrainConfig,
    store: ObjectStore,
    examples: Sequence[dataset.Example],
    on_epoch: Callable[[int, dict[str, float]], None],
) -> Fitted:
    """Train, calibrate and export; the test split is never touched. The scratch CNN trains on the train
    split, watched and calibrated on the validation split. The pretrained backbone's head needs no
    watching: it is fitted on the train and validation splits together, and calibrated on out-of-fold
    logits of the same images, because a validation split of some forty photos that the head classifies
    without an error drives the fitted temperature to its bound (confidence near 1 for everything)."""
    train_set, val_set = dataset.split(list(examples), "train"), dataset.split(list(examples), "val")
    if backbone == "scratch":
        prep = Preprocessing()
        val_images, val_labels = dataset.load_images(store, val_set, prep)
        model = train(
            config, prep, *dataset.load_images(store, train_set, prep), val_images, val_labels, on_epoch
        )
        logits = np.zeros((0, len(prep.classes)), np.float32)
        if val_images:
            batch = np.stack([prep.normalise(prep.centre_crop(image)) for image in val_images])
            with torch.no_grad():
                logits = model(torch.from_numpy(batch)).numpy()
        temperature, metrics = _calibrate(logits, np.asarray(val_labels))
        exported = export_onnx(Scaled(model, temperature), prep)
        return Fitted(
            exported, prep, parameter_count(model), temperature, "validation", metrics, model.state_dict()
        )
    prep = pretrained.PREPROCESSING
    fit_set = train_set + val_set
    got = features.features(store, fit_set)
    labels = np.array([prep.classes.index(e.label) for e in fit_set])
    weight, bias = pretrained.fit_head(got.values, labels, len(prep.classes), config.seed)
    logits = got.values @ weight.T + bias
    on_epoch(
        0,
        {
            "train_loss": calibration.nll(logits, labels),
            "train_accuracy": float((logits.argmax(1) == labels).mean()),
        },
    )
    held_out = pretrained.out_of_fold(got.values, labels, config.seed)
    if held_out is None:  # too few images of a class to hold any out: no calibration
        held_out, labels = np.zeros((0, len(prep.classes))), np.zeros(0, dtype=int)
    # Log-probabilities are logits up to a per-row constant, which a softmax ignores.
    temperature, metrics = _calibrate(np.log(np.clip(held_out, 1e-12, 1.0)), labels)
    metrics |= {"features_computed": got.computed, "features_cached": got.cached}
    classifier = pretrained.Classifier(weight / temperature, bias / temperature)
    head = {name: tensor for name, tensor in classifier.state_dict().items() if name.startswith("head.")}
    exported = export_onnx(classifier, prep)
    calibrated_on = f"train+validation, {pretrained.FOLDS}-fold out-of-fold"
    return Fitted(exported, prep, parameter_count(classifier), temperature, calibrated_on, metrics, head)


def export_onnx(model: nn.Module, prep: Preprocessing) -> bytes:
    """ONNX with a dynamic batch axis, input `image` (N, 3, H, W), output `logits` (N, classes)."""
    example = torch.zeros(1, 3, prep.input_size, prep.input_size)
    out = io.BytesIO()
    torch.onnx.export(
        model.cpu().eval(),
        (example,),
        out,  # type: ignore[arg-type]  # the TorchScript exporter writes to any binary file object
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return out.getvalue()
