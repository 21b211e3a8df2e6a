import io
import struct
import zlib

import pytest
from PIL import Image

from functions.lib.errors import NotAnImage, TooLarge
from functions.lib.images import as_jpeg, open_checked
from functions.lib.preprocessing import Preprocessing


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_jpeg_is_kept_byte_for_byte() -> None:
    data = encode(Image.new("RGB", (20, 10), "yellow"), "JPEG")
    assert as_jpeg(data, 10_000) == data


@pytest.mark.parametrize(("mode", "fmt"), [("RGBA", "PNG"), ("P", "GIF"), ("L", "WEBP"), ("RGB", "BMP")])
def test_other_formats_become_rgb_jpeg(mode: str, fmt: str) -> None:
    converted = Image.open(io.BytesIO(as_jpeg(encode(Image.new(mode, (30, 20)), fmt), 10_000)))
    assert (converted.format, converted.mode, converted.size) == ("JPEG", "RGB", (30, 20))


def test_html_is_not_an_image() -> None:
    with pytest.raises(NotAnImage, match="not an image"):
        as_jpeg(b"<!doctype html><html></html>", 10_000)


def test_a_png_text_chunk_that_inflates_past_the_limit_is_refused() -> None:
    png = encode(Image.new("RGB", (4, 4)), "PNG")
    text = b"k\x00\x00" + zlib.compress(b"a" * (4 * 1024 * 1024))  # 4 MiB of text in 4 KiB
    chunk = struct.pack(">I", len(text)) + b"zTXt" + text + struct.pack(">I", zlib.crc32(b"zTXt" + text))
    with pytest.raises(NotAnImage, match="header is malformed: Decompressed data too large"):
        as_jpeg(png[:33] + chunk + png[33:], 10_000)


def test_truncated_jpeg_is_refused() -> None:
    data = encode(Image.effect_noise((200, 200), 50).convert("RGB"), "JPEG")
    with pytest.raises(NotAnImage, match="truncated or corrupt"):
        as_jpeg(data[: len(data) // 2], 1_000_000)


def test_truncated_jpeg_is_refused_when_decoded_at_reduced_scale() -> None:
    data = encode(Image.effect_noise((800, 800), 50).convert("RGB"), "JPEG")
    with pytest.raises(NotAnImage, match="truncated or corrupt"):
        open_checked(data[: len(data) // 2], 1_000_000, Preprocessing().draft)


def test_pixel_limit_is_checked_before_decoding() -> None:
    with pytest.raises(TooLarge, match="1200 pixels, over the 1000-pixel limit"):
        as_jpeg(encode(Image.new("RGB", (40, 30)), "PNG"), 1_000)


@pytest.mark.parametrize("size", [(70_000, 1), (1, 70_000)])
def test_a_side_longer_than_jpeg_holds_is_refused(size: tuple[int, int]) -> None:
    """Caught by the image fuzzing (test_fuzz_images.py): 70000 pixels pass the pixel limit, but JPEG
    cannot hold the side, and storing the image failed with a 500."""
    message = rf"^the image is {size[0]}x{size[1]}; a side may be at most 65500 pixels$"
    with pytest.raises(TooLarge, match=message):
        as_jpeg(encode(Image.new("RGB", size), "PNG"), 1_000_000)


def test_tiff_is_not_accepted() -> None:
    with pytest.raises(NotAnImage):
        as_jpeg(encode(Image.new("RGB", (4, 4)), "TIFF"), 1_000)
