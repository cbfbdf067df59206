"""Every bad image is refused from its header with a message naming the problem."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from vigil_inference.images import (
    MAX_IMAGE_BYTES,
    InvalidImage,
    decode_rgb,
    inspect_image,
    to_model_input,
)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries almost no data: a bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg(size: tuple[int, int] = (128, 96)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_valid_png_and_jpeg_headers(png_image: Callable[..., bytes]) -> None:
    h = inspect_image(png_image(1), "image/png")
    assert (h.format, h.width, h.height) == ("PNG", 256, 256)
    j = inspect_image(_jpeg(), "")  # empty content type: sniffed
    assert (j.format, j.width, j.height) == ("JPEG", 128, 96)
    assert inspect_image(_jpeg(), "image/jpg").format == "JPEG"  # common alias


@pytest.mark.parametrize(
    ("data", "ctype", "message"),
    [
        (b"", "image/png", "empty"),
        (b"hello world, not an image", "", "not a PNG or JPEG"),
        (b"GIF89a" + b"\0" * 100, "image/gif", "unsupported content type 'image/gif'"),
        (_jpeg(), "image/png", "does not match the data, which is JPEG"),
        (b"\xff\xd8\xff" + b"\0" * (MAX_IMAGE_BYTES - 2), "image/jpeg", "over the limit"),
        (_png_header_only(32, 200), "image/png", "32x200 pixels; each side must be 64 to 4096"),
        (_png_header_only(5000, 100), "image/png", "each side must be 64 to 4096"),
        (_png_header_only(100_000, 100_000), "image/png", "too many pixels|each side"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "image/png", "cannot read the PNG header"),
    ],
    ids=[
        "empty",
        "not-image",
        "gif",
        "mislabelled",
        "too-large",
        "too-small",
        "too-wide",
        "bomb",
        "bad-header",
    ],
)
def test_bad_input_is_named(data: bytes, ctype: str, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        inspect_image(data, ctype)


def test_truncated_jpeg_is_refused_at_decode() -> None:
    data = _jpeg((512, 512))
    header = inspect_image(data[: len(data) // 2])  # the header is intact
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode_rgb(data[: len(data) // 2], header)


def test_model_input_is_resized_chw_uint8() -> None:
    data = _jpeg((300, 200))
    x = to_model_input(data, inspect_image(data), (224, 224))
    assert x.shape == (3, 224, 224) and x.dtype == np.uint8
    assert abs(int(x.mean()) - 128) <= 2
