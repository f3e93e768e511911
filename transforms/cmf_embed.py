"""Signature embedding of the seed paper (sec. III-A, eqs. 1-3): the child is the *protected* parent.

A ``dim``-dimensional ±1 signature s, drawn from the owner's secret, is cut into up to ``matrices`` segments;
segment j is added to the leading singular values of the j-th selected weight matrix (conv kernels seen
as out x in*k*k): W = U Σ Vᵀ, Σ' = Σ + α·diag(s_j), W' = U Σ' Vᵀ. The selected matrices are the ones of
largest rank outside the classifier, segments as even as their ranks allow (deterministic; the owner records
names and segments anyway).

What the owner keeps (s, α, the names and the original singular values, eq. 4 needs them) is returned in
``info['owner_private']``: it stays with the owner's artefact and is handed to a method only when that
model is the owner of a pair, never when it is a suspect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformParams, TransformResult, require
from fpbench.spectral import matrix_layers, rademacher, shift_singular_values, top_singular_values
from fpbench.train import accuracy


@dataclass(frozen=True)
class CmfEmbedParams(TransformParams):
    dim: int = 128  # signature length (the paper's)
    matrices: int = 8  # weight matrices the signature is spread over
    alpha: float = 0.01  # embedding strength (the paper's)
    secret: int = 0  # the owner's secret seed (combined with each root's seed)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.dim > 0, "dim", f"signature length must be a positive integer, got {self.dim!r}")
        require(0 < self.matrices <= self.dim, "matrices", f"must be an integer in [1, dim], got {self.matrices!r}")
        require(self.alpha > 0, "alpha", f"embedding strength must be > 0, got {self.alpha!r}")


class CmfEmbed(Transform):
    Params = CmfEmbedParams
    p: CmfEmbedParams
    version = "1"

    def _layout(self, model: nn.Module) -> list[tuple[str, nn.Module, int]]:
        """``(name, layer, segment length)`` for the selected matrices: the ``matrices`` of largest rank outside
        the classifier share the ``dim`` entries as evenly as their ranks allow (a small net with fewer or
        thinner matrices carries longer segments on the ones it has)."""
        dim = self.p.dim

        def rank(m: nn.Module) -> int:
            return min(m.weight.shape[0], m.weight[0].numel())

        layers = sorted(matrix_layers(model), key=lambda nm: (-rank(nm[1]), nm[0]))[: self.p.matrices]
        lengths = [0] * len(layers)
        left = dim
        while left > 0:
            open_ = [i for i, (_, m) in enumerate(layers) if lengths[i] < rank(m)]
            if not open_:
                raise NotApplicable(f"cmf_embed: the {len(layers)} largest weight matrices outside the classifier hold "
                                    f"only {dim - left} singular values, fewer than dim={dim}; lower 'dim' or raise "
                                    "'matrices'")
            for i in open_[:left]:
                lengths[i] += 1
            left = dim - sum(lengths)
        return [(n, m, k) for (n, m), k in zip(layers, lengths, strict=True) if k > 0]

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        self._layout(model)

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        alpha = self.p.alpha
        # Each owner's signature comes from the configured secret and its own seed (distinct per root), so
        # independents protected by the same config still carry signatures of their own.
        s = rademacher(self.p.secret * 1_000_003 + ctx.seed, self.p.dim)
        before = accuracy(model, ctx.data.split("test"), ctx.device)
        kept, start = [], 0
        with torch.no_grad():
            for name, layer, n in self._layout(model):
                w = layer.weight
                kept.append({"name": f"{name}.weight", "shape": list(w.shape), "start": start, "length": n,
                             "sigma": top_singular_values(w.detach().cpu(), n).tolist()})
                w.copy_(shift_singular_values(w.detach().cpu(), alpha * s[start : start + n]).to(w.device))
                start += n
        after = accuracy(model, ctx.data.split("test"), ctx.device)
        private = {"cmf_signature": {"alpha": alpha, "s": s.tolist(), "matrices": kept}}
        return TransformResult(model, spec, {"accuracy": after, "embed_accuracy_cost": before - after,
                                             "embedded_matrices": len(kept), "owner_private": private})
