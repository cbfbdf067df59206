"""Strict decoding against Pillow alone, on whole images, in one process.

Lenient: the preprocessing as it was before strict decoding (Pillow decodes,
its JPEG draft mode scales, nothing checks the pixel data). Strict:
`images.to_model_input` as served now (PNG chunks and zlib stream verified,
JPEG by libjpeg-turbo in strict mode). Both decode, resize to the model's
224x224 and lay out [3, H, W]; rounds alternate so that drift in the
machine's speed favours neither, and each side keeps its best round.

Then the same comparison end to end: a real gRPC unit (bench/serving.py's
`served`, 32 clients) whose model prepares images leniently or strictly.

Last line: summary png_strict_over_lenient=R jpeg_strict_over_lenient=R ...
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference-server"))
sys.path.insert(0, str(ROOT / "bench"))

from serving import make_images, served, train_small  # noqa: E402

from vigil_inference import synthetic  # noqa: E402
from vigil_inference.images import ImageHeader, inspect_image, to_model_input  # noqa: E402
from vigil_inference.model import AnomalyModel  # noqa: E402

Prepare = Callable[[bytes, ImageHeader], Any]
SIZE = (224, 224)


def lenient_model_input(data: bytes, header: ImageHeader) -> np.ndarray:
    """The preprocessing before strict decoding, kept here as the baseline."""
    h, w = SIZE
    with Image.open(io.BytesIO(data), formats=[header.format]) as img:
        if header.format == "JPEG":
            img.draft("RGB", (w, h))
        img.load()
        rgb = img.convert("RGB")
    if rgb.size != (w, h):
        rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def strict_model_input(data: bytes, header: ImageHeader) -> np.ndarray:
    return to_model_input(data, header, SIZE)


def jpegs(n: int, side: int) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(synthetic.normal(i, side).image).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def rate(prepare: Prepare, images: Sequence[bytes], seconds: float) -> float:
    """Images per second of one thread's CPU time (other work on the machine
    slows the wall clock, not this)."""
    headers = [inspect_image(d) for d in images]
    done, start = 0, time.thread_time()
    while (elapsed := time.thread_time() - start) < seconds:
        for data, header in zip(images, headers, strict=True):
            prepare(data, header)
        done += len(images)
    return done / elapsed


def side_by_side(images: Sequence[bytes], rounds: int, seconds: float) -> tuple[float, float]:
    lenient = strict = 0.0
    for _ in range(rounds):
        lenient = max(lenient, rate(lenient_model_input, images, seconds))
        strict = max(strict, rate(strict_model_input, images, seconds))
    return lenient, strict


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help=".vigil artifact (default: train a small one)")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per prepare point")
    p.add_argument("--served-seconds", type=float, default=4.0, help="0 skips the served part")
    p.add_argument("--served-rounds", type=int, default=2)
    args = p.parse_args(argv)

    sets = {
        "png": make_images(args.images, 256),
        "jpeg": jpegs(args.images, 256),
        "jpeg_large": jpegs(args.images // 2, 1024),
    }
    for images in sets.values():  # the strict path refuses nothing whole
        for data in images:
            assert np.array_equal(
                strict_model_input(data, inspect_image(data)),
                lenient_model_input(data, inspect_image(data)),
            )
    print(f"{'prepare (decode+resize)':<28}{'lenient/s':>11}{'strict/s':>11}{'ratio':>8}")
    ratios = {}
    for name, images in sets.items():
        lenient, strict = side_by_side(images, args.rounds, args.seconds)
        ratios[name] = strict / lenient
        print(f"{name:<28}{lenient:>11.1f}{strict:>11.1f}{ratios[name]:>8.3f}")

    served_ratio = float("nan")
    if args.served_seconds > 0:
        with tempfile.TemporaryDirectory() as tmp:
            path = args.model or train_small(Path(tmp))
            model = AnomalyModel.load(path, device="cpu")
        model.warmup(8)
        images = sets["png"]
        best = {"lenient": 0.0, "strict": 0.0}
        for _ in range(args.served_rounds):
            for name, prepare in (
                ("lenient", lenient_model_input),
                ("strict", strict_model_input),
            ):
                model.prepare = prepare  # type: ignore[method-assign]
                r, _, _ = asyncio.run(served(model, images, 32, args.served_seconds, 4, 5.0))
                best[name] = max(best[name], r)
        served_ratio = best["strict"] / best["lenient"]
        print(
            f"served 256x256 PNG, 32 clients: lenient {best['lenient']:.1f}/s, "
            f"strict {best['strict']:.1f}/s, ratio {served_ratio:.3f}"
        )
    print(
        f"summary png_strict_over_lenient={ratios['png']:.3f} "
        f"jpeg_strict_over_lenient={ratios['jpeg']:.3f} "
        f"jpeg1024_strict_over_lenient={ratios['jpeg_large']:.3f} "
        f"served_strict_over_lenient={served_ratio:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
