"""One training loop for every model fpbench trains (roots, fine-tunes, distillation, adversarial training).

A ``loss_fn(model, x, y) -> loss`` hook lets a transform change the objective without a second loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fpbench.api import NotApplicable, TransformContext
from fpbench.data import ImageSet
from fpbench.errors import require
from fpbench.params import TransformParams

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The task's loss: a classifier's cross-entropy, or the model's own ``task_loss`` where it has one (a
    language model's next-token loss, ``fpbench.llm.models.LanguageModel``)."""
    own = getattr(model, "task_loss", None)
    return own(x, y) if own is not None else F.cross_entropy(model(x), y)


def frozen_statistics_loss(train_mode: nn.Module | None = None) -> LossFn:
    """Cross-entropy with the model in eval mode except ``train_mode``: when only a head or adapters train,
    the frozen layers' BatchNorm running statistics must not drift either (``train`` sets train mode)."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model.eval()
        if train_mode is not None:
            train_mode.train()
        return cross_entropy_loss(model, x, y)

    return loss


@dataclass
class TrainConfig:
    steps: int
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    optimizer: str = "sgd"  # "sgd" | "adamw"
    warmup_steps: int = 0
    max_steps: int = 100_000  # hard bound a config cannot exceed (resource safety)

    def __post_init__(self) -> None:
        from fpbench.api import require

        require(self.steps >= 0, "steps", f"must be >= 0, got {self.steps}")
        require(self.steps <= self.max_steps, "steps", f"must be <= {self.max_steps}, got {self.steps}")
        require(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.optimizer in ("sgd", "adamw"), "optimizer", f"must be 'sgd' or 'adamw', got {self.optimizer!r}")


def _make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


@dataclass(frozen=True)
class TrainingParams(TransformParams):
    """The training section of a transform that trains its child (fine-tune, LoRA, distillation, ...): the data
    split, steps, learning rate and batch size. A subclass redeclares a field to change its default."""

    split: str = "train_b"
    steps: int = 150
    lr: float = 0.01
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (momentum 0.9, as the roots are trained) | "adamw"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.split != "train_a", "split",
                "the parent's own training split (train_a) does not make a distinct child; use train_b or train_c")
        require(self.steps >= 1, "steps", f"a training transform must train: give steps >= 1, got {self.steps}")
        self.train_config()  # the bounds of steps, lr and batch_size

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer)


@dataclass(frozen=True)
class RecoveryParams(TransformParams):
    """An optional recovery fine-tune after a weight edit (pruning, a removal attack): ``recover_steps`` SGD
    steps at ``recover_lr`` on ``recover_split``; 0 steps: none (the edit alone is the child)."""

    recover_steps: int = 0
    recover_lr: float = 0.01
    recover_split: str = "train_b"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.recover_steps >= 0, "recover_steps", f"must be an integer >= 0, got {self.recover_steps}")
        require(self.recover_split != "train_a", "recover_split",
                "recovery on the parent's own training split (train_a) is not a distinct child; use train_b")
        require(self.recover_lr > 0, "recover_lr", f"must be > 0, got {self.recover_lr}")


class TrainingDiverged(NotApplicable):
    """Training ended with a non-finite loss: the transform cannot make a working child at these settings."""


def train(
    model: nn.Module,
    data: ImageSet,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    loss_fn: LossFn = cross_entropy_loss,
    desc: str = "train",
    progress: bool = True,
    params: Iterable[nn.Parameter] | None = None,
) -> dict[str, float]:
    """Train ``model`` in place for ``cfg.steps`` steps of shuffled mini-batches; returns the last loss."""
    model.to(device).train()
    opt = _make_optimizer(params if params is not None else model.parameters(), cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * 0.5 * (1 + math.cos(math.pi * s / max(1, cfg.steps)))
    )
    gen = torch.Generator().manual_seed(seed)
    step, last = 0, float("nan")
    bar = tqdm(total=cfg.steps, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    while step < cfg.steps:
        for x, y in data.batches(cfg.batch_size, shuffle=True, generator=gen, device=device):
            if step >= cfg.steps:
                break
            loss = loss_fn(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            last = float(loss.detach())
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{last:.3f}")
    bar.close()
    model.eval()
    if step and not math.isfinite(last):  # a diverged child is no evidence: say so instead of storing it
        raise TrainingDiverged(f"{desc}: training diverged (loss {last} after {step} steps at lr {cfg.lr}); "
                               "this model needs a lower transform.params.lr")
    return {"final_loss": last, "steps": float(step)}


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches (x already on the model's device)."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.inference_mode()
def accuracy(model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 512) -> float:
    """Test accuracy of ``model`` on ``data``: a split that defines its own task accuracy (text: next-token
    accuracy, ``fpbench.llm.data.TextSplit``) is asked for it."""
    model.eval()
    own = getattr(data, "accuracy", None)
    if own is not None:
        return float(own(model, device))
    correct = 0
    for x, y in data.batches(batch_size, device=device):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(data))


def recover(model: nn.Module, p: RecoveryParams, ctx: TransformContext, desc: str) -> dict[str, float]:
    """The recovery fine-tune of ``p`` on ``model`` in place (none at 0 steps); returns what the child's info
    records of it."""
    if not p.recover_steps:
        return {}
    cfg = TrainConfig(steps=p.recover_steps, lr=p.recover_lr, batch_size=128)
    stats = train(model, ctx.data.split(p.recover_split), cfg, seed=ctx.seed, device=ctx.device, desc=desc,
                  progress=ctx.progress)
    return {"recover_steps": p.recover_steps, "recover_loss": stats["final_loss"]}
