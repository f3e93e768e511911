"""Adaptive removal attack on SVD signatures: an adversary who knows the embedding mechanism (seed paper
sec. III-A) but not the secret perturbs *every* singular value of *every* weight matrix (classifier included)
by Gaussian noise of the signature's scale, ``noise`` x α, then optionally fine-tunes briefly to recover
accuracy. The paper promised adaptive attacks (sec. IV-C, VI) and did not run them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.spectral import as_matrix, matrix_layers, shift_singular_values
from fpbench.train import RecoveryParams, recover


@dataclass(frozen=True, kw_only=True)
class CmfRemoveParams(RecoveryParams):
    noise: float  # std of the noise on every singular value, in units of alpha (the attack's strength)
    alpha: float = 0.01  # the signature strength the attacker assumes (the paper's)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.noise >= 0, "noise", f"noise scale (in units of alpha) must be >= 0, got {self.noise}")
        require(self.alpha > 0, "alpha", f"the assumed signature strength must be > 0, got {self.alpha}")


class CmfRemove(Transform):
    Params = CmfRemoveParams
    p: CmfRemoveParams
    version = "1"

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        scale = self.p.noise * self.p.alpha
        gen = torch.Generator().manual_seed(ctx.seed)
        layers = matrix_layers(model, include_head=True)
        with torch.no_grad():
            for _, layer in layers:
                w = layer.weight.detach().cpu()
                rank = min(as_matrix(w).shape)
                delta = torch.randn(rank, generator=gen) * scale
                layer.weight.copy_(shift_singular_values(w, delta).to(layer.weight.device))
        info: dict = {"noise_sigma": scale, "layers": len(layers)}
        info.update(recover(model, self.p, ctx, "removal recovery"))
        return TransformResult(model, spec, info)
