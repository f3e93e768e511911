"""Pruning: structured (whole output channels by L2 norm) or unstructured (magnitude), made permanent.

Uses ``torch.nn.utils.prune`` and removes the re-parametrisation, so the child's weights really
hold the zeros. The classifier layer is left whole (pruning away classes is not pruning).
"""

from __future__ import annotations

import torch.nn.utils.prune as tprune
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    trunk = model.trunk  # type: ignore[attr-defined]
    head = trunk.get_classifier() if hasattr(trunk, "get_classifier") else None
    return [(n, m) for n, m in trunk.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head]


class Prune(Transform):
    name = "prune"
    cheap = True  # deterministic and fast: stored as a recipe

    def validate(self) -> None:
        amount = self.params.get("amount")
        require(isinstance(amount, (int, float)) and 0.0 < float(amount) < 1.0, "amount",
                f"fraction to prune must be in (0, 1), got {amount!r}")

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        from fpbench.api import NotApplicable

        if not prunable_layers(model):
            raise NotApplicable("no Conv2d/Linear layers outside the classifier to prune")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        amount = float(self.params["amount"])
        structured = bool(self.params.get("structured", True))
        zeroed = total = 0
        for _, layer in prunable_layers(model):
            if structured:
                tprune.ln_structured(layer, "weight", amount=amount, n=2, dim=0)
            else:
                tprune.l1_unstructured(layer, "weight", amount=amount)
            tprune.remove(layer, "weight")
            zeroed += int((layer.weight == 0).sum())
            total += layer.weight.numel()
        return TransformResult(model, spec, {"sparsity": zeroed / max(1, total), "structured": structured})
