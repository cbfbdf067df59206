"""Strict decoding: every kind of damaged pixel data is refused by name, and
every whole image decodes to exactly the pixels Pillow gives it."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.damaged_images import (
    DAMAGE,
    build_png,
    encode,
    pixels,
    png_chunks,
    png_header_promises_more_rows,
    png_missing_rows,
)
from vigil_inference.decoders import png_data_bytes, verified_png
from vigil_inference.images import InvalidImage, decode_rgb, inspect_image, to_model_input


def pillow_rgb(data: bytes, draft: tuple[int, int] | None = None) -> np.ndarray:
    """What Pillow alone decodes (the pixels models were trained on)."""
    with Image.open(io.BytesIO(data)) as img:
        if draft is not None:
            img.draft("RGB", draft)
        img.load()
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_pixel_data_is_refused_by_name(case: str) -> None:
    make, words = DAMAGE[case]
    data = make()
    header = inspect_image(data)  # the header is sound: only decoding can tell
    with pytest.raises(InvalidImage, match="truncated or corrupt") as refused:
        decode_rgb(data, header)
    assert words in str(refused.value)
    with pytest.raises(InvalidImage):
        to_model_input(data, header, (224, 224))


def test_pillow_alone_scores_missing_rows_as_black() -> None:
    """The reason for decoders.py: if Pillow ever refuses this itself, the
    workaround there can go."""
    half = pillow_rgb(png_missing_rows())
    assert half.shape == (256, 256, 3)
    assert half[:128].mean() > 50
    assert half[128:].max() == 0
    tall = pillow_rgb(png_header_promises_more_rows())
    assert tall.shape == (2048, 256, 3) and tall[256:].max() == 0


def _interlaced_png(image: np.ndarray) -> bytes:
    """Adam7 by hand (Pillow cannot write it): each pass's rows, filter 0."""
    h, w = image.shape[:2]
    raw = b""
    for x, y, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                         (1, 0, 2, 2), (0, 1, 1, 2)):  # fmt: skip
        sub = image[y::dy, x::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)
    return build_png(struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1), zlib.compress(raw))


@pytest.mark.parametrize(
    ("mode", "kw"),
    [
        ("RGB", {}),
        ("RGBA", {}),
        ("L", {}),
        ("LA", {}),
        ("1", {}),
        ("P", {"bits": 4}),
        ("I;16", {}),
        ("RGB", {"compress_level": 0}),
    ],
)
def test_whole_pngs_decode_to_pillows_pixels(mode: str, kw: dict[str, object]) -> None:
    image = Image.fromarray(pixels(7)[:200, :131])  # odd width: partial bytes per row
    if mode == "P":
        image = image.quantize(16)
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    data = buf.getvalue()
    assert np.array_equal(np.asarray(decode_rgb(data, inspect_image(data))), pillow_rgb(data))


def test_interlaced_png_decodes_and_its_size_is_counted_per_pass() -> None:
    image = pixels(8)[:97, :131]
    data = _interlaced_png(image)
    assert np.array_equal(np.asarray(decode_rgb(data, inspect_image(data))), image)
    stream = b"".join(body for kind, body in png_chunks(data) if kind == b"IDAT")
    ihdr = png_chunks(data)[0][1]
    assert png_data_bytes(ihdr) == len(zlib.decompress(stream))
    short = build_png(ihdr, zlib.compress(zlib.decompress(stream)[:-1]))
    with pytest.raises(InvalidImage, match="ends early"):
        decode_rgb(short, inspect_image(short))


def test_verified_png_keeps_the_other_chunks_and_one_idat() -> None:
    data = encode(pixels(), "PNG")
    assert len([k for k, _ in png_chunks(data) if k == b"IDAT"]) > 1  # 64 KiB each
    out = png_chunks(verified_png(data))
    kinds = [k for k, _ in out]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


@pytest.mark.parametrize(
    ("side", "draft"), [(256, None), (200, 224), (256, 224), (640, 224), (1024, 224)]
)
@pytest.mark.parametrize("subsampling", [0, 2])
def test_jpeg_pixels_equal_pillows_at_the_same_dct_scale(
    side: int, draft: int | None, subsampling: int
) -> None:
    image = np.asarray(Image.fromarray(pixels(9)).resize((side, side * 3 // 4)))
    data = encode(image, "JPEG", quality=90, subsampling=subsampling)
    box = None if draft is None else (draft, draft * 3 // 4)
    ours = np.asarray(decode_rgb(data, inspect_image(data), draft=box))
    assert np.array_equal(ours, pillow_rgb(data, box))


def test_grey_and_cmyk_jpegs_decode_as_pillow_does() -> None:
    for mode in ("L", "CMYK"):
        buf = io.BytesIO()
        Image.fromarray(pixels(3)).convert(mode).save(buf, "JPEG")
        data = buf.getvalue()
        assert np.array_equal(np.asarray(decode_rgb(data, inspect_image(data))), pillow_rgb(data))
