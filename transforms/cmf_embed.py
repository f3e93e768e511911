"""Signature embedding of the seed paper (sec. III-A, eqs. 1-3): the child is the *protected* parent.

A ``dim``-dimensional ±1 signature s, drawn from the owner's secret, is cut into ``matrices`` segments;
segment j is added to the leading singular values of the j-th selected weight matrix (conv kernels seen
as out x in*k*k): W = U Σ Vᵀ, Σ' = Σ + α·diag(s_j), W' = U Σ' Vᵀ. The selected matrices are the ones of
largest rank outside the classifier (deterministic; the owner records their names anyway).

What the owner keeps (s, α, the names and the original singular values, eq. 4 needs them) is returned in
``info['owner_private']``: it stays with the owner's artefact and is handed to a method only when that
model is the owner of a pair, never when it is a suspect.
"""

from __future__ import annotations

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult, require
from fpbench.spectral import matrix_layers, rademacher, shift_singular_values, top_singular_values
from fpbench.train import accuracy


class CmfEmbed(Transform):
    name = "cmf_embed"
    version = "1"

    def validate(self) -> None:
        p = self.params
        dim, n = p.get("dim", 128), p.get("matrices", 8)
        require(isinstance(dim, int) and dim > 0, "dim", f"signature length must be a positive integer, got {dim!r}")
        require(isinstance(n, int) and 0 < n <= dim, "matrices", f"must be an integer in [1, dim], got {n!r}")
        require(float(p.get("alpha", 0.01)) > 0, "alpha", "embedding strength must be > 0")
        require(isinstance(p.get("secret", 0), int), "secret", "the owner's secret seed must be an integer")

    def _segments(self) -> list[int]:
        dim, n = int(self.params.get("dim", 128)), int(self.params.get("matrices", 8))
        return [dim // n + (1 if j < dim % n else 0) for j in range(n)]

    def _selected(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        need = max(self._segments())
        layers = [(n, m) for n, m in matrix_layers(model) if min(m.weight.shape[0], m.weight[0].numel()) >= need]
        layers.sort(key=lambda nm: (-min(nm[1].weight.shape[0], nm[1].weight[0].numel()), nm[0]))
        return layers[: len(self._segments())]

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        if len(self._selected(model)) < len(self._segments()):
            raise NotApplicable(f"cmf_embed needs {len(self._segments())} weight matrices of rank >= "
                                f"{max(self._segments())} outside the classifier; lower 'matrices' or raise it")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.params
        alpha = float(p.get("alpha", 0.01))
        # Each owner's signature comes from the configured secret and its own seed (distinct per root), so
        # independents protected by the same config still carry signatures of their own.
        s = rademacher(int(p.get("secret", 0)) * 1_000_003 + ctx.seed, int(p.get("dim", 128)))
        before = accuracy(model, ctx.data.split("test"), ctx.device)
        kept, start = [], 0
        with torch.no_grad():
            for (name, layer), n in zip(self._selected(model), self._segments(), strict=True):
                w = layer.weight
                kept.append({"name": f"{name}.weight", "shape": list(w.shape), "start": start, "length": n,
                             "sigma": top_singular_values(w.detach().cpu(), n).tolist()})
                w.copy_(shift_singular_values(w.detach().cpu(), alpha * s[start : start + n]).to(w.device))
                start += n
        after = accuracy(model, ctx.data.split("test"), ctx.device)
        private = {"cmf_signature": {"alpha": alpha, "s": s.tolist(), "matrices": kept}}
        return TransformResult(model, spec, {"accuracy": after, "embed_accuracy_cost": before - after,
                                             "embedded_matrices": len(kept), "owner_private": private})
