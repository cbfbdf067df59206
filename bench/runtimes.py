"""ONNX Runtime against eager torch for the same scorer on this machine's CPU.

The unit picks ONNX Runtime on a CPU because it measures faster; this
benchmark is that measurement. Both runtimes load the same artifact and
score the same prepared images in the same process, batch sizes side by side.

Last line: summary ort_over_torch=R (throughput ratio at each one's best batch size)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference-server"))

from vigil_inference import synthetic  # noqa: E402
from vigil_inference.model import AnomalyModel  # noqa: E402
from vigil_inference.trainer import TrainConfig, train  # noqa: E402


def throughput(model: AnomalyModel, images: list[np.ndarray], batch: int, rounds: int) -> float:
    model.predict(images[:batch])
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            model.predict(images[i : i + batch])
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help=".vigil artifact (default: train a small one)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            normal, anomalous = synthetic.write_dataset(Path(tmp), 30, 10, seed=0)
            path = Path(tmp) / "m.vigil"
            train(normal, anomalous, path, TrainConfig(seed=0), quiet=True)
        ort = AnomalyModel.load(path, device="cpu", runtime="onnxruntime")
        eager = AnomalyModel.load(path, device="cpu", runtime="torch")
        h, w = ort.input_size
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for _ in range(args.images)]
        print(
            f"cpu threads {torch.get_num_threads()}, memory bank {ort.info.memory_bank_size}, "
            f"input {h}x{w}"
        )
        print(f"{'batch':>5} {'torch img/s':>12} {'onnxruntime img/s':>18} {'ratio':>6}")
        best = {"torch": 0.0, "ort": 0.0}
        for batch in (1, 4, 8):
            t = throughput(eager, images, batch, args.rounds)
            o = throughput(ort, images, batch, args.rounds)
            best["torch"], best["ort"] = max(best["torch"], t), max(best["ort"], o)
            print(f"{batch:5d} {t:12.1f} {o:18.1f} {o / t:6.2f}", flush=True)
    print(
        f"summary ort_over_torch={best['ort'] / best['torch']:.2f} "
        f"torch_images_per_s={best['torch']:.1f} ort_images_per_s={best['ort']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
