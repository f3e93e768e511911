"""Full (or last-layer-only) fine-tuning on a data split disjoint from the parent's training data."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult
from fpbench.models import head_of
from fpbench.train import TrainingParams, cross_entropy_loss, frozen_statistics_loss, train


@dataclass(frozen=True)
class FineTuneParams(TrainingParams):
    last_layer_only: bool = False  # train the classifier alone (the trunk and its BatchNorm statistics frozen)


class FineTune(Transform):
    Params = FineTuneParams
    p: FineTuneParams
    version = "2"  # v2: last_layer_only keeps the trunk's BatchNorm statistics frozen too
    modalities = ("vision", "vision-language", "language")  # works on any module with a trunk of linear layers

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        cfg = p.train_config()
        params, loss_fn = None, cross_entropy_loss
        if p.last_layer_only:
            head = head_of(model.trunk)  # type: ignore[attr-defined]
            for q in model.parameters():
                q.requires_grad_(False)
            for q in head.parameters():
                q.requires_grad_(True)
            params = list(head.parameters())
            loss_fn = frozen_statistics_loss(head)
        stats = train(model, ctx.data.split(p.split), cfg, seed=ctx.seed, device=ctx.device,
                      desc="finetune", progress=ctx.progress, params=params, loss_fn=loss_fn)
        for q in model.parameters():
            q.requires_grad_(True)
        return TransformResult(model, spec, {"finetune_loss": stats["final_loss"], "steps": cfg.steps})
