"""Generated inspection images: a woven texture, and the same texture with
defects (pasted foreign patches, scratches, blotches).

Tests, the demo and benchmarks make their data here, so nothing is
downloaded. Every image is a function of its seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

DEFECTS = ("patch", "scratch", "blotch")


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # [H, W, 3] uint8
    mask: np.ndarray  # [H, W] bool, True on defect pixels
    defect: str  # "" for a normal image


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: bilinear upsampling of a coarse grid."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    out = np.asarray(img, dtype=np.float32)
    span = max(float(out.max() - out.min()), 1e-6)
    return np.asarray((out - out.min()) / span, dtype=np.float32)


def _weave(rng: np.random.Generator, size: int, period: float, tint: np.ndarray) -> np.ndarray:
    """A woven fabric: two crossed gratings, thread noise and uneven lighting."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    phase_x, phase_y = rng.uniform(0, 2 * np.pi, 2)
    warp = (rng.standard_normal((size, size)).astype(np.float32)) * 0.15
    weft = 0.5 + 0.5 * np.sin(2 * np.pi * x / period + phase_x + warp)
    warp_ = 0.5 + 0.5 * np.sin(2 * np.pi * y / period + phase_y + warp)
    checker = np.where((np.floor(x / period) + np.floor(y / period)) % 2 == 0, weft, warp_)
    light = 0.85 + 0.15 * _smooth_noise(rng, size, 3)
    grain = rng.normal(0.0, 0.04, (size, size)).astype(np.float32)
    base = np.clip((0.35 + 0.5 * checker) * light + grain, 0.0, 1.0)
    rgb = base[..., None] * tint[None, None, :]
    return np.asarray(np.clip(rgb * 255.0, 0, 255), dtype=np.uint8)


_TINT = np.array([0.82, 0.74, 0.58], dtype=np.float32)  # beige cloth
_PERIOD = 8.0


def normal(seed: int, size: int = 256) -> Sample:
    rng = np.random.default_rng(seed)
    tint = _TINT * rng.uniform(0.95, 1.05)
    img = _weave(rng, size, _PERIOD * rng.uniform(0.97, 1.03), tint)
    return Sample(img, np.zeros((size, size), dtype=bool), "")


def _ellipse(
    h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float
) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = ((x - cx) * c + (y - cy) * s) / rx
    v = (-(x - cx) * s + (y - cy) * c) / ry
    return np.asarray(u * u + v * v, dtype=np.float32)


def add_defect(
    image: np.ndarray, seed: int, kind: str, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of `kind` onto an [H, W, 3] uint8 image (a copy).

    Returns (image, mask). Works on any picture, so benchmarks can put
    defects on real photographs too. `strength` < 1 blends the defect into
    the image, for faint defects that are hard to see.
    """
    original = image.astype(np.float32)
    rng = np.random.default_rng(seed + 7_919)
    size = min(image.shape[:2])
    img = image.astype(np.float32)
    h, w = image.shape[:2]
    margin = size // 6
    cy, cx = rng.uniform(margin, h - margin), rng.uniform(margin, w - margin)
    mask = np.zeros((h, w), dtype=bool)
    if kind == "patch":  # a piece of foreign material
        side = int(size * rng.uniform(0.12, 0.2))
        y0, x0 = int(cy - side / 2), int(cx - side / 2)
        foreign = _weave(rng, side, _PERIOD * 0.5, np.array([0.35, 0.45, 0.7], np.float32))
        img[y0 : y0 + side, x0 : x0 + side] = foreign
        mask[y0 : y0 + side, x0 : x0 + side] = True
    elif kind == "scratch":  # a thin bright tear along a gentle curve
        length = size * rng.uniform(0.3, 0.5)
        angle = rng.uniform(0, np.pi)
        t = np.linspace(-0.5, 0.5, 400)
        bend = rng.uniform(-0.15, 0.15) * length
        px = cx + t * length * np.cos(angle) - bend * (t**2) * np.sin(angle)
        py = cy + t * length * np.sin(angle) + bend * (t**2) * np.cos(angle)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dist = np.full((h, w), np.inf, dtype=np.float32)
        for qx, qy in zip(px[::4], py[::4], strict=True):
            dist = np.minimum(dist, (xx - qx) ** 2 + (yy - qy) ** 2)
        width = rng.uniform(1.5, 2.5)
        mask = dist <= width**2
        img[mask] = np.array([250.0, 250.0, 245.0])
    elif kind == "blotch":  # a dark stain with a soft edge
        r = _ellipse(
            h,
            w,
            cy,
            cx,
            size * rng.uniform(0.05, 0.1),
            size * rng.uniform(0.07, 0.13),
            rng.uniform(0, np.pi),
        )
        alpha = np.clip(1.3 - r, 0.0, 1.0)[..., None]
        stain = np.array([70.0, 45.0, 30.0], dtype=np.float32)
        img = np.asarray(img * (1 - 0.8 * alpha) + stain * 0.8 * alpha, dtype=np.float32)
        mask = r <= 1.0
    else:
        raise ValueError(f"unknown defect {kind!r}; choose from {', '.join(DEFECTS)}")
    img = original + strength * (img - original)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def defective(seed: int, size: int = 256, defect: str | None = None) -> Sample:
    """A normal image with one defect; `defect` picks the kind, else by seed."""
    kind = defect or DEFECTS[seed % len(DEFECTS)]
    image, mask = add_defect(normal(seed, size).image, seed, kind)
    return Sample(image, mask, kind)


def write_dataset(
    root: Path,
    n_normal: int,
    n_anomalous: int,
    seed: int = 0,
    size: int = 256,
    fmt: str = "png",
) -> tuple[Path, Path]:
    """Write `root/normal/*.png` and `root/anomalous/*.png`; returns both folders."""
    normal_dir, anomalous_dir = root / "normal", root / "anomalous"
    normal_dir.mkdir(parents=True, exist_ok=True)
    anomalous_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_normal):
        Image.fromarray(normal(seed + i, size).image).save(normal_dir / f"normal-{i:04d}.{fmt}")
    for i in range(n_anomalous):
        s = defective(seed + 100_000 + i, size)
        Image.fromarray(s.image).save(anomalous_dir / f"{s.defect}-{i:04d}.{fmt}")
    return normal_dir, anomalous_dir


# Lookout-style colour map for the generated defect types (Ground Truth's
# default palette; the background white, as Ground Truth draws it).
TYPE_COLORS = {"scratch": "#2CA02C", "blotch": "#1F77B4", "patch": "#D62728"}
BACKGROUND_COLOR = "#FFFFFF"


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def typed_defective(
    seed: int, kinds: tuple[str, ...], size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """A normal image with one defect per kind: (image, colour-coded RGB mask)."""
    image = normal(seed, size).image
    mask = np.zeros((size, size, 3), dtype=np.uint8)
    mask[:] = _rgb(BACKGROUND_COLOR)
    for k, kind in enumerate(kinds):
        image, where = add_defect(image, seed + 31 * k, kind)
        mask[where] = _rgb(TYPE_COLORS[kind])
    return image, mask


# Ground Truth's metadata for a human-labelled image-classification entry.
_LABEL_META: Final[dict[str, Any]] = {
    "class-name": "normal",
    "human-annotated": "yes",
    "type": "groundtruth/image-classification",
    "job-name": "labeling-job/classification-job",
    "confidence": 1,
}


def _internal_color_map(types: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Ground Truth's `internal-color-map` of a segmentation entry: class
    index to name and colour, the background as class 0."""
    color_map = {"0": {"class-name": "BACKGROUND", "hex-color": BACKGROUND_COLOR.lower()}}
    for i, kind in enumerate(types, start=1):
        color_map[str(i)] = {"class-name": kind, "hex-color": TYPE_COLORS[kind].lower()}
    return color_map


def _write_normal(
    folder: Path, base: int, n: int, size: int, ref: Callable[[Path], str]
) -> list[dict[str, Any]]:
    """A split's normal images under `normal/`; returns their manifest lines."""
    lines: list[dict[str, Any]] = []
    for i in range(n):
        path = folder / "normal" / f"normal-{i:04d}.png"
        Image.fromarray(normal(base + i, size).image).save(path)
        lines.append(
            {"source-ref": ref(path), "anomaly-label": 0, "anomaly-label-metadata": _LABEL_META}
        )
    return lines


def _write_anomalies(
    folder: Path,
    base: int,
    kinds: Sequence[tuple[str, ...]],
    size: int,
    ref: Callable[[Path], str],
    color_map: dict[str, dict[str, str]],
) -> list[dict[str, Any]]:
    """A split's anomalies under `anomaly/`, one per entry of `kinds` (the
    types it shows), with colour-coded masks under `masks/`; returns their
    manifest lines, which name the mask and its colour map as Ground Truth's
    segmentation jobs do."""
    lines: list[dict[str, Any]] = []
    for i, combo in enumerate(kinds):
        image, mask = typed_defective(base + 10_000 + i, combo, size)
        name = f"{'-'.join(combo)}-{i:04d}.png"
        img_path, mask_path = folder / "anomaly" / name, folder / "masks" / name
        Image.fromarray(image).save(img_path)
        Image.fromarray(mask).save(mask_path)
        lines.append(
            {
                "source-ref": ref(img_path),
                "anomaly-label": 1,
                "anomaly-label-metadata": {**_LABEL_META, "class-name": "anomaly"},
                "anomaly-mask-ref": ref(mask_path),
                "anomaly-mask-ref-metadata": {
                    "internal-color-map": color_map,
                    "type": "groundtruth/semantic-segmentation",
                    "human-annotated": "yes",
                    "job-name": "labeling-job/segmentation-job",
                },
            }
        )
    return lines


def write_lookout_dataset(
    root: Path,
    n_normal: int,
    n_per_type: int,
    types: tuple[str, ...] = ("scratch", "blotch"),
    seed: int = 0,
    size: int = 256,
    s3_uri: str = "",
    n_mixed: int = 0,
) -> dict[str, Path]:
    """A Lookout project export on disk: `train/` and `test/` each in Lookout's
    folder layout (normal/, anomaly/, masks/ with color-map.json), and
    `train.manifest` / `test.manifest` referencing the same files, relative to
    `root`, or under `s3_uri` (as an export to S3 writes them) when given.
    Each split has `n_normal` normal images, `n_per_type` anomalies of each
    type and `n_mixed` showing every type at once. Returns the paths by name."""
    color_map = _internal_color_map(types)
    kinds = [(kind,) for kind in types for _ in range(n_per_type)] + [types] * n_mixed

    def ref(path: Path) -> str:
        rel = path.relative_to(root).as_posix()
        return f"{s3_uri.rstrip('/')}/{rel}" if s3_uri else rel

    out: dict[str, Path] = {}
    for split, base in (("train", seed), ("test", seed + 50_000)):
        folder = root / split
        for sub in ("normal", "anomaly", "masks"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "masks" / "color-map.json").write_text(
            json.dumps({k: TYPE_COLORS[k] for k in types})
        )
        lines = _write_normal(folder, base, n_normal, size, ref)
        lines += _write_anomalies(folder, base, kinds, size, ref, color_map)
        manifest = root / f"{split}.manifest"
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
        out[split] = folder
        out[f"{split}.manifest"] = manifest
    return out
