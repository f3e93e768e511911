"""PGD adversarial fine-tuning (Madry et al. 2018) of the parent on a split it was not trained on.

Each training step replaces the clean batch by its PGD adversarial examples (L-inf ball of radius
``eps``, ``pgd_steps`` steps of ``step_size``, random start) and minimises the cross-entropy on them:
the min-max objective of Madry et al. The attack is the shared ``fpbench.ops.pgd_attack``. The child's
info records clean and robust accuracy (PGD at the same ``eps``) of parent and child on held-out data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.data import ImageSet
from fpbench.ops import pgd_attack
from fpbench.train import TrainingParams, accuracy, train


def robust_accuracy(model: nn.Module, data: ImageSet, device: torch.device, *, eps: float, step_size: float,
                    steps: int, seed: int, batch_size: int = 256) -> float:
    """Accuracy of ``model`` on PGD adversarial examples of ``data`` (untargeted, true labels, random start)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for x, y in data.batches(batch_size, device=device):
        adv = pgd_attack(model, x, y, eps=eps, step_size=step_size, steps=steps, generator=gen)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y).sum())
    return correct / max(1, len(data))


@dataclass(frozen=True)
class AdvTrainParams(TrainingParams):
    eps: float = 0.1  # L-inf radius of the attack, pixels in [0, 1]
    step_size: float = 0.025
    pgd_steps: int = 5  # attack steps per training batch
    steps: int = 100
    eval_split: str = "test"  # clean and robust accuracy of parent and child are measured on eval_n of its images
    eval_n: int = 500
    eval_pgd_steps: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("eps", "step_size"):
            v = getattr(self, key)
            require(0.0 < v <= 1.0, key, f"must be in (0, 1] (pixels are in [0, 1]), got {v!r}")
        for key in ("pgd_steps", "eval_pgd_steps", "eval_n"):
            v = getattr(self, key)
            require(v > 0, key, f"must be an integer > 0, got {v!r}")


class AdvTrain(Transform):
    Params = AdvTrainParams
    p: AdvTrainParams

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        eps, step_size, pgd_steps = p.eps, p.step_size, p.pgd_steps
        held_out = ctx.data.split(p.eval_split).subset(p.eval_n)

        def evaluate(m: nn.Module) -> tuple[float, float]:
            robust = robust_accuracy(m, held_out, ctx.device, eps=eps, step_size=step_size,
                                     steps=p.eval_pgd_steps, seed=ctx.seed + 1)
            return accuracy(m, held_out, ctx.device), robust

        parent_clean, parent_robust = evaluate(model.to(ctx.device))  # before training: the parent's
        gen = torch.Generator().manual_seed(ctx.seed)

        def adversarial_loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # Craft the attack in eval mode so its probing passes do not move the BatchNorm running
            # statistics; the update itself runs in train mode on the adversarial batch.
            m.eval()
            adv = pgd_attack(m, x, y, eps=eps, step_size=step_size, steps=pgd_steps, generator=gen)
            m.train()
            return F.cross_entropy(m(adv), y)

        cfg = p.train_config()
        stats = train(model, ctx.data.split(p.split), cfg, seed=ctx.seed, device=ctx.device,
                      loss_fn=adversarial_loss, desc="advtrain", progress=ctx.progress)
        clean, robust = evaluate(model)
        info = {"eps": eps, "step_size": step_size, "pgd_steps": pgd_steps, "steps": cfg.steps,
                "advtrain_loss": stats["final_loss"], "eval_n": len(held_out),
                "clean_accuracy": clean, "robust_accuracy": robust,
                "parent_clean_accuracy": parent_clean, "parent_robust_accuracy": parent_robust}
        return TransformResult(model, spec, info)
