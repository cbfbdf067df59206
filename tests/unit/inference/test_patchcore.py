"""The scorer's maths against brute force, and the coreset's coverage."""

from __future__ import annotations

import torch
from torch import nn

from vigil_inference.patchcore import (
    PatchCoreScorer,
    PatchEmbedder,
    gaussian_kernel1d,
    k_center_greedy,
)


def _tiny_scorer(bank: torch.Tensor) -> PatchCoreScorer:
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1)
    )
    return PatchCoreScorer(PatchEmbedder(backbone, (0, 1)), bank, (64, 64), 2.0).eval()


def test_patch_distances_equal_brute_force_nearest_neighbour() -> None:
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(50, 8, generator=g)
    scorer = _tiny_scorer(bank)
    feats = torch.randn(2, 8, 5, 5, generator=g)
    got = scorer.patch_distances(feats)
    flat = feats.permute(0, 2, 3, 1).reshape(-1, 8)
    want = torch.cdist(flat, bank).amin(dim=1).reshape(2, 1, 5, 5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_image_score_is_the_maps_maximum_and_map_has_input_size() -> None:
    scorer = _tiny_scorer(torch.randn(20, 8, generator=torch.Generator().manual_seed(1)))
    pixels = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        scores, maps = scorer(pixels)
    assert maps.shape == (3, 64, 64)
    torch.testing.assert_close(scores, maps.flatten(1).amax(1))


def test_patch_identical_to_bank_scores_zero() -> None:
    feats = torch.randn(1, 8, 3, 3)
    bank = feats.permute(0, 2, 3, 1).reshape(-1, 8)
    d = _tiny_scorer(bank).patch_distances(feats)
    assert float(d.max()) < 1e-2


def test_gaussian_kernel_is_normalised_and_symmetric() -> None:
    k = gaussian_kernel1d(4.0)
    assert abs(float(k.sum()) - 1.0) < 1e-6
    torch.testing.assert_close(k, k.flip(0))


def test_coreset_picks_one_point_per_separated_cluster() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    pts = torch.cat([c + torch.randn(200, 2, generator=g) for c in centers])
    chosen = k_center_greedy(pts, 3, seed=0)
    assert sorted(int(i) // 200 for i in chosen) == [0, 1, 2]


def test_coreset_is_seeded_unique_and_covers_better_than_random() -> None:
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(3000, 16, generator=g) * torch.linspace(0.1, 3, 16)
    a, b = k_center_greedy(pts, 100, seed=7), k_center_greedy(pts, 100, seed=7)
    assert torch.equal(a, b) and len(set(a.tolist())) == 100

    def radius(idx: torch.Tensor) -> float:  # worst distance to the chosen set
        return float(torch.cdist(pts, pts[idx]).amin(dim=1).max())

    rand = torch.randperm(3000, generator=g)[:100]
    assert radius(a) < 0.8 * radius(rand)


def test_coreset_reports_progress_for_every_point() -> None:
    seen: list[int] = []
    k_center_greedy(torch.randn(500, 4), 130, seed=0, progress=seen.append)
    assert sum(seen) == 130
