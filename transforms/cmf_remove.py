"""Adaptive removal attack on SVD signatures: an adversary who knows the embedding mechanism (seed paper
sec. III-A) but not the secret perturbs *every* singular value of *every* weight matrix (classifier included)
by Gaussian noise of the signature's scale, ``noise`` x α, then optionally fine-tunes briefly to recover
accuracy. The paper promised adaptive attacks (sec. IV-C, VI) and did not run them.
"""

from __future__ import annotations

import torch
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.spectral import as_matrix, matrix_layers, shift_singular_values
from fpbench.train import TrainConfig, train


class CmfRemove(Transform):
    name = "cmf_remove"
    version = "1"

    def validate(self) -> None:
        p = self.params
        require(float(p.get("noise", 1.0)) >= 0, "noise", "noise scale (in units of alpha) must be >= 0")
        require(float(p.get("alpha", 0.01)) > 0, "alpha", "the assumed signature strength must be > 0")
        steps = p.get("recover_steps", 0)
        require(isinstance(steps, int) and steps >= 0, "recover_steps", f"must be an integer >= 0, got {steps!r}")
        require(p.get("recover_split", "train_b") != "train_a", "recover_split",
                "recovery on the parent's own training split (train_a) is not a distinct child; use train_b")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.params
        scale = float(p.get("noise", 1.0)) * float(p.get("alpha", 0.01))
        gen = torch.Generator().manual_seed(ctx.seed)
        layers = matrix_layers(model, include_head=True)
        with torch.no_grad():
            for _, layer in layers:
                w = layer.weight.detach().cpu()
                rank = min(as_matrix(w).shape)
                delta = torch.randn(rank, generator=gen) * scale
                layer.weight.copy_(shift_singular_values(w, delta).to(layer.weight.device))
        info: dict = {"noise_sigma": scale, "layers": len(layers)}
        steps = int(p.get("recover_steps", 0))
        if steps:
            cfg = TrainConfig(steps=steps, lr=float(p.get("recover_lr", 0.01)), batch_size=128)
            stats = train(model, ctx.data.split(p.get("recover_split", "train_b")), cfg, seed=ctx.seed,
                          device=ctx.device, desc="removal recovery", progress=ctx.progress)
            info.update(recover_steps=steps, recover_loss=stats["final_loss"])
        return TransformResult(model, spec, info)
