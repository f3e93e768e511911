"""LoRA through peft on the trunk's conv/linear layers, trained on a split disjoint from the parent's.

Only the low-rank adapters train: peft freezes every weight, and the model runs in eval mode so the
BatchNorm statistics stay the parent's (lora dropout is 0: eval mode would switch it off anyway). ``merge: true`` folds them into the
weights with ``merge_and_unload`` (the child is a plain model); ``merge: false`` keeps the peft layers,
records a ``lora`` wrapper in the child's spec so the loader rebuilds them, and white-box methods see
the effective weights (base + B·A·alpha/r) through ``fpbench.weights``.

Depthwise convolutions are never targeted: peft needs the rank divisible by the groups and cannot merge
grouped convs. The classifier stays frozen (the child keeps the parent's task).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult, require
from fpbench.models import head_of, is_conv1d
from fpbench.train import TrainConfig, TrainingParams, frozen_statistics_loss, train
from fpbench.wrappers import lora_peft_model


def lora_targets(trunk: nn.Module, patterns: Sequence[str] | str) -> list[str]:
    """Names of the trunk's LoRA-able layers matching ``patterns`` (peft's rule: the name or a ``.``-suffix of it;
    a string is a full-match regex; ``"all"`` takes every eligible layer)."""
    head = head_of(trunk)
    eligible = [n for n, m in trunk.named_modules()  # transformers' Conv1D: GPT-2's linears (peft adapts them)
                if m is not head and (isinstance(m, nn.Linear) or is_conv1d(m)
                                      or (isinstance(m, nn.Conv2d) and m.groups == 1))]
    if patterns == "all":
        return eligible
    if isinstance(patterns, str):
        return [n for n in eligible if re.fullmatch(patterns, n)]
    return [n for n in eligible if any(n == p or n.endswith("." + p) for p in patterns)]


@dataclass(frozen=True, kw_only=True)
class LoRAParams(TrainingParams):
    target_modules: tuple[str, ...] | str  # layer-name suffixes as in peft, a full-match regex, or "all"
    r: int = 4  # adapter rank
    alpha: float = 8.0  # peft's lora_alpha (the update is scaled by alpha / r)
    merge: bool = True  # fold the adapters into the weights (merge_and_unload); false: keep peft layers
    lr: float = 0.005

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.target_modules, str) or len(self.target_modules) > 0, "target_modules",
                f"must be a list of layer-name suffixes, a regex or 'all', got {self.target_modules!r}")
        require(self.r >= 1, "r", f"rank must be an integer >= 1, got {self.r!r}")
        require(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha!r}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, lr=self.lr, batch_size=self.batch_size, optimizer="adamw",
                           weight_decay=0.0)


class LoRA(Transform):
    Params = LoRAParams
    p: LoRAParams
    version = "1"
    modalities = ("vision", "vision-language", "language")  # works on any module with a trunk of linear layers

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        if spec.wrappers:
            raise NotApplicable(f"LoRA on a model already rewritten by {[w['kind'] for w in spec.wrappers]} is not "
                                "supported; apply peft_lora before quantization or other LoRA")
        if not lora_targets(model.trunk, self.p.target_modules):  # type: ignore[attr-defined]
            eligible = lora_targets(model.trunk, "all")  # type: ignore[attr-defined]
            raise NotApplicable(
                f"LoRA: no Conv2d (groups=1) or Linear layer of {spec.arch.get('name', spec.arch.get('builder'))} "
                f"matches target_modules={self.p.target_modules!r}; its layers are e.g. {eligible[:6]}")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        targets = lora_targets(model.trunk, p.target_modules)  # type: ignore[attr-defined]
        config: dict[str, Any] = {"r": p.r, "lora_alpha": p.alpha,
                                  "lora_dropout": 0.0, "target_modules": targets}
        peft_model = lora_peft_model(model.net, config)  # type: ignore[attr-defined]
        model.net = peft_model.get_base_model()  # type: ignore[assignment]
        trainable = [q for q in model.parameters() if q.requires_grad]
        stats = train(model, ctx.data.split(p.split), p.train_config(), seed=ctx.seed,
                      device=ctx.device, desc="lora", progress=ctx.progress, params=trainable,
                      loss_fn=frozen_statistics_loss())  # only the adapters change (no BatchNorm drift)
        info = {"lora_rank": config["r"], "lora_alpha": config["lora_alpha"], "lora_layers": len(targets),
                "trainable_params": sum(q.numel() for q in trainable), "merged": p.merge,
                "library": "peft", "finetune_loss": stats["final_loss"], "steps": int(stats["steps"])}
        if p.merge:
            model.net = peft_model.merge_and_unload()  # type: ignore[assignment]
            child_spec = spec
        else:
            child_spec = ModelSpec.from_dict({**spec.to_dict(), "wrappers": [*spec.wrappers,
                                                                            {"kind": "lora", "config": config}]})
        for q in model.parameters():
            q.requires_grad_(True)
        return TransformResult(model, child_spec, info)

