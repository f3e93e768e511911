"""Pruning: structured (whole output channels by L2 norm) or unstructured (magnitude), made permanent.

Uses ``torch.nn.utils.prune`` and removes the re-parametrisation, so the child's weights really
hold the zeros. The classifier layer is left whole (pruning away classes is not pruning). With
``recover_steps`` > 0 a short fine-tune on ``recover_split`` follows while the pruning masks are still
attached, so the pruned weights stay zero while the rest adapts (as a deployer would do).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.utils.prune as tprune
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult, require
from fpbench.models import head_of
from fpbench.train import RecoveryParams, recover
from transforms.quantize import is_conv1d


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    trunk = model.trunk  # type: ignore[attr-defined]
    head = head_of(trunk)
    return [(n, m) for n, m in trunk.named_modules()
            if (isinstance(m, (nn.Conv2d, nn.Linear)) or is_conv1d(m)) and m is not head]


@dataclass(frozen=True, kw_only=True)
class PruneParams(RecoveryParams):
    amount: float  # fraction of output channels (structured) or weights (unstructured) zeroed per layer
    structured: bool = True  # whole output channels by L2 norm; false: single weights by magnitude

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.amount < 1.0, "amount", f"fraction to prune must be in (0, 1), got {self.amount!r}")


class Prune(Transform):
    Params = PruneParams
    p: PruneParams
    version = "2"
    modalities = ("vision", "vision-language", "language")  # works on any module with a trunk of linear layers

    @property
    def cheap(self) -> bool:
        return self.p.recover_steps == 0  # deterministic and fast: stored as a recipe; a recovered child is trained

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        if not prunable_layers(model):
            raise NotApplicable("no Conv2d/Linear layers outside the classifier to prune")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        amount, structured = self.p.amount, self.p.structured
        layers = [layer for _, layer in prunable_layers(model)]
        for layer in layers:
            if structured:
                # output channels: dim 0 of a Conv2d/Linear weight, dim 1 of a Conv1D's ([in, out])
                tprune.ln_structured(layer, "weight", amount=amount, n=2, dim=1 if is_conv1d(layer) else 0)
            else:
                tprune.l1_unstructured(layer, "weight", amount=amount)
        info: dict = {"structured": structured}
        info.update(recover(model, self.p, ctx, "prune recovery"))  # with the masks attached: pruned weights stay 0
        zeroed = total = 0
        for layer in layers:
            tprune.remove(layer, "weight")
            zeroed += int((layer.weight == 0).sum())
            total += layer.weight.numel()
        info["sparsity"] = zeroed / max(1, total)
        return TransformResult(model, spec, info)
