"""Partial transformation (the seed paper's "ambiguity attack", sec. IV-C): only a fraction of the weight
layers is changed. ``mode: finetune`` trains only the chosen layers; ``mode: reinit`` replaces their weights
by a fresh initialisation and then trains only them (a deployer swapping layers and recovering). The layers
(outside the classifier) are drawn at random from the transform's seed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.models import build_module
from fpbench.spectral import matrix_layers
from fpbench.train import TrainConfig, train

MODES = ("finetune", "reinit")


class Partial(Transform):
    name = "partial"
    version = "1"

    def validate(self) -> None:
        p = self.params
        f = p.get("fraction")
        require(isinstance(f, (int, float)) and 0.0 < float(f) <= 1.0, "fraction",
                f"fraction of layers to change must be in (0, 1], got {f!r}")
        require(p.get("mode", "finetune") in MODES, "mode", f"must be one of {', '.join(MODES)}")
        require(p.get("split", "train_b") != "train_a", "split",
                "training on the parent's own split (train_a) is not a distinct child; use train_b")
        TrainConfig(steps=int(p.get("steps", 100)), lr=float(p.get("lr", 0.01)))

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.params
        layers = matrix_layers(model)
        n = max(1, math.ceil(float(p["fraction"]) * len(layers)))
        order = torch.randperm(len(layers), generator=torch.Generator().manual_seed(ctx.seed)).tolist()
        chosen = [layers[i] for i in sorted(order[:n])]
        if p.get("mode", "finetune") == "reinit":
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
        cfg = TrainConfig(steps=int(p.get("steps", 100)), lr=float(p.get("lr", 0.01)), batch_size=128)
        stats = train(model, ctx.data.split(p.get("split", "train_b")), cfg, seed=ctx.seed, device=ctx.device,
                      desc="partial", progress=ctx.progress, params=params)
        for q in model.parameters():
            q.requires_grad_(True)
        return TransformResult(model, spec, {"fraction_layers": n / len(layers), "changed_layers": n,
                                             "train_loss": stats["final_loss"]})
