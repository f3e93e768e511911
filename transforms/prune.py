"""Pruning: structured (whole output channels by L2 norm) or unstructured (magnitude), made permanent.

Uses ``torch.nn.utils.prune`` and removes the re-parametrisation, so the child's weights really
hold the zeros. The classifier layer is left whole (pruning away classes is not pruning). With
``recover_steps`` > 0 a short fine-tune on ``recover_split`` follows while the pruning masks are still
attached, so the pruned weights stay zero while the rest adapts (as a deployer would do).
"""

from __future__ import annotations

import torch.nn.utils.prune as tprune
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.train import TrainConfig, train


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    trunk = model.trunk  # type: ignore[attr-defined]
    head = trunk.get_classifier() if hasattr(trunk, "get_classifier") else None
    return [(n, m) for n, m in trunk.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head]


class Prune(Transform):
    name = "prune"
    version = "2"
    cheap = True  # without recovery: deterministic and fast, stored as a recipe

    def validate(self) -> None:
        amount = self.params.get("amount")
        require(isinstance(amount, (int, float)) and 0.0 < float(amount) < 1.0, "amount",
                f"fraction to prune must be in (0, 1), got {amount!r}")
        steps = self.params.get("recover_steps", 0)
        require(isinstance(steps, int) and steps >= 0, "recover_steps", f"must be an integer >= 0, got {steps!r}")
        require(self.params.get("recover_split", "train_b") != "train_a", "recover_split",
                "recovery on the parent's own training split (train_a) is not a distinct child; use train_b")
        self.cheap = steps == 0  # a recovered child is trained, so it is stored with its weights

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        from fpbench.api import NotApplicable

        if not prunable_layers(model):
            raise NotApplicable("no Conv2d/Linear layers outside the classifier to prune")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        amount = float(self.params["amount"])
        structured = bool(self.params.get("structured", True))
        layers = [layer for _, layer in prunable_layers(model)]
        for layer in layers:
            if structured:
                tprune.ln_structured(layer, "weight", amount=amount, n=2, dim=0)
            else:
                tprune.l1_unstructured(layer, "weight", amount=amount)
        info: dict = {"structured": structured}
        steps = int(self.params.get("recover_steps", 0))
        if steps:
            cfg = TrainConfig(steps=steps, lr=float(self.params.get("recover_lr", 0.01)), batch_size=128)
            stats = train(model, ctx.data.split(self.params.get("recover_split", "train_b")), cfg, seed=ctx.seed,
                          device=ctx.device, desc="prune recovery", progress=ctx.progress)
            info.update(recover_steps=steps, recover_loss=stats["final_loss"])
        zeroed = total = 0
        for layer in layers:
            tprune.remove(layer, "weight")
            zeroed += int((layer.weight == 0).sum())
            total += layer.weight.numel()
        info["sparsity"] = zeroed / max(1, total)
        return TransformResult(model, spec, info)
