"""PGD adversarial fine-tuning (Madry et al. 2018) of the parent on a split it was not trained on.

Each training step replaces the clean batch by its PGD adversarial examples (L-inf ball of radius
``eps``, ``pgd_steps`` steps of ``step_size``, random start) and minimises the cross-entropy on them:
the min-max objective of Madry et al. The attack is the shared ``fpbench.ops.pgd_attack``. The child's
info records clean and robust accuracy (PGD at the same ``eps``) of parent and child on held-out data.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.data import ImageSet
from fpbench.ops import pgd_attack
from fpbench.train import TrainConfig, accuracy, train

DEFAULTS: dict[str, Any] = {"split": "train_b", "eps": 0.1, "step_size": 0.025, "pgd_steps": 5, "steps": 100, "lr": 0.01,
            "batch_size": 128, "eval_split": "test", "eval_n": 500, "eval_pgd_steps": 10}


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


class AdvTrain(Transform):
    name = "advtrain"

    def _p(self, key: str) -> Any:
        return self.params.get(key, DEFAULTS[key])

    def validate(self) -> None:
        require(self._p("split") != "train_a", "split",
                "adversarial fine-tuning on the parent's own training split (train_a) is not a distinct child; "
                "use train_b")
        for key in ("eps", "step_size"):
            v = self._p(key)
            require(isinstance(v, (int, float)) and 0.0 < float(v) <= 1.0, key,
                    f"must be in (0, 1] (pixels are in [0, 1]), got {v!r}")
        for key in ("pgd_steps", "eval_pgd_steps", "eval_n"):
            v = self._p(key)
            require(isinstance(v, int) and v > 0, key, f"must be an integer > 0, got {v!r}")
        steps = self._p("steps")
        require(isinstance(steps, int) and steps > 0, "steps", f"must be an integer > 0, got {steps!r}")
        self._train_config()  # lr, batch_size and the steps bound

    def _train_config(self) -> TrainConfig:
        return TrainConfig(steps=int(self._p("steps")), lr=float(self._p("lr")),
                           batch_size=int(self._p("batch_size")))

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        eps, step_size = float(self._p("eps")), float(self._p("step_size"))
        pgd_steps = int(self._p("pgd_steps"))
        held_out = ctx.data.split(str(self._p("eval_split"))).subset(int(self._p("eval_n")))

        def evaluate(m: nn.Module) -> tuple[float, float]:
            robust = robust_accuracy(m, held_out, ctx.device, eps=eps, step_size=step_size,
                                     steps=int(self._p("eval_pgd_steps")), seed=ctx.seed + 1)
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

        cfg = self._train_config()
        stats = train(model, ctx.data.split(str(self._p("split"))), cfg, seed=ctx.seed, device=ctx.device,
                      loss_fn=adversarial_loss, desc="advtrain", progress=ctx.progress)
        clean, robust = evaluate(model)
        info = {"eps": eps, "step_size": step_size, "pgd_steps": pgd_steps, "steps": cfg.steps,
                "advtrain_loss": stats["final_loss"], "eval_n": len(held_out),
                "clean_accuracy": clean, "robust_accuracy": robust,
                "parent_clean_accuracy": parent_clean, "parent_robust_accuracy": parent_robust}
        return TransformResult(model, spec, info)
