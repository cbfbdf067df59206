"""The inference unit's subcommands of `vigil` (train, serve, detect). Each
imports its heavy modules lazily, so `vigil detect` starts without torch;
the parser and dispatch are `vigil_cli.main`'s."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        fn: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), func)
        return fn(args)

    return run


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="fit a model from a folder of normal images into a .vigil artifact",
        description="Fit a PatchCore-style model from normal images. A share of them is held "
        "out to set the threshold; with --anomalous, the threshold is F1-optimal and "
        "precision, recall, F1 and AUROC are reported.",
    )
    p.add_argument("--normal", metavar="DIR", help="folder of normal images")
    p.add_argument("--anomalous", metavar="DIR", help="folder of anomalous images (optional)")
    p.add_argument(
        "--manifest",
        action="append",
        metavar="FILE",
        help="Lookout for Vision / Ground Truth manifest, or a folder in Lookout's layout "
        "(normal/, anomaly/, masks/); give it twice for a training and a test set",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="artifact to write (.vigil)")
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="square model input side, a multiple of 32 (default: candidates from the images)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="pin one backbone: efficientnet_lite0, efficientnet_lite2 or mobilenet_v2 "
        "(default: fit candidates and keep the best)",
    )
    p.add_argument(
        "--target-fpr",
        type=float,
        default=0.05,
        help="without --anomalous: share of normal images the threshold may flag",
    )
    p.add_argument("--coreset-ratio", type=float, default=0.1, help="memory bank share kept")
    p.add_argument(
        "--max-bank",
        type=int,
        default=2048,
        help="memory bank size cap (CPU scoring time grows with it)",
    )
    p.add_argument("--holdout", type=float, default=0.2, help="share of normal images held out")
    p.add_argument("--seed", type=int, default=0, help="seed for splits and coreset")
    p.add_argument("--version", default="", help="model version string (default: from hash)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_lazy("vigil_inference.trainer", "train_command"))


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a .vigil model over gRPC as one inference unit")
    p.add_argument("--model", required=True, metavar="FILE", help=".vigil artifact")
    p.add_argument("--host", default="[::]", help="address to bind")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free)")
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus port (0: any)")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-batch-delay-ms", type=float, default=5.0)
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="admitted requests beyond which new ones get RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--prepare-workers",
        type=int,
        default=None,
        help="image decoding threads (default: one less than the CPUs, at most 4)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--runtime", default="auto", help="auto, torch or onnxruntime")
    p.add_argument(
        "--grace-seconds",
        type=float,
        default=20.0,
        help="drain time for in-flight requests on SIGTERM",
    )
    p.set_defaults(func=_lazy("vigil_inference.server", "serve_command"))


def _add_detect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("detect", help="send images to a unit and print one JSON object each")
    p.add_argument("--target", required=True, metavar="HOST:PORT")
    p.add_argument("--mask-dir", metavar="DIR", help="ask for masks and write them here")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument(
        "--format",
        choices=("vigil", "lookout"),
        default="vigil",
        help="vigil: the response's fields in snake_case; lookout: Lookout for Vision's "
        "DetectAnomalies response JSON",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=_lazy("vigil_inference.client", "detect_command"))


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The unit's subcommands; `vigil_cli.main` owns the parser and the dispatch."""
    _add_train(sub)
    _add_serve(sub)
    _add_detect(sub)


if __name__ == "__main__":  # `python -m vigil_inference.cli`, as before: the same as `vigil`
    from vigil_cli.main import main

    sys.exit(main())
