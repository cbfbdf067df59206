"""Image AUROC and F1 on real photographs with synthetic defects: the old
default model (MobileNetV2, 224 px) against `vigil train`'s selection, side
by side, with training time and CPU serving cost.

The photographs ship with scikit-image, so nothing is downloaded:

- tuned on: brick, grass, gravel (512x512 grayscale camera images). The
  backbones' layers, the input sides and the selection tolerance were chosen
  looking at these.
- held out of all tuning: immunohistochemistry (a 512x512 colour microscope
  image of stained tissue) and moon (512x512 grayscale lunar surface). Their
  figures were first seen after every choice was made.

Training tiles come from the left 60 % of each photo and test tiles from the
right 40 %, so no test pixel was ever seen in training. Defects (foreign
patch, scratch, stain) are painted onto half of the calibration tiles (given
to `vigil train` as --anomalous) and onto half of the test tiles (never given
to it). The test tiles are scored by the saved artifact through the serving
path (`AnomalyModel`, ONNX Runtime on the CPU).

The normal-only threshold (`vigil train` without --anomalous) is measured on
the same test tiles: the old rule (just above the highest held-out normal
score) against the Gumbel fit at the default target false-positive rate.

Serving ms/image: batches of 8 prepared images, the two models timed in
alternation (best of 3 rounds), so a busy neighbour slows both alike.

Last line: summary old_auroc_mean=... new_auroc_mean=... new_auroc_min=...
throughput_ratio=...
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference-server"))

from vigil_inference import synthetic  # noqa: E402
from vigil_inference.evaluation import (  # noqa: E402
    auroc,
    normal_only_threshold,
    precision_recall_f1,
)
from vigil_inference.images import inspect_image  # noqa: E402
from vigil_inference.model import AnomalyModel  # noqa: E402
from vigil_inference.options import DEFAULT_TARGET_FPR, TrainConfig  # noqa: E402
from vigil_inference.trainer import TrainResult, train  # noqa: E402

TUNED = ("brick", "grass", "gravel")
HELD_OUT = ("immunohistochemistry", "moon")
TILE = 160
OLD = TrainConfig(backbone="mobilenet_v2", input_size=224, seed=0)


def tiles(photo: np.ndarray, x_lo: int, x_hi: int, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo
    out = []
    for _ in range(n):
        y = int(rng.integers(0, rgb.shape[0] - TILE))
        x = int(rng.integers(x_lo, x_hi - TILE))
        out.append(np.ascontiguousarray(rgb[y : y + TILE, x : x + TILE]))
    return out


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def serving_ms(models: list[AnomalyModel], images: list[bytes], rounds: int = 3) -> list[float]:
    """Best-of-`rounds` ms/image per model, timed in alternation."""
    prepared = [[m.prepare(d, inspect_image(d)) for d in images] for m in models]
    best = [float("inf")] * len(models)
    for _ in range(rounds):
        for i, m in enumerate(models):
            batches = [prepared[i][j : j + 8] for j in range(0, len(images), 8)]
            m.predict(batches[0])
            t0 = time.perf_counter()
            for b in batches:
                m.predict(b)
            best[i] = min(best[i], (time.perf_counter() - t0) * 1000 / len(images))
    return best


def run_texture(
    name: str, n_train: int, n_test: int, strength: float, work: Path
) -> dict[str, Any]:
    import skimage.data

    photo = getattr(skimage.data, name)()
    split = int(photo.shape[1] * 0.6)
    train_tiles = tiles(photo, 0, split, n_train, seed=1)
    cal_normal = tiles(photo, split, photo.shape[1], n_test, seed=2)
    test_normal = tiles(photo, split, photo.shape[1], n_test, seed=3)
    kinds = synthetic.DEFECTS
    cal_anom = [
        synthetic.add_defect(t, 10 + i, kinds[i % 3], strength)[0]
        for i, t in enumerate(tiles(photo, split, photo.shape[1], n_test, seed=4))
    ]
    test_anom = [
        synthetic.add_defect(t, 50 + i, kinds[i % 3], strength)[0]
        for i, t in enumerate(tiles(photo, split, photo.shape[1], n_test, seed=5))
    ]
    normal_dir, anom_dir = work / name / "normal", work / name / "anomalous"
    for d, imgs, prefix in (
        (normal_dir, train_tiles, ""),
        (normal_dir, cal_normal, "cal-"),
        (anom_dir, cal_anom, ""),
    ):
        d.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(imgs):
            (d / f"{prefix}{i:03d}.png").write_bytes(png(im))
    # The trainer holds out n_test of the normal tiles (the calibration ones
    # in expectation) and, with the calibration anomalies, chooses the
    # candidate and the threshold. The test tiles below are never seen.
    holdout = n_test / (n_train + n_test)
    test = [png(t) for t in test_normal + test_anom]
    labels = [0] * len(test_normal) + [1] * len(test_anom)
    row: dict[str, Any] = {"texture": name}
    models: list[AnomalyModel] = []
    for tag, cfg in (("old", OLD), ("new", TrainConfig(seed=0))):
        cfg = TrainConfig(**{**cfg.__dict__, "holdout": holdout})
        out = work / name / f"{tag}.vigil"
        t0 = time.perf_counter()
        result: TrainResult = train(normal_dir, anom_dir, out, cfg, quiet=True)
        row[f"{tag}_train_s"] = time.perf_counter() - t0
        model = AnomalyModel.load(out, device="cpu")
        models.append(model)
        scores = np.concatenate(
            [
                model.predict([model.prepare(d, inspect_image(d)) for d in test[i : i + 8]])[0]
                for i in range(0, len(test), 8)
            ]
        )
        prf = precision_recall_f1(scores, labels, model.threshold)
        row[f"{tag}_auroc"] = auroc(scores, labels)
        row[f"{tag}_f1"] = prf.f1
        row[f"{tag}_kept"] = f"{model.info.backbone}@{model.info.input_size[0]}"
        # Normal-only thresholds from the same held-out normal scores.
        normal_scores = np.asarray(result.normal_scores)
        neg, pos = scores[: len(test_normal)], scores[len(test_normal) :]
        for rule, t in (
            ("max", float(normal_scores.max() * (1 + 1e-6))),
            ("gumbel", normal_only_threshold(normal_scores, DEFAULT_TARGET_FPR)),
        ):
            row[f"{tag}_{rule}_fpr"] = float(np.mean(neg > t))
            row[f"{tag}_{rule}_recall"] = float(np.mean(pos > t))
    row["old_ms"], row["new_ms"] = serving_ms(models, test)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=60, help="normal training tiles per texture")
    ap.add_argument("--test", type=int, default=24, help="test tiles per class and texture")
    ap.add_argument(
        "--strength",
        type=float,
        default=0.35,
        help="defect opacity: 1 paints it fully, lower blends it in (fainter)",
    )
    ap.add_argument("--textures", default=",".join(TUNED + HELD_OUT))
    args = ap.parse_args()
    names = args.textures.split(",")
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"python {platform.python_version()}; tiles {TILE}px, defect strength {args.strength}; "
        f"old = mobilenet_v2@224, new = vigil train's selection"
    )
    print(
        f"{'texture':21} {'old AUROC':>9} {'F1':>5} {'new AUROC':>9} {'F1':>5} "
        f"{'kept':22} {'train s':>11} {'ms/img':>11}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            r = run_texture(name, args.train, args.test, args.strength, Path(tmp))
            rows.append(r)
            label = name + ("*" if name in HELD_OUT else "")
            print(
                f"{label:21} {r['old_auroc']:9.3f} {r['old_f1']:5.3f} {r['new_auroc']:9.3f} "
                f"{r['new_f1']:5.3f} {r['new_kept']!s:22} "
                f"{r['old_train_s']:5.0f}/{r['new_train_s']:<5.0f} "
                f"{r['old_ms']:5.1f}/{r['new_ms']:<5.1f}",
                flush=True,
            )

    def mean(key: str) -> float:
        return float(np.mean([float(r[key]) for r in rows]))

    print(
        f"{'mean':21} {mean('old_auroc'):9.3f} {mean('old_f1'):5.3f} {mean('new_auroc'):9.3f} "
        f"{mean('new_f1'):5.3f} {'':22} {mean('old_train_s'):5.0f}/{mean('new_train_s'):<5.0f} "
        f"{mean('old_ms'):5.1f}/{mean('new_ms'):<5.1f}"
    )
    print("(* held out of all tuning)")
    print(f"normal-only threshold on the test tiles (new model), target FPR {DEFAULT_TARGET_FPR}:")
    print(f"{'texture':21} {'max FPR':>8} {'recall':>7} {'gumbel FPR':>11} {'recall':>7}")
    for r in rows:
        print(
            f"{r['texture']!s:21} {r['new_max_fpr']:8.3f} {r['new_max_recall']:7.3f} "
            f"{r['new_gumbel_fpr']:11.3f} {r['new_gumbel_recall']:7.3f}"
        )
    print(
        f"{'mean':21} {mean('new_max_fpr'):8.3f} {mean('new_max_recall'):7.3f} "
        f"{mean('new_gumbel_fpr'):11.3f} {mean('new_gumbel_recall'):7.3f}"
    )
    new_min = min(float(r["new_auroc"]) for r in rows)
    ratio = sum(float(r["old_ms"]) for r in rows) / sum(float(r["new_ms"]) for r in rows)
    print(
        f"summary old_auroc_mean={mean('old_auroc'):.3f} new_auroc_mean={mean('new_auroc'):.3f} "
        f"new_auroc_min={new_min:.3f} old_f1_mean={mean('old_f1'):.3f} "
        f"new_f1_mean={mean('new_f1'):.3f} throughput_ratio={ratio:.2f} "
        f"new_train_s_mean={mean('new_train_s'):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
