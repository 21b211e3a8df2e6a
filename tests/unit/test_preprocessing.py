"""Training and serving feed the model the same tensor for the same image."""

import io

import numpy as np
import pytest
from PIL import Image

from functions.lib.images import open_checked
from functions.lib.preprocessing import Preprocessing
from tests.conftest import DATASET


def images() -> list[Image.Image]:
    photo = Image.open(DATASET / "dandelion" / "00000004.jpg")
    png = io.BytesIO()
    photo.convert("RGBA").save(png, format="PNG")
    return [
        photo,
        photo.convert("L"),
        Image.open(io.BytesIO(png.getvalue())),
        photo.convert("P"),
        Image.new("RGB", (10, 10), "yellow"),
        Image.new("RGB", (4000, 300), "green"),
    ]


@pytest.mark.parametrize("image", images(), ids=["rgb", "grey", "rgba-png", "palette", "tiny", "wide"])
def test_the_training_evaluation_path_and_the_serving_path_give_the_same_tensor(image: Image.Image) -> None:
    prep = Preprocessing()
    resized_once = prep.resized(image)  # training resizes once, when it loads the split
    training = prep.normalise(prep.centre_crop(resized_once))
    serving = prep(image)
    assert serving.shape == (3, prep.input_size, prep.input_size)
    assert serving.dtype == np.float32
    assert serving.flags.c_contiguous  # as onnxruntime takes it without a copy
    assert np.array_equal(training, serving)


def test_a_large_jpeg_is_decoded_at_reduced_scale_alike_in_training_and_serving() -> None:
    prep = Preprocessing()
    large = io.BytesIO()
    Image.open(DATASET / "dandelion" / "00000004.jpg").resize((1200, 900)).save(large, format="JPEG")
    served = open_checked(large.getvalue(), 10**8, prep.draft)
    assert served.size == (300, 225)  # 1/4 scale: 1/8 would leave the shorter side under 144
    training = prep.resized(Image.open(large))  # training loads the stored bytes the same way
    assert np.array_equal(prep(served), prep.normalise(prep.centre_crop(training)))


def test_normalisation_uses_the_saved_mean_and_std() -> None:
    prep = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    array = prep(Image.new("RGB", (200, 150), (255, 0, 51)))
    assert np.allclose(array[:, 0, 0], [(1 - 0.5) / 0.25, (0 - 0.5) / 0.5, (0.2 - 0.5) / 1.0])


def test_the_metadata_round_trip_rebuilds_the_same_preprocessing() -> None:
    prep = Preprocessing(input_size=96, resize=110)
    assert Preprocessing.from_dict(prep.to_dict()) == prep


def test_a_strip_keeps_its_centre_before_it_is_resized() -> None:
    """Caught by the image fuzzing (test_fuzz_images.py): a 20000 x 2 image, 40 kB of pixels, was resized
    to 1440000 x 144 (600 MB) before the centre crop; 200000 x 2 took a minute and 6 GB."""
    prep = Preprocessing()
    strip = Image.new("RGB", (20_000, 2), "green")
    strip.paste("yellow", (9_990, 0, 10_010, 2))  # its centre, 20 x 2: all the crop keeps
    assert prep.resized(strip).size == (10 * prep.resize, prep.resize)
    assert np.array_equal(prep(strip), prep(Image.new("RGB", (20, 2), "yellow")))
