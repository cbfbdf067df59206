"""Images whose header is valid but whose pixel data is not, one per kind of
damage a request can carry, with the words its refusal must contain.

Each starts from a whole 256x256 image of generated texture (so no damage
can pass for a legitimately dark or grey image) and is forged byte by byte.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from vigil_inference import synthetic

SIZE = 256


def pixels(seed: int = 5) -> np.ndarray:
    return synthetic.normal(seed, SIZE).image


def encode(image: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(kind))
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def build_png(ihdr: bytes, stream: bytes) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    )


def _png_parts(seed: int = 5) -> tuple[bytes, bytes]:
    """(IHDR body, the inflated scanlines) of a whole 256x256 RGB PNG."""
    parts = png_chunks(encode(pixels(seed), "PNG"))
    stream = b"".join(body for kind, body in parts if kind == b"IDAT")
    return parts[0][1], zlib.decompress(stream)


def png_missing_rows() -> bytes:
    """A complete zlib stream that holds only the first half of the rows."""
    ihdr, raw = _png_parts()
    return build_png(ihdr, zlib.compress(raw[: len(raw) // 2]))


def png_header_promises_more_rows() -> bytes:
    """Whole data for 256 rows under a header that promises 2048."""
    ihdr, raw = _png_parts()
    return build_png(struct.pack(">II", SIZE, 8 * SIZE) + ihdr[8:], zlib.compress(raw))


def png_zlib_stream_ends_early() -> bytes:
    """The compressed stream cut in the middle, in an otherwise sound file."""
    ihdr, raw = _png_parts()
    stream = zlib.compress(raw)
    return build_png(ihdr, stream[: len(stream) // 2])


def png_file_cut_short() -> bytes:
    data = encode(pixels(), "PNG")
    return data[: len(data) * 2 // 3]


def png_corrupt_crc() -> bytes:
    """One byte of pixel data changed in transit: the IDAT CRC no longer fits."""
    ihdr, raw = _png_parts()
    data = bytearray(build_png(ihdr, zlib.compress(raw)))
    data[33 + 8 + 1000] ^= 0x10  # inside the IDAT body (IHDR chunk ends at byte 33)
    return bytes(data)


def png_corrupt_data_valid_crc() -> bytes:
    """Damaged before the CRC was computed: only the zlib Adler-32 shows it."""
    ihdr, raw = _png_parts()
    stream = bytearray(zlib.compress(raw, level=0))  # stored: a flipped byte stays a pixel
    stream[len(stream) // 2] ^= 0x10
    return build_png(ihdr, bytes(stream))


def png_more_data_than_rows() -> bytes:
    ihdr, raw = _png_parts()
    return build_png(ihdr, zlib.compress(raw + raw[: len(raw) // 4]))


def jpeg_cut_short(progressive: bool = False) -> bytes:
    data = encode(pixels(), "JPEG", quality=90, progressive=progressive)
    return data[: len(data) // 2]


def jpeg_early_end_marker() -> bytes:
    """Cut short, then closed with an EOI marker as a crashed writer might."""
    data = encode(pixels(), "JPEG", quality=90)
    return data[: len(data) // 2] + b"\xff\xd9"


def jpeg_corrupt_entropy_data() -> bytes:
    data = bytearray(encode(pixels(), "JPEG", quality=90))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    return bytes(data)


# name: (make, words the refusal contains)
DAMAGE: dict[str, tuple[Callable[[], bytes], str]] = {
    "PNG missing rows": (png_missing_rows, "ends early"),
    "PNG header promises more rows": (png_header_promises_more_rows, "(256 of 2048 rows)"),
    "PNG zlib stream ends early": (png_zlib_stream_ends_early, "ends early"),
    "PNG file cut short": (png_file_cut_short, "the file ends inside chunk IDAT"),
    "PNG corrupt chunk CRC": (png_corrupt_crc, "chunk IDAT at byte 33 fails its CRC check"),
    "PNG corrupt data, valid CRC": (png_corrupt_data_valid_crc, "incorrect data check"),
    "PNG more data than rows": (png_more_data_than_rows, "holds more than"),
    "JPEG cut short": (jpeg_cut_short, "Premature end of JPEG file"),
    "progressive JPEG cut short": (
        lambda: jpeg_cut_short(progressive=True),
        "Premature end of JPEG file",
    ),
    "JPEG ends early with EOI": (jpeg_early_end_marker, "premature end of data segment"),
    "JPEG corrupt entropy data": (jpeg_corrupt_entropy_data, "Corrupt JPEG data"),
}
