"""Full (or last-layer-only) fine-tuning on a data split disjoint from the parent's training data."""

from __future__ import annotations

from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.train import TrainConfig, cross_entropy_loss, frozen_statistics_loss, train


class FineTune(Transform):
    name = "finetune"
    version = "2"  # v2: last_layer_only keeps the trunk's BatchNorm statistics frozen too

    def validate(self) -> None:
        p = self.params
        require(p.get("split", "train_b") != "train_a", "split",
                "fine-tuning on the parent's own training split (train_a) is not a distinct child; use train_b")
        TrainConfig(steps=int(p.get("steps", 150)), lr=float(p.get("lr", 0.01)), batch_size=int(p.get("batch_size", 128)))

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.params
        cfg = TrainConfig(steps=int(p.get("steps", 150)), lr=float(p.get("lr", 0.01)),
                          batch_size=int(p.get("batch_size", 128)))
        params, loss_fn = None, cross_entropy_loss
        if p.get("last_layer_only", False):
            head = model.trunk.get_classifier()  # type: ignore[attr-defined]
            for q in model.parameters():
                q.requires_grad_(False)
            for q in head.parameters():
                q.requires_grad_(True)
            params = list(head.parameters())
            loss_fn = frozen_statistics_loss(head)
        stats = train(model, ctx.data.split(p.get("split", "train_b")), cfg, seed=ctx.seed, device=ctx.device,
                      desc="finetune", progress=ctx.progress, params=params, loss_fn=loss_fn)
        for q in model.parameters():
            q.requires_grad_(True)
        return TransformResult(model, spec, {"finetune_loss": stats["final_loss"], "steps": cfg.steps})
