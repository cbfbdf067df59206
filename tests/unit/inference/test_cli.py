"""`vigil train/serve/detect`'s flags: their defaults are the options'
dataclasses', and parsing them loads no model code."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from vigil_cli.main import build_parser
from vigil_inference.client import detect_options
from vigil_inference.options import DetectOptions, ServeOptions, ServingConfig, TrainConfig
from vigil_inference.server import serve_options
from vigil_inference.trainer import train_config


def test_parsing_every_unit_command_and_help_loads_no_model_code() -> None:
    code = (
        "import contextlib, io, sys\n"
        "from vigil_cli.main import build_parser\n"
        "p = build_parser()\n"
        "p.parse_args(['train', '--normal', 'n', '--out', 'o'])\n"
        "p.parse_args(['serve', '--model', 'm'])\n"
        "p.parse_args(['detect', '--target', 't', 'a.png'])\n"
        "for cmd in ([], ['train'], ['serve'], ['detect']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        p.parse_args([*cmd, '--help'])\n"
        "print(sorted(m for m in ('torch', 'PIL', 'numpy', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_flag_defaults_are_the_options_defaults() -> None:
    parser = build_parser()
    assert train_config(parser.parse_args(["train", "--normal", "n", "--out", "o"])) == (
        TrainConfig()
    )
    assert serve_options(parser.parse_args(["serve", "--model", "m"])) == ServeOptions()
    assert detect_options(parser.parse_args(["detect", "--target", "t", "a.png"])) == (
        DetectOptions()
    )


def test_flags_reach_the_options() -> None:
    flags = "--port 0 --max-batch-delay-ms 20 --prepare-workers 3 --grace-seconds 1.5"
    args = build_parser().parse_args(["serve", "--model", "m", *flags.split()])
    serving = dataclasses.replace(ServingConfig(), max_batch_delay_s=0.02, prepare_workers=3)
    assert serve_options(args) == ServeOptions(port=0, grace_seconds=1.5, serving=serving)


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"gRPC port (0: any free) (default: {ServeOptions.port})" in text
    assert f"RESOURCE_EXHAUSTED (default: {ServingConfig.max_queue})" in text
