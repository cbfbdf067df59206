"""How well the anomaly-type classifier names defects, against alternatives.

Generated fabric (synthetic.py) with three drawn defect types (scratch,
blotch, foreign patch) and colour-coded masks, in a Lookout export's layout:
a training manifest (the types are learned from its anomalies) and a test
manifest (the figures come from it, images never seen in training). One
model is trained; its memory bank and threshold are shared, and only the way
anomalous pixels are named changes:

- knn_fragments (what Vigil does): nearest labelled patch; within each
  connected anomalous region, a class's pieces under 3 patches go to the
  region's majority class;
- knn_region: nearest labelled patch, then each region takes its majority
  class whole;
- knn: nearest labelled patch, nothing more;
- centroid_fragments: nearest class mean feature, then the fragment rule.

Figures: per-type precision and recall over test images (macro mean) and the
share of found defect pixels named correctly.

It also times serving (ONNX Runtime on the CPU, predict and detection with a
mask, batches of 8) for the typed model against the same artifact without
its types, side by side: what naming costs per image.

Last line: summary knn_fragments_pixel_acc=... knn_fragments_macro_precision=...
knn_fragments_macro_recall=... (and the same for each method) typed_cost_ratio=...
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference-server"))

from vigil_inference import anomaly_types, synthetic  # noqa: E402
from vigil_inference.artifact import Artifact, load_artifact  # noqa: E402
from vigil_inference.images import inspect_image  # noqa: E402
from vigil_inference.lookout import read_datasets  # noqa: E402
from vigil_inference.lookout_train import plan, train_datasets  # noqa: E402
from vigil_inference.model import AnomalyModel, build_scorer  # noqa: E402
from vigil_inference.options import TrainConfig  # noqa: E402
from vigil_inference.trainer import load_image  # noqa: E402

TYPES = ("scratch", "blotch", "patch")


def serving_cost(path: Path, images: list[Path], rounds: int = 5) -> float:
    """ms per image, typed / untyped, alternating rounds in one process."""
    typed_artifact = load_artifact(path)
    meta = {k: v for k, v in typed_artifact.meta.items() if k != "anomaly_types"}
    tensors = {
        k: v for k, v in typed_artifact.tensors.items() if not k.startswith("anomaly_types.")
    }
    models = {
        "typed": AnomalyModel(typed_artifact, device="cpu"),
        "untyped": AnomalyModel(Artifact(meta, tensors), device="cpu"),
    }
    data = [p.read_bytes() for p in images[:8]]
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, m in models.items():
            prepared = [m.prepare(d, inspect_image(d)) for d in data]
            t0 = time.perf_counter()
            scores, maps, cells = m.predict_all(prepared)
            for i in range(len(data)):
                m.detection(
                    float(scores[i]), maps[i], (256, 256), True, None if cells is None else cells[i]
                )
            times[name].append((time.perf_counter() - t0) * 1000 / len(data))
    typed, untyped = float(np.median(times["typed"])), float(np.median(times["untyped"]))
    print(f"serving ms/image (median of {rounds}): typed {typed:.1f}, untyped {untyped:.1f}")
    return typed / untyped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--normal", type=int, default=16, help="normal images per split")
    ap.add_argument("--per-type", type=int, default=6, help="anomalies per type per split")
    ap.add_argument("--mixed", type=int, default=3, help="images showing every type, per split")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = synthetic.write_lookout_dataset(
            root, args.normal, args.per_type, TYPES, seed=21, n_mixed=args.mixed
        )
        cfg = TrainConfig(max_bank=1024, seed=0)
        t0 = time.perf_counter()
        result = train_datasets(
            [paths["train.manifest"], paths["test.manifest"]], root / "m.vigil", cfg, quiet=True
        )
        print(f"trained in {time.perf_counter() - t0:.0f} s, threshold {result.threshold:.3f}")
        train_ds, test_ds = read_datasets([paths["train.manifest"], paths["test.manifest"]])
        _, held, test_anomalous, spec = plan(train_ds, test_ds, cfg.seed)
        assert spec is not None and held is not None
        scorer = build_scorer(load_artifact(root / "m.vigil"))
        assert isinstance(scorer, anomaly_types.TypedScorer)
        size = scorer.input_size
        dev = torch.device("cpu")

        def load(p: Path) -> np.ndarray:
            return load_image(p, size)

        head = scorer.head
        centroids = torch.stack(
            [head.features[head.labels == t].mean(dim=0) for t in range(1, len(spec.types) + 1)]
        )
        centroid_head = anomaly_types.TypeHead(centroids, torch.arange(1, len(spec.types) + 1))
        variants = {
            "knn_fragments": (head, "fragments"),
            "knn_region": (head, "region"),
            "knn": (head, "none"),
            "centroid_fragments": (centroid_head, "fragments"),
        }
        summary: dict[str, float] = {}
        print(f"{'method':14} {'type':8} {'precision':>9} {'recall':>7} {'images':>6}")
        for name, (h, smoothing) in variants.items():
            scorer.head = h
            m = anomaly_types.grade(
                scorer, spec, held, test_anomalous, result.threshold, load, dev, smoothing
            )
            for row in m["anomaly_types"]:
                print(
                    f"{name:14} {row['name']:8} {row['precision']:9.3f} {row['recall']:7.3f} "
                    f"{row['images']:6d}"
                )
            acc = m["type_pixel_accuracy"]
            macro_p = float(np.mean([r["precision"] for r in m["anomaly_types"]]))
            macro_r = float(np.mean([r["recall"] for r in m["anomaly_types"]]))
            print(f"{name:14} pixels named correctly {acc:.3f}")
            summary[f"{name}_pixel_acc"] = acc
            summary[f"{name}_macro_precision"] = macro_p
            summary[f"{name}_macro_recall"] = macro_r
        summary["typed_cost_ratio"] = serving_cost(root / "m.vigil", test_anomalous)
    print("summary " + " ".join(f"{k}={v:.3f}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
