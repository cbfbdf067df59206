"""Strict pixel decoding: damaged image data is an error, never a black region.

What each decoder lets through, measured on Pillow 13, libjpeg-turbo 3 and
torchvision 0.29 (tests/unit/inference/test_decoders.py holds each case):

- Pillow's PNG decoder takes the end of the zlib stream as the end of the
  image (ZipDecode.c has its "image and data should end simultaneously"
  check commented out), so a stream holding fewer rows than the header
  promises decodes with the missing rows black; and it never checks IDAT
  CRCs. A stream that ends mid-row, a file cut short and a bad Adler-32 it
  does refuse.
- Pillow's JPEG decoder ignores libjpeg's warnings, so an entropy-coded
  segment that ends early (an EOI marker before the last MCU) or holds
  corrupt Huffman data decodes into grey or garbled blocks. A file cut short
  it refuses.
- torchvision.io.decode_png catches every PNG case but kills the process
  (SIGSEGV after libpng's error) instead of raising, so it must never see a
  request.

So a PNG's chunks are walked first (lengths and CRC-32s) and its zlib
stream is inflated here, where zlib checks the Adler-32 and the byte count
is held against what the header's rows need. Pillow then unfilters the
verified bytes, handed over as stored (uncompressed) deflate blocks, so the
data is still inflated once (bench/decoding.py measures the cost).

A JPEG is decoded by simplejpeg (libjpeg-turbo's TurboJPEG API) in strict
mode, where every libjpeg warning is an error; its pixels equal Pillow's at
the same DCT scale. On a GPU, JPEGs go to nvJPEG instead (model.py), whose
handling of damaged data has not been measured here (no GPU to test on).
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import numpy as np
import simplejpeg

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_STORED_MAX: Final = 0xFFFF  # bytes in one stored deflate block
_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by PNG colour type
# Adam7 passes: (first column, first row, column step, row step).
_ADAM7: Final = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
# The handed-over IDAT carries neither a CRC nor an Adler-32: both were
# checked on the original, Pillow skips IDAT CRCs and stops on the last row
# before any trailer, and computing them again costs two passes over the
# pixels (~8 % of a 256x256 PNG decode).
_UNCHECKED_CRC: Final = b"\0\0\0\0"
# Four-channel JPEGs: TurboJPEG converts them to RGB differently from
# Pillow's Adobe convention, so they stay on Pillow (which still refuses a
# file cut short) to keep the pixels every model was trained on.
PILLOW_JPEG_COLORSPACES: Final = frozenset({"CMYK", "YCCK"})


class DamagedImage(ValueError):
    """The pixel data is incomplete or corrupt; the message says where."""


def png_data_bytes(ihdr: bytes) -> int:
    """Bytes the zlib stream must inflate to: every row, with its filter byte."""
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    bits = depth * _CHANNELS.get(color, 0)
    if bits == 0:
        raise DamagedImage(f"IHDR has an unknown colour type {color}")

    def rows(w: int, h: int) -> int:
        return 0 if w == 0 else h * (1 + (w * bits + 7) // 8)

    if not interlace:
        return rows(width, height)
    return sum(
        rows((width - x + dx - 1) // dx, (height - y + dy - 1) // dy) for x, y, dx, dy in _ADAM7
    )


def verified_png(data: bytes) -> bytes:
    """Check every chunk's length and CRC and the zlib stream (Adler-32, and
    exactly as many bytes as the header's rows need); return the same PNG
    with its pixel data in one IDAT chunk of stored deflate blocks.

    Raises DamagedImage naming the chunk, byte offset or row count at fault.
    Memory: the inflated data twice while it is assembled, then once while
    Pillow unfilters it (64 MiB for a 4096x4096 RGBA image, the largest).
    """
    if not data.startswith(PNG_SIGNATURE):
        raise DamagedImage("not a PNG signature")
    view = memoryview(data)
    pos = len(PNG_SIGNATURE)
    idat: list[memoryview] = []
    ihdr = b""
    first = end_of_idat = -1
    while pos < len(data):
        if pos + 12 > len(data):
            raise DamagedImage(f"the file ends inside a chunk header at byte {pos}")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        end = pos + 12 + length
        if end > len(data):
            raise DamagedImage(
                f"the file ends inside chunk {name} at byte {pos} "
                f"({length} bytes declared, {len(data) - pos - 12} present)"
            )
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise DamagedImage(f"chunk {name} at byte {pos} fails its CRC check")
        if kind == b"IHDR":
            ihdr = bytes(view[pos + 8 : end - 4])
        elif kind == b"IDAT":
            if first < 0:
                first = pos
            elif pos != end_of_idat:
                raise DamagedImage(f"IDAT chunk at byte {pos} does not follow the other IDATs")
            idat.append(view[pos + 8 : end - 4])
            end_of_idat = end
        pos = end
        if kind == b"IEND":
            break
    if len(ihdr) != 13:
        raise DamagedImage("no valid IHDR chunk")
    if first < 0:
        raise DamagedImage("no IDAT chunk: the image has no pixel data")
    stream = _stored_zlib_stream(_inflate(idat, ihdr))
    length = sum(len(part) for part in stream)
    return b"".join(
        (
            view[:first],
            struct.pack(">I4s", length, b"IDAT"),
            *stream,
            _UNCHECKED_CRC,
            view[end_of_idat:],
        )
    )


def _inflate(parts: list[memoryview], ihdr: bytes) -> list[bytes]:
    """The inflated bytes in pieces of at most one stored block each.

    Never inflates past what the header's rows need, so a small image cannot
    carry a zlib bomb.
    """
    expected = png_data_bytes(ihdr)
    inflater = zlib.decompressobj()
    pieces: list[bytes] = []
    total = 0
    try:
        for part in parts:
            tail: bytes | memoryview = part
            while tail and not inflater.eof and total <= expected:
                piece = inflater.decompress(tail, _STORED_MAX)
                tail = inflater.unconsumed_tail
                pieces.append(piece)
                total += len(piece)
        if total <= expected:
            rest = inflater.flush()
            pieces.extend(rest[i : i + _STORED_MAX] for i in range(0, len(rest), _STORED_MAX))
            total += len(rest)
    except zlib.error as exc:
        raise DamagedImage(f"the compressed pixel data is corrupt ({exc})") from exc
    width, height = struct.unpack_from(">II", ihdr)
    if total > expected:
        raise DamagedImage(
            f"the pixel data holds more than the {expected} bytes "
            f"that the header's {width}x{height} pixels need"
        )
    if total < expected:
        rows = f" ({total * height // expected} of {height} rows)" if not ihdr[12] else ""
        raise DamagedImage(
            f"the pixel data ends early: {total} of the {expected} bytes "
            f"that the header's {width}x{height} pixels need{rows}"
        )
    if not inflater.eof:
        raise DamagedImage("the compressed pixel data is cut short before its end")
    return [piece for piece in pieces if piece]


def _stored_zlib_stream(pieces: list[bytes]) -> list[bytes]:
    """Stored deflate blocks holding `pieces` (each <= 65535 bytes) after a
    zlib header, without the Adler-32 trailer (see _UNCHECKED_CRC)."""
    out = [b"\x78\x01"]
    for i, piece in enumerate(pieces):
        final = int(i == len(pieces) - 1)
        out.append(struct.pack("<BHH", final, len(piece), len(piece) ^ 0xFFFF))
        out.append(piece)
    return out


def jpeg_colorspace(data: bytes) -> str:
    """The JPEG's colour space from its header ('YCbCr', 'Gray', 'CMYK', ...)."""
    try:
        _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except Exception as exc:  # raises ValueError or RuntimeError for a bad header
        raise DamagedImage(str(exc)) from exc
    return str(colorspace)


def decode_jpeg_rgb(data: bytes, scale: int = 1) -> np.ndarray:
    """Decode to [H, W, 3] uint8 at 1/`scale` (1, 2, 4 or 8) of the full size,
    refusing on any libjpeg warning (premature end, corrupt entropy data)."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    try:
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            # Exactly the output size of 1/scale: TurboJPEG picks the largest
            # downscale that reaches it, which is 1/scale itself.
            min_height=-(-height // scale),
            min_width=-(-width // scale),
            strict=True,
        )
    except Exception as exc:
        raise DamagedImage(str(exc)) from exc
    return np.asarray(pixels)
