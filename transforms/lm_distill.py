"""Logit distillation of a causal language model into a fresh student (Hinton et al. 2015 on next-token
distributions; the language twin of ``transforms.distill``): the parent is queried once for its next-token
logits at every position of ``queries`` token blocks of a split it was not trained on, and a freshly initialised
student -- the parent's architecture, or another of the zoo's (``student_arch``) -- minimises the temperature-scaled
KL divergence to them, at every position. The student never sees a parent weight nor the text's own next tokens.

Label policy: the student is a positive for the parent's root, as a distilled vision model is (its function is the
parent's, its weights are not); the tables give it a column of its own (``lm_distill``), so a reader sees which
methods recognise function rather than weights. LeaFBench's "distillation" (a family's base fine-tuned on another
family's generations) is a different child; it is not built here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fpbench.api import ModelSpec, TransformContext, TransformResult, require
from fpbench.llm.text import TokenBlocks
from fpbench.models import build_module
from fpbench.ops import distillation_loss
from fpbench.train import train
from transforms.distill import Distill, DistillParams


@dataclass(frozen=True)
class LMDistillParams(DistillParams):
    temperature: float = 2.0
    steps: int = 200
    lr: float = 3.0e-3
    optimizer: str = "adamw"
    batch_size: int = 32


class LMDistill(Distill):
    Params = LMDistillParams
    p: LMDistillParams
    version = "1"
    modalities = ("language",)

    def student_spec(self, spec: ModelSpec, ctx: TransformContext, key: str | None) -> ModelSpec:
        student = super().student_spec(spec, ctx, key)
        student.modality = spec.modality
        return student

    @torch.no_grad()
    def _teacher_logits(self, model: nn.Module, ids: torch.Tensor, device: torch.device) -> torch.Tensor:
        model.eval()
        return torch.cat([model(ids[i : i + 32].to(device)).float() for i in range(0, len(ids), 32)])

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        blocks = ctx.data.split(p.split).blocks
        n = len(blocks) if p.queries is None else p.queries
        require(n <= len(blocks), "queries", f"{n} queries asked but split '{p.split}' has {len(blocks)} token "
                                             "blocks; lower queries or use a larger split")
        ids = blocks.ids[:n]
        soft = self._teacher_logits(model, ids, ctx.device)  # [n, T, vocab]: queried once
        key = self.student_arch(spec, ctx)
        sspec = self.student_spec(spec, ctx, key)
        torch.manual_seed(ctx.seed)
        student = build_module(sspec).to(ctx.device)

        def loss_fn(m: nn.Module, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return distillation_loss(m(x).flatten(0, 1), soft[rows].flatten(0, 1), p.temperature)

        rows = TokenBlocks(ids, targets=torch.arange(len(ids)))  # targets: rows of the teacher's logits
        stats = train(student, rows, p.train_config(), seed=ctx.seed, device=ctx.device, loss_fn=loss_fn,
                      desc="lm distill", progress=ctx.progress)
        test = ctx.data.split(p.eval_split).tensor(device=ctx.device)
        agreement = float((self._teacher_logits(student, test, ctx.device).argmax(-1)
                           == self._teacher_logits(model, test, ctx.device).argmax(-1)).float().mean())
        info = {"student_arch": key or "same", "student_seed": ctx.seed, "queries": n,
                "query_tokens": int(ids.numel()), "query_split": p.split, "temperature": p.temperature,
                "steps": int(stats["steps"]), "distill_loss": stats["final_loss"], "agreement": agreement}
        if key is not None:
            info["arch"] = key
        return TransformResult(student, sspec, info)
