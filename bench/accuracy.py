"""Image AUROC and F1 on real photographs with synthetic defects.

The photographs are the textures scikit-image ships (brick, grass, gravel:
512x512 grayscale camera images), so nothing is downloaded. Training tiles
come from the left 60 % of each photo and test tiles from the right 40 %,
so no test pixel was ever seen in training. Defects (foreign patch,
scratch, stain) are painted onto half of the test tiles.

For each memory-bank cap it also measures the CPU scoring time, since the
nearest-neighbour search dominates it: the table shows what a smaller bank
costs in accuracy and buys in speed.

Last line: summary auroc_mean=... f1_mean=... (at the default bank cap).
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference-server"))

from vigil_inference import synthetic  # noqa: E402
from vigil_inference.evaluation import auroc, precision_recall_f1  # noqa: E402
from vigil_inference.images import inspect_image  # noqa: E402
from vigil_inference.model import AnomalyModel  # noqa: E402
from vigil_inference.trainer import TrainConfig, train  # noqa: E402

TEXTURES = ("brick", "grass", "gravel")
TILE = 160


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


def run_texture(
    name: str, banks: list[int], n_train: int, n_test: int, strength: float, work: Path
) -> list[dict[str, float]]:
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
    dirs = {}
    for label, imgs in (
        ("normal", train_tiles),
        ("cal_normal", cal_normal),
        ("anomalous", cal_anom),
    ):
        d = work / name / label
        d.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(imgs):
            (d / f"{i:03d}.png").write_bytes(png(im))
        dirs[label] = d
    # Train on normal tiles; the trainer's own held-out split sets the threshold
    # with the calibration anomalies. The test tiles below are never seen.
    for im_path in dirs["cal_normal"].iterdir():
        (dirs["normal"] / f"cal-{im_path.name}").write_bytes(im_path.read_bytes())
    test = [png(t) for t in test_normal + test_anom]
    labels = [0] * len(test_normal) + [1] * len(test_anom)
    rows = []
    for bank in banks:
        out = work / name / f"bank{bank}.vigil"
        cfg = TrainConfig(max_bank=bank, holdout=n_test / (n_train + n_test), seed=0)
        train(dirs["normal"], dirs["anomalous"], out, cfg, quiet=True)
        model = AnomalyModel.load(out)
        prepared = [model.prepare(d, inspect_image(d)) for d in test]
        model.predict(prepared[:8])
        t0 = time.perf_counter()
        scores = np.concatenate(
            [model.predict(prepared[i : i + 8])[0] for i in range(0, len(prepared), 8)]
        )
        ms = (time.perf_counter() - t0) / len(prepared) * 1000
        prf = precision_recall_f1(scores, labels, model.threshold)
        rows.append(
            {
                "bank": bank,
                "size": model.info.memory_bank_size,
                "auroc": auroc(scores, labels),
                "f1": prf.f1,
                "precision": prf.precision,
                "recall": prf.recall,
                "ms": ms,
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--banks", default="1024,2048,4096", help="memory-bank caps to compare")
    ap.add_argument("--default-bank", type=int, default=TrainConfig().max_bank)
    ap.add_argument("--train", type=int, default=60, help="normal training tiles per texture")
    ap.add_argument("--test", type=int, default=24, help="test tiles per class and texture")
    ap.add_argument(
        "--strength",
        type=float,
        default=0.35,
        help="defect opacity: 1 paints it fully, lower blends it in (fainter)",
    )
    args = ap.parse_args()
    banks = sorted({int(b) for b in args.banks.split(",")} | {args.default_bank})
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"python {platform.python_version()}; tiles {TILE}px, input 224px, "
        f"defect strength {args.strength}"
    )
    print(
        f"{'texture':8} {'bank':>5} {'kept':>5} {'AUROC':>6} {'F1':>6} {'prec':>6} "
        f"{'recall':>6} {'ms/img':>7}"
    )
    by_bank: dict[int, list[dict[str, float]]] = {b: [] for b in banks}
    with tempfile.TemporaryDirectory() as tmp:
        for name in TEXTURES:
            for row in run_texture(name, banks, args.train, args.test, args.strength, Path(tmp)):
                by_bank[int(row["bank"])].append(row)
                print(
                    f"{name:8} {row['bank']:5.0f} {row['size']:5.0f} {row['auroc']:6.3f} "
                    f"{row['f1']:6.3f} {row['precision']:6.3f} {row['recall']:6.3f} "
                    f"{row['ms']:7.1f}",
                    flush=True,
                )
    for bank, rows in by_bank.items():
        print(
            f"mean     {bank:5d}       {np.mean([r['auroc'] for r in rows]):6.3f} "
            f"{np.mean([r['f1'] for r in rows]):6.3f}{'':14}"
            f"{np.mean([r['ms'] for r in rows]):7.1f}"
        )
    d = by_bank[args.default_bank]
    print(
        f"summary auroc_mean={np.mean([r['auroc'] for r in d]):.3f} "
        f"f1_mean={np.mean([r['f1'] for r in d]):.3f} max_bank={args.default_bank} "
        f"ms_per_image={np.mean([r['ms'] for r in d]):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
