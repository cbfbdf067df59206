"""`vigil train/serve/detect`'s flags: their defaults are the options'
dataclasses', and the flags reach the objects the trainer, server and client
take. (That parsing loads no model code: test_client.py.)"""

from __future__ import annotations

import dataclasses

import pytest

from vigil_cli.main import build_parser
from vigil_inference.options import (
    DetectOptions,
    ServeOptions,
    ServingConfig,
    TrainConfig,
    from_flags,
)
from vigil_inference.server import serve_options


def test_flag_defaults_are_the_options_defaults() -> None:
    parser = build_parser()
    train = parser.parse_args(["train", "--normal", "n", "--out", "o"])
    assert from_flags(TrainConfig, train) == TrainConfig()
    assert serve_options(parser.parse_args(["serve", "--model", "m"])) == ServeOptions()
    detect = parser.parse_args(["detect", "--target", "t", "a.png"])
    assert from_flags(DetectOptions, detect, timeout_s=detect.timeout) == DetectOptions()


def test_flags_reach_the_options() -> None:
    flags = "--port 0 --max-batch-delay-ms 20 --prepare-workers 3 --grace-seconds 1.5"
    args = build_parser().parse_args(["serve", "--model", "m", *flags.split()])
    serving = dataclasses.replace(ServingConfig(), max_batch_delay_s=0.02, prepare_workers=3)
    assert serve_options(args) == ServeOptions(port=0, grace_seconds=1.5, serving=serving)
    train = build_parser().parse_args(
        ["train", "--normal", "n", "--out", "o", "--max-bank", "64", "--input-size", "256"]
    )
    assert from_flags(TrainConfig, train) == TrainConfig(max_bank=64, input_size=256)


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"gRPC port (0: any free) (default: {ServeOptions.port})" in text
    assert f"RESOURCE_EXHAUSTED (default: {ServingConfig.max_queue})" in text
