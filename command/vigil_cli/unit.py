"""`vigil train`, `vigil serve` and `vigil detect`: the inference unit's commands.

Their defaults are read from `vigil_inference.options`, where the trainer,
the server and the client read them too, and `--help` shows them. Each
command's module is imported only when it runs, so `vigil --help` and
`vigil detect` start without torch.
"""

from __future__ import annotations

import argparse
from typing import Any, TypeAlias

from vigil_cli.main import lazy
from vigil_inference.options import (
    DETECT_FORMATS,
    DetectOptions,
    ServeOptions,
    ServingConfig,
    TrainConfig,
)

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _flag(p: argparse.ArgumentParser, flag: str, default: Any, text: str, **kw: Any) -> None:
    """A flag whose help ends with its default, taken from `options`."""
    kind = kw.pop("type", type(default) if isinstance(default, int | float) else None)
    p.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)", **kw)


def _add_train(sub: Subparsers) -> None:
    d = TrainConfig
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
        default=d.input_size,
        help="square model input side, a multiple of 32 (default: candidates from the images)",
    )
    p.add_argument(
        "--backbone",
        default=d.backbone,
        help="pin one backbone: efficientnet_lite0, efficientnet_lite2 or mobilenet_v2 "
        "(default: fit candidates and keep the best)",
    )
    _flag(
        p,
        "--target-fpr",
        d.target_fpr,
        "without --anomalous: share of normal images the threshold may flag",
    )
    _flag(p, "--coreset-ratio", d.coreset_ratio, "memory bank share kept")
    _flag(p, "--max-bank", d.max_bank, "memory bank size cap (CPU scoring time grows with it)")
    _flag(p, "--holdout", d.holdout, "share of normal images held out")
    _flag(p, "--seed", d.seed, "seed for splits and coreset")
    p.add_argument("--version", default=d.version, help="model version string (default: from hash)")
    _flag(p, "--device", d.device, "auto, cpu or cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=lazy("vigil_inference.trainer", "train_command"))


def _add_serve(sub: Subparsers) -> None:
    d, s = ServeOptions, ServingConfig
    p = sub.add_parser("serve", help="serve a .vigil model over gRPC as one inference unit")
    p.add_argument("--model", required=True, metavar="FILE", help=".vigil artifact")
    _flag(p, "--host", d.host, "address to bind")
    _flag(p, "--port", d.port, "gRPC port (0: any free)")
    _flag(p, "--metrics-port", d.metrics_port, "Prometheus port (0: any)")
    _flag(p, "--max-batch-size", s.max_batch_size, "images scored together at most")
    _flag(p, "--max-batch-delay-ms", s.max_batch_delay_s * 1000, "wait for a fuller batch")
    _flag(
        p,
        "--max-queue",
        s.max_queue,
        "admitted requests beyond which new ones get RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--prepare-workers",
        type=int,
        default=None,
        help="image decoding threads (default: one less than the CPUs, at most 4)",
    )
    _flag(p, "--device", d.device, "auto, cpu or cuda[:N]")
    _flag(p, "--runtime", d.runtime, "auto, torch or onnxruntime")
    _flag(p, "--grace-seconds", d.grace_seconds, "drain time for in-flight requests on SIGTERM")
    p.set_defaults(func=lazy("vigil_inference.server", "serve_command"))


def _add_detect(sub: Subparsers) -> None:
    d = DetectOptions
    p = sub.add_parser("detect", help="send images to a unit and print one JSON object each")
    p.add_argument("--target", required=True, metavar="HOST:PORT")
    p.add_argument("--mask-dir", metavar="DIR", help="ask for masks and write them here")
    _flag(p, "--timeout", d.timeout_s, "seconds per request")
    _flag(
        p,
        "--format",
        d.format,
        "vigil: the response's fields in snake_case; lookout: Lookout for Vision's "
        "DetectAnomalies response JSON",
        choices=DETECT_FORMATS,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=lazy("vigil_inference.client", "detect_command"))


def add_unit_commands(sub: Subparsers) -> None:
    """train, serve, detect."""
    _add_train(sub)
    _add_serve(sub)
    _add_detect(sub)
