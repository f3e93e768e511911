"""Removal fine-tuning: the thief's fine-tune aimed at erasing a fingerprint rather than at a new task.

Every weight tensor (convolutions and linears, not BatchNorm or biases) is perturbed by Gaussian noise of
``noise`` x that tensor's standard deviation, then the model is fine-tuned at a large learning rate on data
disjoint from the parent's, which must both move the weights far and restore the task. Unlike the adaptive
``cmf_remove`` attack it knows nothing of any method's mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fpbench.api import ModelSpec, TransformContext, TransformResult, require
from transforms.finetune import FineTune, FineTuneParams


def add_relative_noise(model: nn.Module, noise: float, seed: int) -> None:
    """Add N(0, (noise * std(W))^2) to every weight tensor of rank >= 2, in place, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q in model.parameters():
            if q.dim() >= 2:
                q.add_(torch.randn(q.shape, generator=gen).to(q.device) * (noise * float(q.std())))


@dataclass(frozen=True)
class RemovalParams(FineTuneParams):
    noise: float = 0.1  # weight noise, in units of each weight tensor's standard deviation

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.noise >= 0, "noise", f"relative weight noise must be >= 0, got {self.noise}")


class RemovalFineTune(FineTune):
    Params = RemovalParams
    p: RemovalParams
    version = "1"
    modalities = ("vision", "vision-language", "language")  # works on any module with a trunk of linear layers

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        noise = self.p.noise
        add_relative_noise(model, noise, ctx.seed)
        result = super().apply(model, spec, ctx)
        result.info["removal_noise"] = noise
        return result
