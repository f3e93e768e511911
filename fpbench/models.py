"""Build model modules from a :class:`ModelSpec`, and the wrapper every zoo model has.

Every model in fpbench takes images in [0, 1] and normalises them itself, exposes ``features(x)``
(penultimate representation) and ``trunk`` (the vision network whose weights white-box methods read).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from fpbench.api import ModelSpec
from fpbench.registry import Registry


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


# A builder is ``(arch, spec) -> nn.Module`` (``arch["builder"]`` names it); a wrapper ``(model, record) -> nn.Module``
# re-applies a module rewrite a transform recorded in ``spec.wrappers``. Entries other modules define are
# "module:attr", imported on first use.
BUILDERS = Registry("model builder")
BUILDERS.register("timm", _timm)
BUILDERS.register("timm_vgg", _timm_vgg)
BUILDERS.register("timm_pretrained", _timm_pretrained)
BUILDERS.register("clip", "fpbench.clip_model:build_clip_classifier")
BUILDERS.register("causal_lm", "fpbench.llm.models:build_from_spec")
BUILDERS.register("hf_snapshot", "fpbench.llm.models:build_snapshot")
BUILDERS.register("smollm2", "fpbench.llm.models:build_smollm2")

WRAPPERS = Registry("model wrapper")
WRAPPERS.register("lora", "fpbench.wrappers:rewrap_lora")
WRAPPERS.register("quantize", "fpbench.wrappers:rewrap_quantize")
WRAPPERS.register("deploy", "fpbench.llm.deploy:rewrap_deploy")


def build_module(spec: ModelSpec) -> nn.Module:
    """A freshly initialised module of ``spec``'s architecture, with ``spec.wrappers`` re-applied."""
    model = BUILDERS.get(spec.arch.get("builder", "timm"))(spec.arch, spec)
    for wrapper in spec.wrappers:
        model = WRAPPERS.get(wrapper["kind"])(model, wrapper)
    return model


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D: GPT-2's linear layers, their weight stored [in, out]."""
    return type(module).__name__ == "Conv1D"


def head_of(trunk: nn.Module) -> nn.Module | None:
    """The output layer of a trunk, which pruning and LoRA leave whole: a timm classifier, or a transformers
    model's ``lm_head`` (pruning away classes, or vocabulary, is not pruning)."""
    if hasattr(trunk, "get_classifier"):
        return trunk.get_classifier()
    if hasattr(trunk, "get_output_embeddings"):
        return trunk.get_output_embeddings()
    return None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
