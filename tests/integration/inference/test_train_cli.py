"""`vigil train` as users run it: a real process, real files, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vigil_inference import synthetic
from vigil_inference.model import AnomalyModel

pytestmark = pytest.mark.slow


def vigil(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return synthetic.write_dataset(tmp_path_factory.mktemp("small"), 10, 6, seed=3, size=160)


def test_train_with_anomalous_prints_lookout_evaluation(
    small: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "m.vigil"
    r = vigil(
        "train",
        "--normal",
        small[0],
        "--anomalous",
        small[1],
        "--out",
        out,
        "--max-bank",
        "256",
        "--version",
        "v7",
    )
    assert r.returncode == 0, r.stderr
    for word in ("Precision", "Recall", "F1 score", "AUROC", "Threshold"):
        assert word in r.stdout
    assert "embedding" in r.stderr and "coreset" in r.stderr  # the progress bars
    model = AnomalyModel.load(out)
    assert model.info.model_version == "v7" and model.info.anomalous_test_images == 6
    assert model.info.memory_bank_size == 256
    # 160-px images: one input side (224), both Lite backbones tried, one kept.
    sel = model.artifact.meta["training"]["selection"]
    assert [c["name"] for c in sel["candidates"]] == [
        "efficientnet_lite0@224",
        "efficientnet_lite2@224",
    ]
    assert sel["kept"] == f"{model.info.backbone}@224" and sel["measure"] == "auroc"
    assert sel["serving_ms_per_image"] > 0
    assert "efficientnet_lite2@224" in r.stdout and f"Kept {sel['kept']}" in r.stdout
    assert "[1/2 efficientnet_lite0@224] embedding" in r.stderr


def test_pinned_backbone_and_side_fit_one_candidate(
    small: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "p.vigil"
    r = vigil(
        "train",
        "--normal",
        small[0],
        "--anomalous",
        small[1],
        "--out",
        out,
        "--backbone",
        "mobilenet_v2",
        "--input-size",
        "256",
        "--max-bank",
        "128",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert "Kept mobilenet_v2@256: the only candidate" in r.stdout
    model = AnomalyModel.load(out)
    assert model.info.backbone == "mobilenet_v2" and model.info.input_size == (256, 256)
    assert len(model.artifact.meta["training"]["selection"]["candidates"]) == 1

    r = vigil("train", "--normal", small[0], "--out", out, "--input-size", "250", "--quiet")
    assert r.returncode == 1 and "multiple of 32" in r.stderr


def test_train_normal_only_explains_the_threshold(small: tuple[Path, Path], tmp_path: Path) -> None:
    r = vigil(
        "train", "--normal", small[0], "--out", tmp_path / "n.vigil", "--quiet", "--max-bank", "128"
    )
    assert r.returncode == 0, r.stderr
    assert "No anomalous images given" in r.stdout and "--anomalous" in r.stdout
    assert "with pseudo-anomalies" in r.stdout  # how candidates are judged without anomalies
    assert r.stderr == ""  # --quiet: no progress bar


def test_bad_inputs_exit_1_with_a_message(small: tuple[Path, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in sorted(small[0].iterdir())[:3]:
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = vigil("train", "--normal", bad, "--out", tmp_path / "x.vigil", "--quiet")
    assert r.returncode == 1 and "broken.png" in r.stderr and "PNG" in r.stderr
    assert not (tmp_path / "x.vigil").exists()

    one = tmp_path / "one"
    one.mkdir()
    (one / "a.png").write_bytes(next(small[0].iterdir()).read_bytes())
    r = vigil("train", "--normal", one, "--out", tmp_path / "y.vigil", "--quiet")
    assert r.returncode == 1 and "need at least 2 normal images" in r.stderr

    r = vigil("train", "--normal", tmp_path / "absent", "--out", tmp_path / "z.vigil")
    assert r.returncode == 1 and "is not a folder" in r.stderr


def test_usage_errors_exit_2() -> None:
    r = vigil("train", "--normal", "x")
    assert r.returncode == 2 and "--out" in r.stderr
