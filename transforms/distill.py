"""Model extraction / knowledge distillation: a fresh student trained only on the parent's soft outputs.

The parent (teacher) is queried as a black box, once, on ``queries`` inputs of a split it was not
trained on; the student — the parent's architecture with a fresh initialisation, or another
architecture of the zoo (``student_arch``: a key of the zoo's ``archs``, or a list of keys of which
the first that differs from the parent's architecture is taken) — then minimises the KL
divergence between its temperature-scaled softmax and the teacher's (Hinton et al. 2015, with the
usual T^2 factor). The student never sees a true label nor a parent weight: the training set handed
to the training loop carries row indices into the teacher's outputs in place of labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fpbench.api import ConfigError, ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.data import ImageSet
from fpbench.models import build_module
from fpbench.ops import distillation_loss
from fpbench.subject import ModelSubject
from fpbench.train import TrainingParams, predict, train


def query_set(split: ImageSet, n: int) -> ImageSet:
    """The first ``n`` images of ``split`` with their labels replaced by row indices (labels never leave here)."""
    return ImageSet(split.images[:n], torch.arange(n), split.channels)


@dataclass(frozen=True)
class DistillParams(TrainingParams):
    # null: the parent's architecture; a key of the zoo's archs; or a list of keys (the first that differs from
    # the parent's architecture is taken)
    student_arch: str | tuple[str, ...] | None = None
    split: str = "train_c"  # the thief's query inputs
    queries: int | None = None  # inputs sent to the teacher (null: the whole split)
    temperature: float = 4.0
    steps: int = 300
    lr: float = 0.05
    eval_split: str = "test"  # the student's agreement with its teacher is measured here

    def __post_init__(self) -> None:
        super().__post_init__()
        arch = self.student_arch
        keys = (arch,) if isinstance(arch, str) else arch
        require(keys is None or (len(keys) > 0 and all(keys)), "student_arch",
                f"must be null (the parent's architecture), a key of the zoo's archs or a list of keys, got {arch!r}")
        require(self.queries is None or self.queries > 0, "queries",
                f"must be null (the whole split) or an integer > 0, got {self.queries!r}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature!r}")


class Distill(Transform):
    Params = DistillParams
    p: DistillParams
    version = "2"  # v2: a student whose training diverges is not stored (TrainingDiverged)

    def student_arch(self, spec: ModelSpec, ctx: TransformContext) -> str | None:
        """The zoo arch key of the student (None: the parent's own architecture)."""
        wanted = self.p.student_arch
        if wanted is None:
            return None
        keys = [wanted] if isinstance(wanted, str) else list(wanted)
        for key in keys:
            if key not in ctx.archs:
                raise ConfigError(f"invalid parameter 'student_arch': '{key}' is not an architecture of this zoo; "
                                  f"valid: {', '.join(ctx.archs) or '(the zoo passed none)'}")
        # A list asks for another architecture than the parent's: take the first that differs.
        others = [k for k in keys if dict(ctx.archs[k]) != spec.arch]
        return others[0] if len(keys) > 1 and others else keys[0]

    def student_spec(self, spec: ModelSpec, ctx: TransformContext, key: str | None) -> ModelSpec:
        """The student's spec: the chosen architecture on the parent's task, without the parent's wrappers."""
        arch = dict(spec.arch) if key is None else dict(ctx.archs[key])
        return ModelSpec(arch=arch, num_classes=spec.num_classes, class_names=list(spec.class_names),
                         input=dict(spec.input), modality="vision", data_id=spec.data_id)

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        temperature = p.temperature
        split = ctx.data.split(p.split)
        n = len(split) if p.queries is None else p.queries
        require(n <= len(split), "queries", f"{n} queries asked but split '{p.split}' has {len(split)} "
                                            "images; lower queries or use a larger split")
        queries = query_set(split, n)
        teacher = ModelSubject("teacher", model, spec, ctx.device)
        # Queried once, black-box; cloned out of inference mode so the loss can use them as targets.
        soft = teacher.logits(queries.tensor(device=ctx.device)).clone()

        key = self.student_arch(spec, ctx)
        sspec = self.student_spec(spec, ctx, key)
        torch.manual_seed(ctx.seed)  # the student's own initialisation, recorded as student_seed
        student = build_module(sspec).to(ctx.device)

        def loss_fn(m: nn.Module, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return distillation_loss(m(x), soft[rows], temperature)

        stats = train(student, queries, p.train_config(), seed=ctx.seed, device=ctx.device, loss_fn=loss_fn,
                      desc="distill", progress=ctx.progress)
        held_out = ctx.data.split(p.eval_split)
        x_eval = held_out.tensor(device=ctx.device)
        student_pred = predict(student, x_eval).argmax(1)
        agreement = float((student_pred == predict(model, x_eval).argmax(1)).float().mean())
        info: dict[str, Any] = {
            "student_arch": key or "same", "student_seed": ctx.seed,
            "queries": teacher.query_count, "query_split": p.split, "temperature": temperature,
            "steps": int(stats["steps"]), "distill_loss": stats["final_loss"],
            "agreement": agreement, "accuracy": float((student_pred == held_out.labels.to(ctx.device)).float().mean()),
        }
        if key is not None:
            info["arch"] = key  # the zoo records the child under its student's architecture
        return TransformResult(student, sspec, info)
