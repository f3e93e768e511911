"""Transfer fine-tuning: the parent's trunk, a new head, fully fine-tuned on a shifted task.

The shifted task is a sub-task of the zoo's data: the images of ``classes`` (indices of the parent's
classes) relabelled 0..k-1, drawn from ``split`` (disjoint from the parent's training data). The child
is a k-way classifier whose spec names the new classes. Its accuracy on the new task is recorded as
``task_accuracy`` next to ``parent_task_accuracy`` (the parent restricted to the same classes' logits);
``accuracy`` stays the child's accuracy on the zoo's own test split, as for every model, so the run's
accuracy check through ``Subject.logits`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult, require
from fpbench.data import ImageSet
from fpbench.train import TrainingParams, predict, train


def class_subset(data: ImageSet, classes: list[int]) -> ImageSet:
    """The images of ``classes``, relabelled to their position in ``classes`` (0..k-1)."""
    keep = torch.isin(data.labels, torch.tensor(classes))
    remap = torch.full((int(data.labels.max()) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    return ImageSet(data.images[keep], remap[data.labels[keep]], data.channels)


@torch.inference_mode()
def restricted_accuracy(model: nn.Module, data: ImageSet, classes: list[int], device: torch.device) -> float:
    """Accuracy of ``model`` on a class subset when only its logits of ``classes`` compete (the parent's view)."""
    logits = predict(model.to(device), data.tensor(device=device))[:, classes]
    return float((logits.argmax(1).cpu() == data.labels).float().mean())


@torch.inference_mode()
def _accuracy(model: nn.Module, data: ImageSet, device: torch.device) -> float:
    return float((predict(model.to(device), data.tensor(device=device)).argmax(1).cpu() == data.labels).float().mean())


@dataclass(frozen=True, kw_only=True)
class FineTuneTransferParams(TrainingParams):
    classes: tuple[int, ...]  # indices of the parent's classes that make the new task (relabelled 0..k-1)

    def __post_init__(self) -> None:
        super().__post_init__()
        c = self.classes
        require(len(c) >= 2 and all(i >= 0 for i in c) and len(set(c)) == len(c), "classes",
                f"must be a list of >= 2 distinct class indices of the parent's task, got {list(c)!r}")


class FineTuneTransfer(Transform):
    Params = FineTuneTransferParams
    p: FineTuneTransferParams
    version = "1"

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        bad = [c for c in self.p.classes if c >= spec.num_classes]
        if bad:
            raise NotApplicable(f"finetune_transfer: classes {bad} do not exist in a {spec.num_classes}-class parent")
        if not hasattr(model.trunk, "reset_classifier"):  # type: ignore[attr-defined]
            raise NotApplicable("finetune_transfer: the trunk has no reset_classifier() to give it a new head")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        classes = list(self.p.classes)
        train_set = class_subset(ctx.data.split(self.p.split), classes)
        test_set = class_subset(ctx.data.split("test"), classes)
        parent_task_acc = restricted_accuracy(model, test_set, classes, ctx.device)
        model.trunk.reset_classifier(len(classes))  # type: ignore[attr-defined]  # a fresh head for the new task
        stats = train(model, train_set, self.p.train_config(), seed=ctx.seed, device=ctx.device,
                      desc="finetune_transfer", progress=ctx.progress)
        child_spec = ModelSpec.from_dict({**spec.to_dict(), "num_classes": len(classes),
                                          "class_names": [spec.class_names[c] for c in classes]})
        info = {"task_classes": ",".join(map(str, classes)), "task_num_classes": len(classes),
                "task_accuracy": _accuracy(model, test_set, ctx.device), "parent_task_accuracy": parent_task_acc,
                "task_train_images": len(train_set), "finetune_loss": stats["final_loss"], "steps": int(stats["steps"]),
                "trainable_params": sum(q.numel() for q in model.parameters())}
        return TransformResult(model, child_spec, info)
