"""Image decoding under hostile bytes (Hypothesis): random bytes, mutated real images and decompression
bombs in every format Pillow opens here (PNG, JPEG, GIF, WebP, BMP and TIFF, which is refused) end in
an image within the limits or in NotAnImage (415) / TooLarge (413), never in another exception, and
never cost more than the limits allow: the decoded pixels, and what preprocessing makes of them, stay
bounded, and each example stays within the profile's deadline (tests/conftest.py).

Every path an untrusted image takes is exercised: predict's (`open_checked` with the model's draft, then
`Preprocessing`), ingestion's and an accepted upload's (`as_jpeg`).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from functions.lib.errors import NotAnImage, TooLarge
from functions.lib.images import MAX_SIDE, as_jpeg, open_checked
from functions.lib.preprocessing import MAX_ASPECT, Preprocessing
from tests.support import DATASET

MAX_PIXELS = 1_000_000  # small, so that what an example may decode stays cheap; the logic is the same
PREP = Preprocessing()


def encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (48, 32), **options: object) -> bytes:
    """A real photo, shrunk to `size`, in `mode`, encoded as `fmt`."""
    photo = Image.open(DATASET / "dandelion" / "00000004.jpg").convert("RGB").resize(size)
    out = io.BytesIO()
    photo.convert(mode).save(out, format=fmt, **options)
    return out.getvalue()


@functools.cache
def seeds() -> dict[str, bytes]:
    """Valid images in every format and the modes and options that take different decoder paths."""
    return {
        "png-rgb": encoded("PNG"),
        "png-rgba": encoded("PNG", "RGBA"),
        "png-palette": encoded("PNG", "P"),
        "png-grey": encoded("PNG", "L"),
        "png-interlaced": encoded("PNG", interlace=1),
        "jpeg": encoded("JPEG"),
        "jpeg-progressive": encoded("JPEG", progressive=True),
        "jpeg-cmyk": encoded("JPEG", "CMYK"),
        "jpeg-grey": encoded("JPEG", "L"),
        "gif": encoded("GIF", "P"),
        "webp-lossy": encoded("WEBP"),
        "webp-lossless": encoded("WEBP", "RGBA", lossless=True),
        "bmp": encoded("BMP"),
        "bmp-palette": encoded("BMP", "L"),
        "tiff": encoded("TIFF"),
    }


def outcome(data: bytes) -> Image.Image | NotAnImage | TooLarge:
    """What every path does with `data`, checked against the limits; an exception of any other class
    fails the test, as it would be a 500 in a function."""
    try:
        image = open_checked(data, MAX_PIXELS, PREP.draft)
    except (NotAnImage, TooLarge) as refused:
        with pytest.raises(type(refused)):
            as_jpeg(data, MAX_PIXELS)  # ingestion refuses it alike
        return refused
    assert image.width * image.height <= MAX_PIXELS
    assert max(image.size) <= MAX_SIDE
    resized = PREP.resized(image)
    assert min(resized.size) == PREP.resize
    assert max(resized.size) <= MAX_ASPECT * PREP.resize + 1  # the longer side, rounded
    assert PREP(image).shape == (3, PREP.input_size, PREP.input_size)
    try:
        stored = as_jpeg(data, MAX_PIXELS)  # without the draft, it decodes differently: it may still refuse
    except (NotAnImage, TooLarge):
        return image
    assert Image.open(io.BytesIO(stored)).format == "JPEG"
    return image


@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    assert isinstance(outcome(data), NotAnImage)


# Each accepted format's signature, and TIFF's: the bytes that pick a decoder.
MAGIC = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"GIF87a",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"BM",
    b"II*\0",
]


@given(st.sampled_from(MAGIC), st.binary(max_size=4096))
def test_random_bytes_behind_a_real_signature(magic: bytes, rest: bytes) -> None:
    outcome(magic + rest)


# A mutation: overwrite a byte, insert bytes, delete a run, or cut the file short; positions wrap around.
MUTATION = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    out = bytearray(data)
    for kind, position, *argument in mutations:
        at = position % (len(out) + 1)
        if kind == "set" and at < len(out):
            out[at] = argument[0]
        elif kind == "insert":
            out[at:at] = argument[0]
        elif kind == "delete":
            del out[at : at + argument[0]]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


@given(st.sampled_from(sorted(seeds())), st.lists(MUTATION, min_size=1, max_size=8))
def test_mutated_images(seed: str, mutations: list[tuple]) -> None:
    result = outcome(mutate(seeds()[seed], mutations))
    if seed.startswith("tiff"):
        assert isinstance(result, NotAnImage)


# Decompression bombs: each format's header made to declare `width` x `height`, with the few bytes of
# pixel data of a small image behind it: what a bomb is to a decoder that trusts the header.


def _png(data: bytes, width: int, height: int) -> bytes:
    header = data[12:16] + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


def _gif(data: bytes, width: int, height: int) -> bytes:
    """The logical screen and the first frame both."""
    out = bytearray(data)
    out[6:10] = struct.pack("<HH", width, height)
    at = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # past the global colour table
    while out[at] == 0x21:  # extension blocks: label, then sub-blocks up to an empty one
        at += 2
        while out[at]:
            at += out[at] + 1
        at += 1
    out[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(out)


def _bmp(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def _jpeg(data: bytes, width: int, height: int) -> bytes:
    at = data.index(b"\xff\xc0")  # baseline start of frame: length, precision, height, width
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def _webp(data: bytes, width: int, height: int) -> bytes:
    assert data[12:16] == b"VP8 " and data[23:26] == b"\x9d\x01\x2a"  # lossy, after the start code
    return data[:26] + struct.pack("<HH", width, height) + data[30:]


def _tiff(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    directory = struct.unpack_from("<I", data, 4)[0]
    for n in range(struct.unpack_from("<H", data, directory)[0]):
        entry = directory + 2 + 12 * n
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<H" if kind == 3 else "<I", out, entry + 8, width if tag == 256 else height)
    return bytes(out)


# format -> (seed, header patch, the largest side its header can state)
BOMBS: dict[str, tuple[str, Callable[[bytes, int, int], bytes], int]] = {
    "PNG": ("png-rgb", _png, 2**31 - 1),
    "JPEG": ("jpeg", _jpeg, 2**16 - 1),
    "GIF": ("gif", _gif, 2**16 - 1),
    "WEBP": ("webp-lossy", _webp, 2**14 - 1),
    "BMP": ("bmp", _bmp, 2**31 - 1),
    "TIFF": ("tiff", _tiff, 2**16 - 1),
}


@st.composite
def bombs(draw: st.DrawFn) -> tuple[str, int, int]:
    """A format and the sides its header will state: mostly past the limits, sometimes just within."""
    fmt = draw(st.sampled_from(sorted(BOMBS)))
    largest = BOMBS[fmt][2]
    width = draw(st.integers(1, largest))
    height = draw(st.integers(1, largest) | st.integers(1, max(1, min(largest, MAX_PIXELS // width))))
    return fmt, width, height


@given(bombs())
def test_decompression_bombs_are_refused_from_the_header(bomb: tuple[str, int, int]) -> None:
    fmt, width, height = bomb
    seed, patch, _largest = BOMBS[fmt]
    result = outcome(patch(seeds()[seed], width, height))
    if fmt == "TIFF":
        assert isinstance(result, NotAnImage)
    elif width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        assert isinstance(result, TooLarge)


@given(st.integers(1, 300_000), st.integers(1, 8), st.sampled_from(["PNG", "BMP", "GIF"]))
def test_real_images_of_any_shape_within_the_pixel_limit(long: int, short: int, fmt: str) -> None:
    """Really encoded, not patched: a strip of any aspect ratio costs what its pixels cost, or is refused
    when a side is longer than the store's JPEG can hold."""
    size = (min(long, MAX_PIXELS // short, 2**16 - 1 if fmt == "GIF" else long), short)
    for width, height in (size, size[::-1]):
        out = io.BytesIO()
        Image.new("RGB", (width, height), "green").save(out, format=fmt)
        result = outcome(out.getvalue())
        assert isinstance(result, TooLarge if max(width, height) > MAX_SIDE else Image.Image)


PNG_TEXT_BOMB_SIZES = (1024, 1024 * 1024 + 1, 16 * 1024 * 1024)


@functools.cache
def _compressed_zeros(size: int) -> bytes:
    return zlib.compress(bytes(size), 9)


@given(st.sampled_from([b"zTXt", b"iTXt", b"iCCP"]), st.sampled_from(PNG_TEXT_BOMB_SIZES), st.integers(0, 1))
def test_png_ancillary_chunks_that_inflate(kind: bytes, size: int, position: int) -> None:
    """Compressed text and ICC profiles are inflated while the header is read, before any pixel check."""
    payload = {b"zTXt": b"k\x00\x00", b"iTXt": b"k\x00\x01\x00\x00\x00", b"iCCP": b"p\x00\x00"}[kind]
    body = payload + _compressed_zeros(size)
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = seeds()["png-rgb"]
    at = 33 if position == 0 else png.index(b"IDAT") - 4  # right after IHDR, or right before the pixels
    result = outcome(png[:at] + chunk + png[at:])
    if size > 1024 * 1024:  # Pillow's own cap on what one chunk may inflate to
        assert isinstance(result, NotAnImage)
