"""ONNX Runtime against eager torch (and OpenVINO) for the same scorer on this CPU.

The unit picks ONNX Runtime on a CPU because it measures faster; this
benchmark is that measurement. The runtimes load the same artifact and
score the same prepared images in the same process, batch sizes side by side.
Where `openvino` is installed (in `.venv-peers`, not in the product:
`.venv-peers/bin/python bench/runtimes.py`), OpenVINO compiles the same ONNX
export for the CPU twice, at fp32 and at its default precision (bf16 on CPUs
that have it), and its largest score difference from ONNX Runtime is printed.

Last line: summary ort_over_torch=R (throughput ratio at each one's best batch
size) [openvino_f32_over_ort=R openvino_default_over_ort=R openvino_max_score_diff=X]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference-server"))

from vigil_inference import synthetic  # noqa: E402
from vigil_inference.artifact import load_artifact  # noqa: E402
from vigil_inference.model import AnomalyModel, build_scorer  # noqa: E402
from vigil_inference.options import TrainConfig  # noqa: E402
from vigil_inference.trainer import train  # noqa: E402

Predict = Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]]


def throughput(predict: Predict, images: list[np.ndarray], batch: int, rounds: int) -> float:
    predict(images[:batch])
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            predict(images[i : i + batch])
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def openvino_runners(path: Path) -> dict[str, Predict]:
    """The scorer's ONNX export (made as the unit makes it) compiled by OpenVINO."""
    import openvino as ov

    scorer = build_scorer(load_artifact(path)).cpu()
    h, w = scorer.input_size
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer,
            (torch.zeros(1, 3, h, w, dtype=torch.uint8),),
            buf,  # type: ignore[arg-type]
            dynamo=False,
            input_names=["pixels"],
            output_names=["scores", "maps"],
            dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}, "maps": {0: "n"}},
            opset_version=17,
        )
    core = ov.Core()
    graph = core.read_model(model=buf.getvalue())
    runners: dict[str, Predict] = {}
    for name, precision in (("openvino_f32", "f32"), ("openvino_default", None)):
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        request = core.compile_model(graph, "CPU", config).create_infer_request()

        def run(inputs: list[np.ndarray], request: Any = request) -> tuple[np.ndarray, np.ndarray]:
            out = request.infer({0: np.stack(inputs)})
            return np.asarray(out[0]), np.asarray(out[1])

        runners[name] = run
    return runners


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
        runners: dict[str, Predict] = {"torch": eager.predict, "onnxruntime": ort.predict}
        openvino = openvino_runners(path) if importlib.util.find_spec("openvino") else {}
        runners |= openvino
        h, w = ort.input_size
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for _ in range(args.images)]
        print(
            f"cpu threads {torch.get_num_threads()}, memory bank {ort.info.memory_bank_size}, "
            f"input {h}x{w}"
        )
        print(f"{'batch':>5}" + "".join(f"{name + ' img/s':>24}" for name in runners))
        best = dict.fromkeys(runners, 0.0)
        for batch in (1, 4, 8):
            row = {
                name: throughput(run, images, batch, args.rounds) for name, run in runners.items()
            }
            for name, rate in row.items():
                best[name] = max(best[name], rate)
            print(f"{batch:5d}" + "".join(f"{rate:24.1f}" for rate in row.values()), flush=True)
        extra = ""
        if openvino:
            ref = ort.predict(images[:8])[0]
            diffs = {
                k: float(np.abs(run(images[:8])[0] - ref).max()) for k, run in openvino.items()
            }
            ort_best = best["onnxruntime"]
            extra = "".join(
                f" {k}_over_ort={best[k] / ort_best:.2f} {k}_max_score_diff={diffs[k]:.4f}"
                for k in openvino
            )
            extra += f" threshold={ort.threshold:.3f}"
    print(
        f"summary ort_over_torch={best['onnxruntime'] / best['torch']:.2f} "
        f"torch_images_per_s={best['torch']:.1f} ort_images_per_s={best['onnxruntime']:.1f}{extra}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
