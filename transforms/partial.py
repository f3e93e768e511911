"""Partial transformation (the seed paper's "ambiguity attack", sec. IV-C): only a fraction of the weight
layers is changed. ``mode: finetune`` trains only the chosen layers; ``mode: reinit`` replaces their weights
by a fresh initialisation and then trains only them (a deployer swapping layers and recovering). The layers
(outside the classifier) are drawn at random from the transform's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.models import build_module
from fpbench.spectral import matrix_layers
from fpbench.train import TrainingParams, train


@dataclass(frozen=True, kw_only=True)
class PartialParams(TrainingParams):
    fraction: float  # of the weight layers outside the classifier, drawn at random
    mode: Literal["finetune", "reinit"] = "finetune"  # reinit: fresh weights for the chosen layers, then training
    steps: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.fraction <= 1.0, "fraction",
                f"fraction of layers to change must be in (0, 1], got {self.fraction!r}")


class Partial(Transform):
    Params = PartialParams
    p: PartialParams
    version = "1"

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        layers = matrix_layers(model)
        n = max(1, math.ceil(p.fraction * len(layers)))
        order = torch.randperm(len(layers), generator=torch.Generator().manual_seed(ctx.seed)).tolist()
        chosen = [layers[i] for i in sorted(order[:n])]
        if p.mode == "reinit":
            torch.manual_seed(ctx.seed)
            fresh = dict(matrix_layers(build_module(spec)))
            with torch.no_grad():
                for name, layer in chosen:
                    layer.weight.copy_(fresh[name].weight.to(layer.weight.device))
        for q in model.parameters():
            q.requires_grad_(False)
        params = [q for _, layer in chosen for q in layer.parameters()]
        for q in params:
            q.requires_grad_(True)
        stats = train(model, ctx.data.split(p.split), p.train_config(), seed=ctx.seed, device=ctx.device,
                      desc="partial", progress=ctx.progress, params=params)
        for q in model.parameters():
            q.requires_grad_(True)
        return TransformResult(model, spec, {"fraction_layers": n / len(layers), "changed_layers": n,
                                             "train_loss": stats["final_loss"]})
