"""`vigil train`: fit a PatchCore model from a folder of normal images.

A seeded share of the normal images is held out. With anomalous examples,
the held-out images are split in two halves: the threshold is F1-optimal on
one, and precision, recall and F1 are measured on the other, so the figures
are not graded on the images that chose the threshold (Lookout reported its
evaluation on a test set in the same way). AUROC needs no threshold and uses
every held-out image.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vigil_inference import anomaly_types, evaluation, selection
from vigil_inference.artifact import Artifact, save_artifact, tensors_sha256
from vigil_inference.backbones import get_spec, layer_indices
from vigil_inference.images import InvalidImage, inspect_image, to_model_input
from vigil_inference.model import AnomalyModel, resolve_device
from vigil_inference.options import TrainConfig, from_flags
from vigil_inference.patchcore import PatchCoreScorer, PatchEmbedder, k_center_greedy

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


@dataclass
class TrainResult:
    path: Path
    sha256: str
    threshold: float
    memory_bank_size: int
    training_images: int
    normal_scores: list[float]
    anomalous_scores: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ValueError(f"{folder} holds no .png or .jpg images")
    return found


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The serving checks and preprocessing, so training sees what serving sees."""
    data = path.read_bytes()
    try:
        return to_model_input(data, inspect_image(data), size)
    except InvalidImage as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _batches(paths: Sequence[Path], n: int) -> Iterator[Sequence[Path]]:
    for i in range(0, len(paths), n):
        yield paths[i : i + n]


def _bar(total: int, desc: str, quiet: bool, unit: str = "img") -> tqdm[Any]:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def _score(
    scorer: PatchCoreScorer,
    paths: Sequence[Path],
    cfg: TrainConfig,
    dev: torch.device,
    quiet: bool,
    desc: str,
) -> list[float]:
    out: list[float] = []
    size = scorer.input_size
    with _bar(len(paths), desc, quiet) as bar, torch.inference_mode():
        for chunk in _batches(paths, cfg.batch_size):
            x = torch.from_numpy(np.stack([load_image(p, size) for p in chunk])).to(dev)
            out.extend(float(s) for s in scorer(x)[0].cpu())
            bar.update(len(chunk))
    return out


@dataclass
class _Fitted:
    """One candidate fitted on the training images and scored on the held-out ones."""

    scorer: PatchCoreScorer
    backbone: torch.nn.Sequential
    bank: torch.Tensor
    patches: int
    seconds: float
    normal_scores: list[float] = field(default_factory=list)
    anomalous_scores: list[float] = field(default_factory=list)


def _image_side(path: Path) -> int:
    data = path.read_bytes()
    try:
        header = inspect_image(data)
    except InvalidImage as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return min(header.width, header.height)


def _fit(
    cand: selection.Candidate,
    fit: Sequence[Path],
    cfg: TrainConfig,
    dev: torch.device,
    quiet: bool,
    tag: str,
) -> _Fitted:
    """Embed the training images and pick the coreset memory bank."""
    t0 = time.perf_counter()
    spec = get_spec(cand.backbone)
    idx = layer_indices(spec, cand.layers)
    backbone = spec.build(idx[-1])
    backbone.load_state_dict(spec.pretrained(idx[-1]), strict=True)
    embedder = PatchEmbedder(backbone, idx, spec.mean, spec.std, cand.neighbourhood)
    embedder = embedder.eval().to(dev)
    size = (cand.input_size, cand.input_size)
    chunks: list[torch.Tensor] = []
    with _bar(len(fit), f"{tag}embedding", quiet) as bar, torch.inference_mode():
        for chunk in _batches(fit, cfg.batch_size):
            x = torch.from_numpy(np.stack([load_image(p, size) for p in chunk])).to(dev)
            feats = embedder(x)
            chunks.append(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).float().cpu())
            bar.update(len(chunk))
    patches = torch.cat(chunks)
    k = max(1, min(cfg.max_bank, int(cfg.coreset_ratio * len(patches))))
    with _bar(k, f"{tag}coreset", quiet, unit="patch") as bar:
        chosen = k_center_greedy(patches, k, cfg.seed, progress=bar.update)
    bank = patches[chosen].contiguous()
    scorer = PatchCoreScorer(embedder, bank.to(dev), size, cfg.blur_sigma).eval()
    return _Fitted(scorer, backbone, bank, len(patches), time.perf_counter() - t0)


def _judge(
    cand: selection.Candidate,
    one: _Fitted,
    held: Sequence[Path],
    anomalous: Sequence[Path],
    cfg: TrainConfig,
    dev: torch.device,
    quiet: bool,
    tag: str,
) -> selection.Outcome:
    """Score the held-out images; AUROC and F1 on real or pseudo-anomalies."""
    t0 = time.perf_counter()
    one.normal_scores = _score(one.scorer, held, cfg, dev, quiet, f"{tag}scoring normal")
    one.anomalous_scores = _score(one.scorer, anomalous, cfg, dev, quiet, f"{tag}scoring anomalous")
    if anomalous:
        scores = one.normal_scores + one.anomalous_scores
        labels = [0] * len(held) + [1] * len(anomalous)
        t = evaluation.f1_optimal_threshold(scores, labels)
        f1 = evaluation.precision_recall_f1(scores, labels, t).f1
        auroc, pseudo = evaluation.auroc(scores, labels), False
    else:
        size = one.scorer.input_size
        images = [load_image(p, size) for p in held]
        fakes = selection.pseudo_anomalies(images, cfg.seed)
        fake_scores = _score_arrays(one.scorer, fakes, cfg, dev)
        labels = [0] * len(held) + [1] * len(fakes)
        auroc = evaluation.auroc(one.normal_scores + fake_scores, labels)
        f1, pseudo = float("nan"), True
    return selection.Outcome(
        candidate=cand,
        auroc=auroc,
        f1=f1,
        fit_seconds=one.seconds + time.perf_counter() - t0,
        bank=len(one.bank),
        pseudo=pseudo,
    )


def _score_arrays(
    scorer: PatchCoreScorer, images: Sequence[np.ndarray], cfg: TrainConfig, dev: torch.device
) -> list[float]:
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(images), cfg.batch_size):
            x = torch.from_numpy(np.stack(images[i : i + cfg.batch_size])).to(dev)
            out.extend(float(s) for s in scorer(x)[0].cpu())
    return out


def _serving_ms(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> float:
    """CPU serving cost of the kept model: `vigil serve`'s CPU runtime (ONNX
    Runtime) on batches of 8, after a warm-up, on this machine."""
    full = {**meta, "tensors_sha256": tensors_sha256(tensors), "model_version": "probe"}
    model = AnomalyModel(Artifact(full, tensors), device="cpu", runtime="onnxruntime")
    h, w = model.input_size
    batch = [np.zeros((3, h, w), dtype=np.uint8)] * 8
    model.predict(batch)
    t0 = time.perf_counter()
    for _ in range(3):
        model.predict(batch)
    return (time.perf_counter() - t0) * 1000 / (3 * len(batch))


def _selection_record(
    outcomes: Sequence[selection.Outcome],
    win: int,
    why: str,
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """What the training summary keeps about the candidates (JSON)."""
    return {
        "kept": outcomes[win].candidate.name,
        "reason": why,
        "measure": "pseudo_auroc" if outcomes[win].pseudo else "auroc",
        "serving_ms_per_image": round(_serving_ms(meta, tensors), 2),
        "serving_runtime": "onnxruntime, CPU, batch 8",
        "candidates": [
            {
                "name": o.candidate.name,
                "backbone": o.candidate.backbone,
                "input_size": o.candidate.input_size,
                "feature_layers": list(o.candidate.layers),
                "neighbourhood": o.candidate.neighbourhood,
                "auroc": o.auroc,
                "f1": None if np.isnan(o.f1) else o.f1,
                "memory_bank": o.bank,
                "fit_seconds": round(o.fit_seconds, 2),
                "relative_cost": round(o.candidate.cost, 2),
            }
            for o in outcomes
        ],
        "table": selection.table(outcomes, win),
    }


def _split(items: Sequence[Path], rng: np.random.Generator) -> tuple[list[Path], list[Path]]:
    order = rng.permutation(len(items))
    half = len(items) // 2
    return [items[i] for i in order[:half]], [items[i] for i in order[half:]]


def _given(images: str | Path | Sequence[Path] | None) -> list[Path]:
    """A folder's images, or a list of image paths as given (from a manifest)."""
    if images is None:
        return []
    if isinstance(images, str | Path):
        return list_images(images)
    return list(images)


def _held_and_fit(
    normal: Sequence[Path],
    held_out: Sequence[Path] | None,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> tuple[list[Path], list[Path]]:
    """Check the inputs, then split the normal images into held-out (they set
    the threshold) and training ones (they build the memory bank)."""
    if len(normal) < (1 if held_out else 2):
        raise ValueError(
            f"need at least {1 if held_out else 2} normal images (found {len(normal)}): "
            "one to learn from, one to set the threshold"
        )
    if not 0 < cfg.holdout < 1:
        raise ValueError("--holdout must be between 0 and 1")
    if not 0 < cfg.coreset_ratio <= 1:
        raise ValueError("--coreset-ratio must be in (0, 1]")
    order = rng.permutation(len(normal))  # drawn even with held_out: later splits stay seeded
    n_hold = min(len(normal) - 1, max(1, round(cfg.holdout * len(normal))))
    if held_out:
        return list(held_out), list(normal)
    return [normal[i] for i in order[:n_hold]], [normal[i] for i in order[n_hold:]]


@dataclass
class _Selected:
    """The kept candidate and the record of how it was chosen."""

    cand: selection.Candidate
    fitted: _Fitted
    outcomes: list[selection.Outcome]
    win: int
    why: str


def _select(
    fit: Sequence[Path],
    held: Sequence[Path],
    anomalous: Sequence[Path],
    cfg: TrainConfig,
    dev: torch.device,
    quiet: bool,
) -> _Selected:
    """Fit and judge every candidate, keep the best; the losers' banks and
    backbones are let go as soon as the choice is made."""
    sides = [_image_side(p) for p in fit]
    cands = selection.candidates(sides, cfg.backbone, cfg.input_size, cfg.feature_layers)
    fitted: list[_Fitted] = []
    outcomes: list[selection.Outcome] = []
    for n, cand in enumerate(cands, 1):
        tag = f"[{n}/{len(cands)} {cand.name}] " if len(cands) > 1 else ""
        one = _fit(cand, fit, cfg, dev, quiet, tag)
        outcomes.append(_judge(cand, one, held, anomalous, cfg, dev, quiet, tag))
        fitted.append(one)
    win, why = selection.choose(outcomes)
    return _Selected(cands[win], fitted[win], outcomes, win, why)


def _graded_threshold(
    held: list[Path],
    anomalous: list[Path],
    kept: _Fitted,
    rng: np.random.Generator,
    metrics: dict[str, Any],
) -> tuple[float, tuple[list[Path], list[Path]]]:
    """With anomalous examples: an F1-optimal threshold on one half of the
    held-out images, graded on the other (both halves when too few to split).
    Returns the threshold and the graded (normal, anomalous) images."""
    normal_scores, anom_scores = kept.normal_scores, kept.anomalous_scores
    by_path = dict(zip(held + anomalous, normal_scores + anom_scores, strict=True))
    independent = len(held) >= 2 and len(anomalous) >= 2
    if independent:
        cal_n, test_n = _split(held, rng)
        cal_a, test_a = _split(anomalous, rng)
    else:  # too few to split: say so rather than pretend
        cal_n, test_n, cal_a, test_a = held, held, anomalous, anomalous
    cal = [by_path[p] for p in cal_n + cal_a]
    threshold = evaluation.f1_optimal_threshold(cal, [0] * len(cal_n) + [1] * len(cal_a))
    test = [by_path[p] for p in test_n + test_a]
    labels = [0] * len(test_n) + [1] * len(test_a)
    s = evaluation.precision_recall_f1(test, labels, threshold)
    metrics.update(
        precision=s.precision,
        recall=s.recall,
        f1=s.f1,
        auroc=evaluation.auroc(normal_scores + anom_scores, [0] * len(held) + [1] * len(anomalous)),
        threshold_independent=independent,
    )
    return threshold, (test_n, test_a)


def _normal_only_threshold(
    normal_scores: list[float], cfg: TrainConfig, metrics: dict[str, Any]
) -> float:
    """Without anomalous examples: the Gumbel rule for `target_fpr`, with the
    rate it expects and the share of held-out normal images above it."""
    threshold = evaluation.normal_only_threshold(normal_scores, cfg.target_fpr)
    fpr = float(np.mean(np.asarray(normal_scores) > threshold))
    metrics.update(
        false_positive_rate=fpr,
        expected_false_positive_rate=evaluation.gumbel_exceedance(normal_scores, threshold),
        target_false_positive_rate=cfg.target_fpr,
        threshold_independent=False,
    )
    return threshold


def _type_head(
    types: anomaly_types.TypeTraining,
    kept: _Selected,
    graded: tuple[list[Path], list[Path]],
    threshold: float,
    cfg: TrainConfig,
    dev: torch.device,
    metrics: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """Learn the named anomaly types on the kept model's features and grade
    them on the graded images; returns the head's tensors for the artifact."""
    size = (kept.cand.input_size, kept.cand.input_size)
    load = functools.partial(load_image, size=size)
    scorer = kept.fitted.scorer
    head = anomaly_types.fit_head(
        scorer, types.samples, types.types, load, dev, cfg.seed, threshold
    )
    bank = kept.fitted.bank.to(dev)
    typed = anomaly_types.TypedScorer(scorer.embedder, bank, size, cfg.blur_sigma, head)
    metrics.update(anomaly_types.grade(typed.eval(), types, *graded, threshold, load, dev))
    return {anomaly_types.FEATURES_KEY: head.features, anomaly_types.LABELS_KEY: head.labels}


def _artifact_meta(
    cand: selection.Candidate,
    threshold: float,
    normal_scores: list[float],
    cfg: TrainConfig,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The artifact's metadata: how to rebuild the scorer and read its scores.
    `metrics` is kept by reference, so what is added to it later is saved too."""
    median = float(np.median(normal_scores))
    score_scale = max((threshold - median) / 3.0, 1e-3 * abs(threshold), 1e-6)
    return {
        "model_version": cfg.version,
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "backbone": cand.backbone,
        "backbone_source": get_spec(cand.backbone).source,
        "feature_layers": list(cand.layers),
        "neighbourhood": cand.neighbourhood,
        "input_size": [cand.input_size, cand.input_size],
        "threshold": threshold,
        "score_scale": score_scale,
        "blur_sigma": cfg.blur_sigma,
        "training": metrics,
    }


def train(
    normal_dir: str | Path | Sequence[Path],
    anomalous_dir: str | Path | Sequence[Path] | None,
    out: str | Path,
    cfg: TrainConfig = TrainConfig(),
    quiet: bool = False,
    *,
    held_out: Sequence[Path] | None = None,
    types: anomaly_types.TypeTraining | None = None,
) -> TrainResult:
    """Fit and save a model. `held_out`: normal images to set the threshold
    with (a test manifest's) instead of a seeded share of `normal_dir`;
    `types`: colour-coded masks to learn named anomaly types from."""
    normal = _given(normal_dir)
    anomalous = _given(anomalous_dir)
    rng = np.random.default_rng(cfg.seed)
    held, fit = _held_and_fit(normal, held_out, cfg, rng)
    dev = resolve_device(cfg.device)
    kept = _select(fit, held, anomalous, cfg, dev, quiet)
    bank, normal_scores = kept.fitted.bank, kept.fitted.normal_scores
    metrics: dict[str, Any] = {
        "training_images": len(fit),
        "normal_test_images": len(held),
        "anomalous_test_images": len(anomalous),
        "coreset_ratio": cfg.coreset_ratio,
        "seed": cfg.seed,
        "patches": kept.fitted.patches,
    }
    if anomalous:
        threshold, graded = _graded_threshold(held, anomalous, kept.fitted, rng, metrics)
    else:
        threshold = _normal_only_threshold(normal_scores, cfg, metrics)
    tensors = {"memory_bank": bank}
    if types is not None:
        if not anomalous:
            raise ValueError("anomaly types need anomalous test images to be graded on")
        tensors.update(_type_head(types, kept, graded, threshold, cfg, dev, metrics))
    backbone = kept.fitted.backbone.state_dict()
    tensors.update({f"backbone.{k}": v for k, v in backbone.items()})
    meta = _artifact_meta(kept.cand, threshold, normal_scores, cfg, metrics)
    if types is not None:
        meta.update(anomaly_types.types_meta(types.types, types.background))
    metrics["selection"] = _selection_record(kept.outcomes, kept.win, kept.why, meta, tensors)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cfg.version:  # version from the content, so equal models share it
        meta["model_version"] = tensors_sha256(tensors)[:12]
    sha = save_artifact(out, meta, tensors)
    anom_scores = kept.fitted.anomalous_scores
    return TrainResult(
        out, sha, threshold, len(bank), len(fit), normal_scores, anom_scores, metrics
    )


def summary(result: TrainResult) -> str:
    """The evaluation in Lookout's words."""
    m = result.metrics
    sel = m.get("selection") or {}
    lines = []
    if sel:
        lines += [
            "Candidates, scored on the held-out images"
            + (" with pseudo-anomalies:" if sel["measure"] == "pseudo_auroc" else ":"),
            sel["table"],
            f"Kept {sel['kept']}: {sel['reason']}; serving {sel['serving_ms_per_image']:.1f} "
            f"ms/image ({sel['serving_runtime']}, this machine)",
        ]
    lines += [
        f"Model {result.path} (version {result.sha256[:12]}, "
        f"{result.memory_bank_size} memory-bank patches from {result.training_images} "
        "training images)"
    ]
    if m.get("anomalous_test_images"):
        how = (
            "threshold chosen on the other half of the held-out images"
            if m["threshold_independent"]
            else "too few images to split: threshold chosen on these same images"
        )
        lines += [
            f"Evaluation on {m['normal_test_images']} held-out normal and "
            f"{m['anomalous_test_images']} anomalous images ({how}):",
            f"  Precision  {m['precision']:.3f}",
            f"  Recall     {m['recall']:.3f}",
            f"  F1 score   {m['f1']:.3f}",
            f"  AUROC      {m['auroc']:.3f}",
        ]
        lines += anomaly_types.summary_lines(m)
    elif m["normal_test_images"] < evaluation.MIN_FIT:
        lines += [
            f"No anomalous images given: threshold set just above the highest of "
            f"{m['normal_test_images']} held-out normal scores (too few to fit their "
            "distribution: give more normal images).",
            "  Give --anomalous DIR for precision, recall, F1 and AUROC.",
        ]
    else:
        lines += [
            f"No anomalous images given: threshold set for an expected false-positive rate of "
            f"{m['expected_false_positive_rate']:.1%} (Gumbel fit to "
            f"{m['normal_test_images']} held-out normal scores; "
            f"{m['false_positive_rate']:.1%} of them are above it).",
            "  Give --anomalous DIR for precision, recall, F1 and AUROC.",
        ]
    lines.append(f"Threshold {result.threshold:.4f} (an image scoring above it is anomalous)")
    return "\n".join(lines)


def train_command(args: argparse.Namespace) -> int:
    """`vigil train`: fit, save, print the evaluation."""
    if args.manifest and (args.normal or args.anomalous):
        print("vigil train: error: --manifest replaces --normal/--anomalous", file=sys.stderr)
        return 2
    if not args.manifest and not args.normal:
        print("vigil train: error: give --normal DIR or --manifest FILE", file=sys.stderr)
        return 2
    cfg = from_flags(TrainConfig, args)
    if args.manifest:
        from vigil_inference.lookout_train import train_datasets

        result = train_datasets(args.manifest, args.out, cfg, quiet=args.quiet)
    else:
        result = train(args.normal, args.anomalous, args.out, cfg, quiet=args.quiet)
    print(summary(result))
    return 0
