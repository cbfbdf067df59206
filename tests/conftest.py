"""Shared fixtures: generated image sets and one real trained artifact per run."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from vigil_inference import synthetic


def encode(image: object, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)  # type: ignore[call-overload]
    return buf.getvalue()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(normal_dir, anomalous_dir) of generated 256x256 PNGs."""
    return synthetic.write_dataset(tmp_path_factory.mktemp("data"), 30, 12, seed=0)


@pytest.fixture(scope="session")
def trained_model_path(
    dataset: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A real .vigil artifact trained on generated images (a few seconds)."""
    from vigil_inference.options import TrainConfig
    from vigil_inference.trainer import train

    out = tmp_path_factory.mktemp("model") / "fabric.vigil"
    # One pinned candidate (the pre-selection default) keeps the shared fixture
    # quick; the selection itself is tested in test_selection and test_train_cli.
    cfg = TrainConfig(backbone="mobilenet_v2", input_size=224, max_bank=1024, seed=0)
    train(dataset[0], dataset[1], out, cfg, quiet=True)
    return out


@pytest.fixture(scope="session")
def png_image() -> Callable[..., bytes]:
    """png_image(seed, defect=None, size=256) -> PNG bytes of a generated image."""

    def make(seed: int = 1, defect: str | None = None, size: int = 256) -> bytes:
        sample = synthetic.defective(seed, size, defect) if defect else synthetic.normal(seed, size)
        return encode(sample.image)

    return make
