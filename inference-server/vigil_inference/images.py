"""Request image checks, done on the header before any pixel is decoded.

Lookout for Vision accepted PNG or JPEG up to 8 MB with sides of 64 to 4096
pixels; we keep the same contract. Checking the header first means a
decompression bomb is refused before it can allocate its pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image, ImageFile

from vigil_inference.decoders import (
    PILLOW_JPEG_COLORSPACES,
    DamagedImage,
    decode_jpeg_rgb,
    jpeg_colorspace,
    verified_png,
)

MAX_IMAGE_BYTES: Final = 8 * 1024 * 1024
MIN_SIDE: Final = 64
MAX_SIDE: Final = 4096
CONTENT_TYPES: Final = {"image/png": "PNG", "image/jpeg": "JPEG"}
_ALIASES: Final = {"image/jpg": "image/jpeg", "image/x-png": "image/png"}

# The side limits bound the pixel count; PIL's own guard is a second line.
Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
# Pillow's default, pinned: decoding a cut-short file must fail, not pad it.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class InvalidImage(ValueError):
    """The request's image cannot be scored; the message names the problem."""


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "PNG" or "JPEG"
    width: int
    height: int


def sniff_format(data: bytes) -> str | None:
    """Format from magic bytes, so a mislabelled upload is caught early."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    return None


def inspect_image(data: bytes, content_type: str = "") -> ImageHeader:
    """Validate size, type and dimensions from the header alone.

    Raises InvalidImage with a message naming the problem.
    """
    if not data:
        raise InvalidImage("image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImage(
            f"image is {len(data)} bytes, over the limit of {MAX_IMAGE_BYTES} bytes (8 MB)"
        )
    declared: str | None = None
    if content_type:
        ct = content_type.split(";", 1)[0].strip().lower()
        ct = _ALIASES.get(ct, ct)
        if ct not in CONTENT_TYPES:
            raise InvalidImage(
                f"unsupported content type {content_type!r}: use image/png or image/jpeg"
            )
        declared = CONTENT_TYPES[ct]
    actual = sniff_format(data)
    if actual is None:
        raise InvalidImage("data is not a PNG or JPEG image")
    if declared is not None and declared != actual:
        raise InvalidImage(
            f"content type {content_type!r} does not match the data, which is {actual}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[actual]) as img:
                width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"image has too many pixels (decompression bomb): {exc}") from exc
    except Exception as exc:  # PIL raises many types for a corrupt header
        raise InvalidImage(f"cannot read the {actual} header: {exc}") from exc
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InvalidImage(
            f"image is {width}x{height} pixels; each side must be {MIN_SIDE} to {MAX_SIDE}"
        )
    return ImageHeader(actual, width, height)


def _dct_scale(header: ImageHeader, draft: tuple[int, int]) -> int:
    """Pillow's draft rule: the largest of 8, 4, 2, 1 keeping both sides >= `draft`."""
    fits = min(header.width // max(draft[0], 1), header.height // max(draft[1], 1))
    return next((s for s in (8, 4, 2, 1) if fits >= s), 1)


def decode_rgb(
    data: bytes, header: ImageHeader, draft: tuple[int, int] | None = None
) -> Image.Image:
    """Decode all pixels as RGB, strictly: incomplete or corrupt pixel data
    (missing rows, a zlib stream or JPEG cut short, a bad CRC, corrupt
    entropy data) is InvalidImage, never an image with black or grey holes.

    `draft` (width, height): a JPEG may be decoded at a reduced DCT scale no
    smaller than this, which is several times cheaper for large photos.
    How each kind of damage is caught is in `decoders`.
    """
    problem = f"{header.format} data is truncated or corrupt"
    try:
        if header.format == "JPEG" and jpeg_colorspace(data) not in PILLOW_JPEG_COLORSPACES:
            scale = 1 if draft is None else _dct_scale(header, draft)
            return Image.fromarray(decode_jpeg_rgb(data, scale))
        if header.format == "PNG":
            data = verified_png(data)
    except DamagedImage as exc:
        raise InvalidImage(f"{problem}: {exc}") from exc
    try:
        with Image.open(io.BytesIO(data), formats=[header.format]) as img:
            if draft is not None and header.format == "JPEG":
                img.draft("RGB", draft)
            img.load()
            return img.convert("RGB")
    except Exception as exc:
        raise InvalidImage(f"{problem}: {exc}") from exc


def to_model_input(data: bytes, header: ImageHeader, size: tuple[int, int]) -> np.ndarray:
    """Decode, resize to `size` (height, width) and lay out as [3, H, W] uint8.

    The one preprocessing path, shared by training and serving, so a model
    sees at serving time exactly what it was fitted on.
    """
    h, w = size
    img = decode_rgb(data, header, draft=(w, h))
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
