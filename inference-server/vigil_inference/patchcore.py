"""PatchCore (Roth et al., 2022) as plain torch modules.

Fitting (collecting patch features, coreset selection) is kept apart from
scoring. The scorer is one `nn.Module` from uint8 pixels to (image score,
anomaly map), so the same graph runs eagerly on a GPU or exported to ONNX
Runtime on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchEmbedder(nn.Module):
    """Locally aware patch features from mid-level backbone maps.

    Input: [N, 3, H, W] uint8 (or float in 0..255). Output: [N, D, h, w]
    where h, w is the first chosen layer's grid and D the summed channels.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        backbone: nn.Sequential,
        layer_idx: tuple[int, ...],
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        neighbourhood: int = 3,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.layer_idx = layer_idx
        self.neighbourhood = neighbourhood
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.to(self.mean.dtype) - self.mean) / self.std
        maps: list[torch.Tensor] = []
        for i, block in enumerate(self.backbone):
            x = block(x)
            if i in self.layer_idx:
                # Neighbourhood average (3x3 by default): a patch sees its surroundings.
                k = self.neighbourhood
                maps.append(F.avg_pool2d(x, k, stride=1, padding=k // 2))
            if i >= self.layer_idx[-1]:
                break
        size = maps[0].shape[-2:]
        maps = [maps[0]] + [
            F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]
        ]
        return torch.cat(maps, dim=1)


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(4 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def squared_distances(
    feats: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor
) -> torch.Tensor:
    """[N, D, h, w] features -> [N*h*w, M] squared distances (fp32) to the M
    rows of `bank`, whose squared norms are `bank_sq`. |a - b|^2 = |a|^2 -
    2 a.b + |b|^2: one matmul instead of cdist's copies."""
    n, d, h, w = feats.shape
    flat = feats.float().permute(0, 2, 3, 1).reshape(n * h * w, d)
    d2 = (flat * flat).sum(dim=1, keepdim=True) - 2.0 * flat @ bank.T
    return d2 + bank_sq.unsqueeze(0)


class PatchCoreScorer(nn.Module):
    """Pixels -> (scores [N], anomaly maps [N, H, W]).

    Each patch's score is its distance to the nearest memory-bank patch;
    the map is upsampled to the input size and Gaussian-smoothed; the image
    score is the map's maximum, so an image is anomalous exactly when its
    mask has a pixel above the threshold.
    """

    memory_bank: torch.Tensor
    bank_sq: torch.Tensor
    blur: torch.Tensor

    def __init__(
        self,
        embedder: PatchEmbedder,
        memory_bank: torch.Tensor,
        input_size: tuple[int, int],
        blur_sigma: float,
    ) -> None:
        super().__init__()
        self.embedder = embedder
        self.input_size = input_size
        self.register_buffer("memory_bank", memory_bank.float().contiguous())
        self.register_buffer("bank_sq", (memory_bank.float() ** 2).sum(dim=1))
        self.register_buffer("blur", gaussian_kernel1d(blur_sigma))

    def patch_distances(self, feats: torch.Tensor) -> torch.Tensor:
        """[N, D, h, w] features -> [N, 1, h, w] nearest-neighbour distances (fp32)."""
        n, _, h, w = feats.shape
        d2 = squared_distances(feats, self.memory_bank, self.bank_sq)
        return d2.amin(dim=1).clamp_min(0.0).sqrt().reshape(n, 1, h, w)

    def smooth(self, patch_scores: torch.Tensor) -> torch.Tensor:
        """[N, 1, h, w] -> [N, H, W] upsampled and Gaussian-smoothed map."""
        amap = F.interpolate(
            patch_scores, size=self.input_size, mode="bilinear", align_corners=False
        )
        r = (self.blur.numel() - 1) // 2
        amap = F.pad(amap, (r, r, r, r), mode="reflect")
        amap = F.conv2d(amap, self.blur.view(1, 1, 1, -1))
        amap = F.conv2d(amap, self.blur.view(1, 1, -1, 1))
        return amap[:, 0]

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = self.smooth(self.patch_distances(self.embedder(pixels)))
        return amap.flatten(1).amax(dim=1), amap


def k_center_greedy(
    features: torch.Tensor,
    k: int,
    seed: int,
    proj_dim: int = 128,
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Indices of a greedy k-center coreset of `features` [N, D].

    Each step adds the point farthest from the chosen set, so the bank
    covers the feature space rather than its dense parts. The min-distance
    vector is updated with one matrix-vector product per step (a full
    cdist per step is ~40x slower). Features wider than `proj_dim` are
    first randomly projected (Johnson-Lindenstrauss), as PatchCore does.
    """
    n, d = features.shape
    if k >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    z = features.float()
    if d > proj_dim:
        proj = torch.randn(d, proj_dim, generator=gen) / math.sqrt(proj_dim)
        z = z @ proj
    # numpy's matrix-vector product is ~5x faster than torch.mv's here.
    zn = np.ascontiguousarray(z.numpy(), dtype=np.float32)
    sq = np.einsum("ij,ij->i", zn, zn)
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = first
    min_d = sq - 2.0 * (zn @ zn[first]) + sq[first]
    for j in range(1, k):
        i = int(np.argmax(min_d))
        chosen[j] = i
        d = zn @ zn[i]
        d *= -2.0
        d += sq
        d += sq[i]
        np.minimum(min_d, d, out=min_d)
        if progress is not None and j % 64 == 0:
            progress(64)
    if progress is not None:
        progress(k - 64 * ((k - 1) // 64))
    return torch.from_numpy(chosen)
