"""Build model modules from a :class:`ModelSpec`, and the wrapper every zoo model has.

Every model in fpbench takes images in [0, 1] and normalises them itself, exposes ``features(x)``
(penultimate representation) and ``trunk`` (the vision network whose weights white-box methods read).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import timm
import torch
from torch import nn

from fpbench.api import ConfigError, ModelSpec


class ImageClassifier(nn.Module):
    """A timm network behind its own input normalisation. ``trunk`` is the timm model itself."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def trunk(self) -> nn.Module:
        return self.net

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net.forward_features(self.normalize(x))
        return self.net.forward_head(h, pre_logits=True)


def _timm(arch: dict[str, Any], spec: ModelSpec) -> nn.Module:
    net = timm.create_model(
        arch["name"], pretrained=False, num_classes=spec.num_classes, in_chans=spec.input["channels"],
        **arch.get("kwargs", {}),
    )
    return ImageClassifier(net, spec.input["mean"], spec.input["std"])


def _timm_pretrained(arch: dict[str, Any], spec: ModelSpec) -> nn.Module:
    """A timm net started from real pretrained weights available offline (see fpbench.pretrained).

    The weights are loaded when the module is built; a stored model's own state dict overwrites them on load.
    """
    from fpbench.pretrained import load_pretrained_trunk

    model = _timm(arch, spec)
    load_pretrained_trunk(model.trunk, arch["weights"])
    return model


def _timm_vgg(arch: dict[str, Any], spec: ModelSpec) -> nn.Module:
    """A VGG-style net from timm's VGG class with a custom layer list (timm's named VGGs are ImageNet-sized)."""
    from timm.models.vgg import VGG

    kwargs = dict(arch.get("kwargs", {}))
    cfg = kwargs.pop("cfg")
    net = VGG(cfg=cfg, num_classes=spec.num_classes, in_chans=spec.input["channels"], **kwargs)
    return ImageClassifier(net, spec.input["mean"], spec.input["std"])


# Builders and wrappers are named "module:attr" and imported lazily, like the registries.
BUILDERS: dict[str, str | Callable[[dict[str, Any], ModelSpec], nn.Module]] = {
    "timm": _timm,
    "timm_vgg": _timm_vgg,
    "timm_pretrained": _timm_pretrained,
    "clip": "fpbench.clip_model:build_clip_classifier",
}
WRAPPERS: dict[str, str] = {
    "lora": "fpbench.wrappers:rewrap_lora",
    "quantize": "fpbench.wrappers:rewrap_quantize",
}


def _resolve(entry: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(entry):
        return entry
    module_name, attr = entry.split(":")
    return getattr(importlib.import_module(module_name), attr)


def build_module(spec: ModelSpec) -> nn.Module:
    """A freshly initialised module of ``spec``'s architecture, with ``spec.wrappers`` re-applied."""
    builder = spec.arch.get("builder", "timm")
    if builder not in BUILDERS:
        raise ConfigError(f"unknown model builder '{builder}'. Valid builders: {', '.join(BUILDERS)}")
    model = _resolve(BUILDERS[builder])(spec.arch, spec)
    for wrapper in spec.wrappers:
        kind = wrapper["kind"]
        if kind not in WRAPPERS:
            raise ConfigError(f"unknown model wrapper '{kind}'. Valid wrappers: {', '.join(WRAPPERS)}")
        model = _resolve(WRAPPERS[kind])(model, wrapper)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
