"""Which configurations `vigil train` fits, and which one it keeps.

Lookout for Vision trained several models per dataset and kept the best;
`vigil train` does the same with a handful of PatchCore candidates
(backbone x input side). Pure functions over the held-out scores: the
trainer fits and scores, this module proposes and judges.

Selection rule:

- With anomalous images: the best held-out AUROC, then F1. Held-out sets
  are small (AUROC on 20 + 20 images has a standard error near 0.03), so a
  cheaper candidate within `TOLERANCE` of the best is kept instead: a
  stronger backbone must win clearly to cost more at serving time.
- With normal images only: the same rule on pseudo-anomalies (a patch of one
  held-out normal image pasted onto another, as in CutPaste, Li et al. 2021):
  they say how well each candidate notices a local change that no backbone
  has seen, never which texture is being inspected. They rank candidates;
  their AUROC is not an estimate of the real one, and is not reported as one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vigil_inference.backbones import get_spec

# Input sides tried, multiples of 32 so every backbone's stride-16 grid is
# exact (and EfficientNet's TF "SAME" padding is the one it was trained with).
SIDES = (224, 256, 320)
# At most this much upscaling past the images' own (median shorter) side:
# upscaling adds pixels, not detail, and costs serving time.
MAX_UPSCALE = 1.15
# Backbones tried when none is pinned, cheapest first.
DEFAULT_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2")
TOLERANCE = 0.02


@dataclass(frozen=True)
class Candidate:
    """One configuration to fit: what the artifact's metadata will record."""

    backbone: str
    input_size: int
    feature_layers: tuple[str, ...] = ()  # empty: the backbone's defaults
    neighbourhood: int = 3  # side of the patch-feature averaging window

    @property
    def name(self) -> str:
        return f"{self.backbone}@{self.input_size}"

    @property
    def layers(self) -> tuple[str, ...]:
        return self.feature_layers or get_spec(self.backbone).default_layers

    @property
    def cost(self) -> float:
        """Expected CPU serving cost relative to MobileNetV2 at 224 px."""
        return get_spec(self.backbone).relative_cost * (self.input_size / 224) ** 2


@dataclass(frozen=True)
class Outcome:
    """A fitted candidate's figures on the held-out images."""

    candidate: Candidate
    auroc: float  # on real anomalies, or on pseudo-anomalies when there are none
    f1: float  # at its F1-optimal threshold (nan without real anomalies)
    fit_seconds: float  # embedding, coreset and held-out scoring
    bank: int
    pseudo: bool  # auroc measured on pseudo-anomalies


def input_sides(image_sides: Sequence[int]) -> list[int]:
    """Input sides that follow the data: those not upscaling the median
    image side more than MAX_UPSCALE, the largest two of them; 224 (the
    backbones' ImageNet side) when the images are smaller than that."""
    if not image_sides:
        raise ValueError("no images to size the input from")
    median = float(np.median(image_sides))
    fits = [s for s in SIDES if s <= median * MAX_UPSCALE]
    return fits[-2:] if fits else [SIDES[0]]


def candidates(
    image_sides: Sequence[int],
    backbone: str | None = None,
    input_size: int | None = None,
    feature_layers: tuple[str, ...] = (),
) -> list[Candidate]:
    """The candidates to fit; a pinned backbone or side narrows the set."""
    backbones = (get_spec(backbone).name,) if backbone else DEFAULT_BACKBONES
    if input_size is not None:
        if not 64 <= input_size <= 1024 or input_size % 32:
            raise ValueError(
                f"--input-size must be a multiple of 32 within 64..1024, got {input_size}"
            )
        sides = [input_size]
    else:
        sides = input_sides(image_sides)
    return [Candidate(b, s, feature_layers) for b in backbones for s in sides]


def choose(outcomes: Sequence[Outcome]) -> tuple[int, str]:
    """Index of the candidate to keep, and why, in words."""
    if not outcomes:
        raise ValueError("no candidates to choose from")
    if len(outcomes) == 1:
        return 0, "the only candidate (pinned by --backbone/--input-size)"

    def key(o: Outcome) -> tuple[float, float]:
        return (_finite(o.auroc), _finite(o.f1))

    best = max(range(len(outcomes)), key=lambda i: key(outcomes[i]))
    top = outcomes[best]
    close = [
        i for i, o in enumerate(outcomes) if _finite(o.auroc) >= _finite(top.auroc) - TOLERANCE
    ]
    cheapest = min(
        close, key=lambda i: (outcomes[i].candidate.cost, [-v for v in key(outcomes[i])])
    )
    what = "pseudo-anomaly AUROC" if top.pseudo else "held-out AUROC"
    if cheapest == best:
        return best, f"best {what} ({top.auroc:.3f})"
    won = outcomes[cheapest]
    return cheapest, (
        f"{what} {won.auroc:.3f}, within {TOLERANCE} of the best ({top.candidate.name}, "
        f"{top.auroc:.3f}) at {won.candidate.cost:.2f} instead of {top.candidate.cost:.2f} "
        "times MobileNetV2's serving cost"
    )


def table(outcomes: Sequence[Outcome], winner: int) -> str:
    """The candidates as a fixed-width table; the kept one is starred."""
    what = "pseudo-AUROC" if outcomes and outcomes[0].pseudo else "AUROC"
    lines = [f"  {'candidate':26} {what:>12} {'F1':>6} {'bank':>5} {'fit s':>6} {'cost':>5}"]
    for i, o in enumerate(outcomes):
        mark = "*" if i == winner else " "
        f1 = "" if math.isnan(o.f1) else f"{o.f1:.3f}"
        lines.append(
            f"{mark} {o.candidate.name:26} {o.auroc:12.3f} {f1:>6} {o.bank:5d} "
            f"{o.fit_seconds:6.1f} {o.candidate.cost:5.2f}"
        )
    return "\n".join(lines)


def pseudo_anomalies(images: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """CutPaste: each [3, H, W] uint8 image gets a rectangle (2-6 % of its
    area) cut from another image of the set at another place, so the change
    is local and made of in-distribution texture. Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for i, img in enumerate(images):
        donor = images[(i + 1 + int(rng.integers(max(1, len(images) - 1)))) % len(images)]
        _, h, w = img.shape
        area = rng.uniform(0.02, 0.06) * h * w
        aspect = rng.uniform(0.5, 2.0)
        ph = max(4, min(h // 2, round(math.sqrt(area * aspect))))
        pw = max(4, min(w // 2, round(math.sqrt(area / aspect))))
        sy, sx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        ty, tx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        patch = donor[:, sy : sy + ph, sx : sx + pw]
        if rng.random() < 0.5:
            patch = patch[:, ::-1, :]
        if rng.random() < 0.5:
            patch = patch[:, :, ::-1]
        gain = rng.uniform(0.8, 1.2)
        new = img.copy()
        new[:, ty : ty + ph, tx : tx + pw] = np.clip(patch.astype(np.float32) * gain, 0, 255)
        out.append(new)
    return out


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -1.0
