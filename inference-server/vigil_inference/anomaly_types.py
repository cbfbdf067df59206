"""Named anomaly types learned from colour-coded masks (Lookout's segmentation).

PatchCore finds *where* an image is anomalous; this module says *what* each
anomalous region is. Method (measured in bench/anomaly_types.py):

- Fitting: every training anomaly's patch features (the same locally aware
  features PatchCore scores) are labelled with the mask class covering at
  least `MIN_SHARE` of the patch; the patches of the wider region the model
  detects around a drawn defect (its smoothed map) take the class of the
  nearest drawn patch, and drawn patches outside that region (a mask's soft
  edge, which looks normal) are left out. Each class keeps a seeded
  k-center coreset of its patches (at most `max_per_type`), so a rare class
  is not drowned by a common one.
- Inference: each patch takes the class of its nearest labelled patch (one
  matmul, inside the exported graph), unless the normal memory bank is
  nearer; then, within each connected anomalous region, those normal-looking
  patches and a class's pieces under MIN_FRAGMENT patches (or a tenth of the
  region) go to the region's majority class: stray pieces at a defect's
  border are noise, while two touching defects keep both names (a whole-
  region vote merged them).

Pixels are anomalous by the model's threshold, exactly as without types; the
types only name them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vigil_inference.lookout import AnomalyType, hex_rgb
from vigil_inference.patchcore import (
    PatchCoreScorer,
    PatchEmbedder,
    k_center_greedy,
    squared_distances,
)

MIN_SHARE: Final = 0.2  # share of a patch a class must cover to label it
FEATURES_KEY: Final = "anomaly_types.features"
LABELS_KEY: Final = "anomaly_types.labels"


class TypeHead(nn.Module):
    """[N, D, h, w] patch features -> ([N, h, w] class indices (1..T) of the
    nearest labelled training patch, [N, h, w] distances to it)."""

    features: torch.Tensor
    feat_sq: torch.Tensor
    labels: torch.Tensor

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("features", features.float().contiguous())
        self.register_buffer("feat_sq", (features.float() ** 2).sum(dim=1))
        self.register_buffer("labels", labels.to(torch.int64))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = feats.shape
        nearest, idx = squared_distances(feats, self.features, self.feat_sq).min(dim=1)
        dist = nearest.clamp_min(0.0).sqrt().reshape(n, h, w)
        return self.labels[idx].reshape(n, h, w), dist


class TypedScorer(PatchCoreScorer):
    """PatchCoreScorer plus a third output: per-patch classes [N, h, w],
    negated where the patch lies nearer the normal memory bank than any
    labelled defect patch (it looks normal: the halo the smoothed map draws
    around a defect), so `classify` can give it its region's class."""

    def __init__(
        self,
        embedder: PatchEmbedder,
        memory_bank: torch.Tensor,
        input_size: tuple[int, int],
        blur_sigma: float,
        head: TypeHead,
    ) -> None:
        super().__init__(embedder, memory_bank, input_size, blur_sigma)
        self.head = head

    def forward(  # type: ignore[override]
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.embedder(pixels)
        normal = self.patch_distances(feats)
        amap = self.smooth(normal)
        labels, dist = self.head(feats)
        cells = torch.where(dist < normal[:, 0], labels, -labels)
        return amap.flatten(1).amax(dim=1), amap, cells


def types_meta(types: Sequence[AnomalyType], background: str) -> dict[str, Any]:
    return {
        "anomaly_types": [{"name": t.name, "color": t.color} for t in types],
        "background_color": background,
    }


def types_from_meta(meta: dict[str, Any]) -> tuple[tuple[AnomalyType, ...], str]:
    """(types, background colour); no types for artifacts trained without masks."""
    raw = meta.get("anomaly_types") or []
    background = meta.get("background_color", "#FFFFFF")
    ok = isinstance(raw, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and _is_hex(t.get("color"))
        for t in raw
    )
    if not ok or not _is_hex(background):
        raise ValueError(
            "anomaly_types must be a list of {name, color: #RRGGBB} and background_color "
            f"a #RRGGBB colour, got {raw!r} and {background!r}"
        )
    return tuple(AnomalyType(t["name"], t["color"]) for t in raw), background


def _is_hex(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 7
        and value[0] == "#"
        and all(c in "0123456789abcdefABCDEF" for c in value[1:])
    )


def check_masks(entries: Sequence[tuple[Path, Path, str]], types: Sequence[AnomalyType]) -> None:
    """Load every (image, mask, where) once before training; raise one
    ValueError naming each unusable mask by its manifest line."""
    errors = []
    for image, mask, where in entries:
        try:
            load_mask(mask, types, (8, 8), image)
        except (OSError, ValueError) as exc:
            errors.append(f"{where}: {exc}")
    if errors:
        raise ValueError("\n".join(errors[:10]))


def load_mask(
    path: Path, types: Sequence[AnomalyType], size: tuple[int, int], image: Path
) -> np.ndarray:
    """A colour-coded mask as class indices [H, W] (0 background, i+1 for
    types[i]) at `size` (height, width); raises ValueError saying why not."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
        mask_size = im.size
    with Image.open(image) as img:
        if img.size != mask_size:
            raise ValueError(f"{path}: mask is {mask_size}, but {image.name} is {img.size}")
    labels = np.zeros(rgb.shape[:2], dtype=np.uint8)
    for i, t in enumerate(types, start=1):
        labels[np.all(rgb == np.array(t.rgb, dtype=np.uint8), axis=-1)] = i
    if not labels.any():
        names = ", ".join(f"{t.name} {t.color}" for t in types)
        raise ValueError(f"{path}: no pixel has a class colour ({names})")
    h, w = size
    small = Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(small)


def patch_labels(labels: np.ndarray, grid: tuple[int, int], n_types: int) -> np.ndarray:
    """[H, W] pixel classes -> [h, w] patch classes (0: no class covers MIN_SHARE)."""
    onehot = F.one_hot(torch.from_numpy(labels.astype(np.int64)), n_types + 1)
    shares = F.adaptive_avg_pool2d(onehot.permute(2, 0, 1).float()[None], grid)[0, 1:]
    best = shares.max(dim=0)
    out = torch.where(best.values >= MIN_SHARE, best.indices + 1, 0)
    return out.numpy()


MIN_KEPT: Final = 8  # labelled patches kept per class when few lie in a detected region


def fit_head(
    scorer: PatchCoreScorer,
    samples: Sequence[tuple[Path, Path]],
    types: Sequence[AnomalyType],
    load: Callable[[Path], np.ndarray],
    dev: torch.device,
    seed: int,
    min_distance: float,
    max_per_type: int = 512,
    batch_size: int = 8,
) -> TypeHead:
    """Label training anomalies' patches from their masks and keep a coreset per class.

    The region the model will call anomalous (its smoothed map above
    `min_distance`, the threshold) is wider than the drawn defect: patches in
    that halo are labelled with the class of the nearest drawn patch, so that
    at serving time a halo is named after its defect rather than after
    whichever class looks mildest. Drawn patches outside that region (a
    mask's soft edge) look normal and are left out.
    """
    size = scorer.input_size
    found: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in types]
    with torch.inference_mode():
        for i in range(0, len(samples), batch_size):
            chunk = samples[i : i + batch_size]
            x = torch.from_numpy(np.stack([load(img) for img, _ in chunk])).to(dev)
            feats = scorer.embedder(x)
            raw = scorer.patch_distances(feats)
            grid = (feats.shape[2], feats.shape[3])
            hot = F.adaptive_max_pool2d(scorer.smooth(raw)[:, None], grid)[:, 0] > min_distance
            hot, dists, feats = hot.cpu(), raw[:, 0].float().cpu(), feats.float().cpu()
            for j, (img, mask) in enumerate(chunk):
                cells = patch_labels(load_mask(mask, types, size, img), grid, len(types))
                cells = _label_halo(cells, hot[j].numpy())
                f = feats[j].permute(1, 2, 0)
                for t in range(len(types)):
                    sel = torch.from_numpy(cells == t + 1)
                    if sel.any():  # (features, distances, inside a detected region)
                        found[t].append((f[sel], dists[j][sel], hot[j][sel]))
    features, labels = [], []
    for t, parts in enumerate(found):
        if not parts:
            raise ValueError(
                f"no training mask covers a patch with class {types[t].name} "
                f"({types[t].color}): give examples of every class, or drop it from the color map"
            )
        f, d, inside = (torch.cat(column) for column in zip(*parts, strict=True))
        if int(inside.sum()) < min(MIN_KEPT, len(d)):  # barely detected: the most anomalous
            inside = d >= d.topk(min(MIN_KEPT, len(d))).values[-1]
        f = f[inside]
        keep = k_center_greedy(f, min(max_per_type, len(f)), seed + t)
        features.append(f[keep])
        labels.append(torch.full((len(keep),), t + 1, dtype=torch.int64))
    return TypeHead(torch.cat(features), torch.cat(labels))


def _label_halo(cells: np.ndarray, hot: np.ndarray) -> np.ndarray:
    """Unlabelled patches in the anomalous region take the nearest labelled patch's class."""
    halo = hot & (cells == 0)
    if not halo.any() or not cells.any():
        return cells
    ly, lx = np.nonzero(cells)
    hy, hx = np.nonzero(halo)
    nearest = ((hy[:, None] - ly) ** 2 + (hx[:, None] - lx) ** 2).argmin(axis=1)
    out = cells.copy()
    out[hy, hx] = cells[ly[nearest], lx[nearest]]
    return out


def _components(cells: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a small bool grid: (ids [h, w], count); 0 = none."""
    h, w = cells.shape
    ids = np.zeros((h, w), dtype=np.int32)
    n = 0
    for y0, x0 in zip(*np.nonzero(cells), strict=True):
        if ids[y0, x0]:
            continue
        n += 1
        ids[y0, x0] = n
        stack = [(int(y0), int(x0))]
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and cells[ny, nx] and not ids[ny, nx]:
                    ids[ny, nx] = n
                    stack.append((ny, nx))
    return ids, n


SMOOTHING: Final = ("fragments", "region", "none")
MIN_FRAGMENT: Final = 3  # patches: a class's smaller pieces inside a region are noise
MIN_FRAGMENT_SHARE: Final = 0.1  # ... or under this share of their region


def classify(
    amap: np.ndarray, threshold: float, cells: np.ndarray, smoothing: str = "fragments"
) -> tuple[np.ndarray, np.ndarray]:
    """(classes per pixel [H, W], anomalous pixels' classes [H, W]).

    `cells` are the per-patch classes [h, w], negative where the patch looks
    normal. Within each connected anomalous region (on the patch grid),
    `fragments` gives the normal-looking patches and a class's pieces smaller
    than MIN_FRAGMENT patches or MIN_FRAGMENT_SHARE of the region to the
    region's majority class (counted over
    the patches that look like a defect), `region` gives the whole region to
    it, `none` keeps every patch's own nearest class. The first
    map names every pixel of the patches an anomalous region touches (so a
    mask painted at another size can look its class up; 0 elsewhere); the
    second is 0 wherever the map is not above the threshold.
    """
    if smoothing not in SMOOTHING:
        raise ValueError(f"smoothing must be one of {SMOOTHING}, got {smoothing!r}")
    big_h, big_w = amap.shape
    h, w = cells.shape
    rows = (np.arange(big_h) * h) // big_h
    cols = (np.arange(big_w) * w) // big_w
    anomalous = amap > threshold
    looks_normal = cells < 0
    cells = np.abs(cells)
    per_pixel = cells[rows[:, None], cols[None, :]].astype(np.uint8)
    if smoothing != "none" and anomalous.any():
        hit = np.zeros((h, w), dtype=bool)
        ys, xs = np.nonzero(anomalous)
        hit[rows[ys], cols[xs]] = True
        ids, n = _components(hit)
        # Outside every region: unnamed, so a mask shows no stray class.
        grid = np.where(hit, cells, 0).astype(np.uint8)
        region_px = ids[rows[:, None], cols[None, :]]
        normal_px = looks_normal[rows[:, None], cols[None, :]]
        for r in range(1, n + 1):
            in_r = ids == r
            inside = anomalous & (region_px == r)
            counts = np.bincount(per_pixel[inside & ~normal_px], minlength=2)
            if counts[1:].sum() == 0:  # every patch looks normal: their nearest classes
                counts = np.bincount(per_pixel[inside], minlength=2)
            counts[0] = 0
            major = int(counts.argmax())
            if smoothing == "region":
                grid[in_r] = major
                continue
            grid[in_r & looks_normal] = major
            for c in np.unique(grid[in_r]):
                if c == major:
                    continue
                pieces, _ = _components(in_r & (grid == c))
                sizes = np.bincount(pieces.ravel())
                limit = max(MIN_FRAGMENT, MIN_FRAGMENT_SHARE * int(in_r.sum()))
                grid[(pieces > 0) & (sizes[pieces] < limit)] = major
        per_pixel = grid[rows[:, None], cols[None, :]]
    return per_pixel, np.where(anomalous, per_pixel, 0).astype(np.uint8)


def areas(typed: np.ndarray, n_types: int) -> list[float]:
    """Share of the image each class covers, for classes 1..n_types."""
    counts = np.bincount(typed.ravel(), minlength=n_types + 1)
    return [float(c) / typed.size for c in counts[1 : n_types + 1]]


def paint(
    per_pixel: np.ndarray,
    anomalous: np.ndarray,
    types: Sequence[AnomalyType],
    background: str,
) -> bytes:
    """A PNG painting each anomalous pixel in its class colour, the rest in the
    background colour (as the training masks were drawn)."""
    palette = np.array([hex_rgb(background)] + [t.rgb for t in types], dtype=np.uint8)
    idx = np.where(anomalous, per_pixel, 0)
    buf = io.BytesIO()
    Image.fromarray(palette[idx]).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass(frozen=True)
class TypeScores:
    name: str
    color: str
    precision: float
    recall: float
    images: int  # test images that show this type


def evaluate(
    predicted: Sequence[set[int]], truth: Sequence[set[int]], types: Sequence[AnomalyType]
) -> list[TypeScores]:
    """Per-type precision and recall over images: a type is predicted for an
    image when its area there is above zero, true when the mask shows it."""
    out = []
    for i, t in enumerate(types, start=1):
        tp = sum(1 for p, g in zip(predicted, truth, strict=True) if i in p and i in g)
        fp = sum(1 for p, g in zip(predicted, truth, strict=True) if i in p and i not in g)
        fn = sum(1 for p, g in zip(predicted, truth, strict=True) if i not in p and i in g)
        out.append(
            TypeScores(
                t.name,
                t.color,
                tp / (tp + fp) if tp + fp else 0.0,
                tp / (tp + fn) if tp + fn else 0.0,
                tp + fn,
            )
        )
    return out


def pixel_type_accuracy(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Of the true defect pixels that were found anomalous, the share named
    correctly: the classifier's own accuracy, apart from detection."""
    right = total = 0
    for typed, truth in pairs:
        found = (typed > 0) & (truth > 0)
        total += int(found.sum())
        right += int((typed[found] == truth[found]).sum())
    return right / total if total else float("nan")


@dataclass(frozen=True)
class TypeTraining:
    """What `train` needs to learn and grade anomaly types."""

    types: tuple[AnomalyType, ...]
    background: str
    samples: tuple[tuple[Path, Path], ...]  # training (image, mask)
    test_masks: dict[Path, Path]  # test anomalous image -> its mask


def grade(
    scorer: TypedScorer,
    spec: TypeTraining,
    normal: Sequence[Path],
    anomalous: Sequence[Path],
    threshold: float,
    load: Callable[[Path], np.ndarray],
    dev: torch.device,
    smoothing: str = "fragments",
) -> dict[str, Any]:
    """Per-type precision and recall (and the pixel type accuracy) on test images."""
    size = scorer.input_size
    predicted: list[set[int]] = []
    truth: list[set[int]] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    with torch.inference_mode():
        for path in [*normal, *anomalous]:
            _, amap, cells = scorer(torch.from_numpy(load(path)[None]).to(dev))
            amap_np, cells_np = amap[0].float().cpu().numpy(), cells[0].cpu().numpy()
            _, typed = classify(amap_np, threshold, cells_np, smoothing)
            predicted.append({int(v) for v in np.unique(typed) if v})
            if path in spec.test_masks:
                gt = load_mask(spec.test_masks[path], spec.types, size, path)
                pairs.append((typed, gt))
            else:
                gt = np.zeros(size, dtype=np.uint8)
            truth.append({int(v) for v in np.unique(gt) if v})
    scores = evaluate(predicted, truth, spec.types)
    return {
        "anomaly_types": [vars(s) for s in scores],
        "type_pixel_accuracy": pixel_type_accuracy(pairs),
    }


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The per-type lines of the training summary (none without types)."""
    rows = metrics.get("anomaly_types")
    if not rows:
        return []
    width = max(len(r["name"]) for r in rows)
    lines = ["Anomaly types on the same test images (precision, recall, images showing it):"]
    for r in rows:
        lines.append(
            f"  {r['name']:<{width}}  {r['color']}  precision {r['precision']:.3f}  "
            f"recall {r['recall']:.3f}  ({r['images']} images)"
        )
    acc = metrics.get("type_pixel_accuracy")
    if isinstance(acc, float) and acc == acc:
        lines.append(f"  Defect pixels found and named correctly: {acc:.1%}")
    return lines
