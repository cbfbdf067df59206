"""The trained model separates normal from defective images it has never seen."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from vigil_inference import synthetic
from vigil_inference.artifact import ArtifactError, load_artifact, save_artifact
from vigil_inference.evaluation import auroc
from vigil_inference.images import inspect_image
from vigil_inference.model import AnomalyModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(trained_model_path: Path) -> AnomalyModel:
    return AnomalyModel.load(trained_model_path)


def _scores(model: AnomalyModel, images: list[bytes]) -> np.ndarray:
    prepared = [model.prepare(d, inspect_image(d)) for d in images]
    return model.predict(prepared)[0]


def test_unseen_defects_score_above_unseen_normals(
    model: AnomalyModel, png_image: Callable[..., bytes]
) -> None:
    normal = [png_image(10_000 + i) for i in range(12)]
    defects = [png_image(20_000 + i, defect=kind) for i in range(4) for kind in synthetic.DEFECTS]
    s = _scores(model, normal + defects)
    labels = [0] * len(normal) + [1] * len(defects)
    assert auroc(s, labels) >= 0.95
    predicted = s > model.threshold
    assert predicted[len(normal) :].mean() >= 0.8  # recall on unseen defects
    assert predicted[: len(normal)].mean() <= 0.2  # false alarms on unseen normals


def test_detection_fields_and_mask_at_request_size(
    model: AnomalyModel, png_image: Callable[..., bytes]
) -> None:
    sample = synthetic.defective(31_337, 320, "patch")
    buf = io.BytesIO()
    Image.fromarray(sample.image[:, :300]).save(buf, "PNG")  # 300x320, not the input size
    data = buf.getvalue()
    scores, maps = model.predict([model.prepare(data, inspect_image(data))])
    det = model.detection(float(scores[0]), maps[0], (300, 320), return_mask=True)
    assert det.is_anomalous and 0.5 <= det.confidence <= 1.0
    assert det.anomaly_score == pytest.approx(float(scores[0]))
    assert det.threshold == model.threshold and det.model_version == model.info.model_version
    assert 0.0 < det.area_fraction < 0.5
    assert det.mask_png is not None
    mask = np.asarray(Image.open(io.BytesIO(det.mask_png)).convert("RGB"))
    assert mask.shape == (320, 300, 3)
    red = (mask == [255, 0, 0]).all(axis=2)
    truth = sample.mask[:, :300]
    # The mask covers the defect and stays within a patch or two of it (the
    # feature grid has a 8-pixel stride at 224, ~11 here, plus smoothing).
    near = np.asarray(Image.fromarray(truth).filter(ImageFilter.MaxFilter(49))) > 0
    assert (red & truth).sum() / truth.sum() > 0.8
    assert (red & near).sum() / red.sum() > 0.9

    normal = png_image(40_000)
    s, m = model.predict([model.prepare(normal, inspect_image(normal))])
    quiet = model.detection(float(s[0]), m[0], (256, 256), return_mask=False)
    assert not quiet.is_anomalous and quiet.mask_png is None and quiet.area_fraction == 0.0


def test_onnxruntime_and_torch_agree(
    trained_model_path: Path, model: AnomalyModel, png_image: Callable[..., bytes]
) -> None:
    eager = AnomalyModel.load(trained_model_path, runtime="torch")
    assert (model.runtime, eager.runtime) == ("onnxruntime", "torch")
    images = [png_image(50_000 + i, defect="scratch" if i % 2 else None) for i in range(4)]
    np.testing.assert_allclose(_scores(model, images), _scores(eager, images), rtol=1e-4, atol=1e-4)


def test_info_reports_the_training_evaluation(model: AnomalyModel) -> None:
    info = model.info
    assert info.backbone == "mobilenet_v2" and info.input_size == (224, 224)
    assert 1 <= info.memory_bank_size <= 1024
    assert info.training_images == 24 and info.normal_test_images == 6
    assert info.anomalous_test_images == 12 and info.threshold_independent
    assert 0.0 <= info.f1 <= 1.0 and info.auroc >= 0.9


def test_consistent_but_wrong_tensors_are_refused(trained_model_path: Path, tmp_path: Path) -> None:
    art = load_artifact(trained_model_path)
    bad = dict(art.tensors)
    bad["memory_bank"] = torch.zeros(10, 7)  # checksum re-computed, shape wrong
    save_artifact(tmp_path / "bank.vigil", art.meta, bad)
    with pytest.raises(ArtifactError, match=r"memory_bank must be \[patches, 128\]"):
        AnomalyModel.load(tmp_path / "bank.vigil")
    bad = {k: v for k, v in art.tensors.items() if not k.startswith("backbone.0.")}
    save_artifact(tmp_path / "weights.vigil", art.meta, bad)
    with pytest.raises(ArtifactError, match="backbone weights do not fit mobilenet_v2"):
        AnomalyModel.load(tmp_path / "weights.vigil")
    save_artifact(tmp_path / "bb.vigil", {**art.meta, "backbone": "resnet9000"}, art.tensors)
    with pytest.raises(ArtifactError, match="unknown backbone 'resnet9000'"):
        AnomalyModel.load(tmp_path / "bb.vigil")
    save_artifact(tmp_path / "hood.vigil", {**art.meta, "neighbourhood": 4}, art.tensors)
    with pytest.raises(ArtifactError, match="neighbourhood must be 1, 3, 5 or 7, got 4"):
        AnomalyModel.load(tmp_path / "hood.vigil")


def test_artifacts_from_before_the_selection_still_load_and_score_alike(
    model: AnomalyModel, trained_model_path: Path, tmp_path: Path, png_image: Callable[..., bytes]
) -> None:
    """Format version 1 without `neighbourhood` or `training.selection`: what
    `vigil train` wrote before candidates existed."""
    art = load_artifact(trained_model_path)
    meta = {k: v for k, v in art.meta.items() if k != "neighbourhood"}
    meta["training"] = {k: v for k, v in meta["training"].items() if k != "selection"}
    save_artifact(tmp_path / "old.vigil", meta, art.tensors)
    old = AnomalyModel.load(tmp_path / "old.vigil")
    images = [png_image(30_000 + i) for i in range(2)] + [png_image(31_000, defect="scratch")]
    np.testing.assert_allclose(_scores(old, images), _scores(model, images), rtol=1e-5)
