"""Checking that bytes are an image, before anything trusts them."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError

from functions.lib.errors import NotAnImage, TooLarge

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MAX_SIDE = 65_500  # JPEG's limit: every image kept is stored as JPEG, so a longer side could not be


def open_checked(
    data: bytes, max_pixels: int, draft: Callable[[Image.Image], None] | None = None
) -> Image.Image:
    """Decode `data` fully, refusing non-images, unaccepted formats, truncation and decompression bombs.

    The pixel count and the sides are checked from the header, before any pixel is decoded; `draft` (the
    model's `Preprocessing.draft`) may then choose a reduced decoding scale.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise NotAnImage(f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"the image has too many pixels ({exc})") from None
    except (ValueError, OSError, SyntaxError) as exc:  # a header Pillow refuses: e.g. a text chunk bomb
        raise NotAnImage(f"the image's header is malformed: {exc}") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise TooLarge(f"the image has {pixels} pixels, over the {max_pixels}-pixel limit")
    if max(image.size) > MAX_SIDE:
        raise TooLarge(f"the image is {image.width}x{image.height}; a side may be at most {MAX_SIDE} pixels")
    if draft:
        draft(image)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"the image is truncated or corrupt: {exc}") from None
    return image


def as_jpeg(data: bytes, max_pixels: int) -> bytes:
    """JPEG bytes as they are; any other accepted format re-encoded (RGB, quality 95), so keys end .jpg."""
    image = open_checked(data, max_pixels)
    if image.format == "JPEG":
        return data
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()
