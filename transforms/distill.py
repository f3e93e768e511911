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

from typing import Any

import torch
from torch import nn

from fpbench.api import ConfigError, ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.data import ImageSet
from fpbench.models import build_module
from fpbench.ops import distillation_loss
from fpbench.subject import ModelSubject
from fpbench.train import TrainConfig, predict, train

DEFAULTS: dict[str, Any] = {"student_arch": None, "split": "train_c", "queries": None, "temperature": 4.0,
                            "steps": 300, "lr": 0.05, "batch_size": 128, "eval_split": "test"}


def query_set(split: ImageSet, n: int) -> ImageSet:
    """The first ``n`` images of ``split`` with their labels replaced by row indices (labels never leave here)."""
    return ImageSet(split.images[:n], torch.arange(n), split.channels)


class Distill(Transform):
    name = "distill"
    version = "2"  # v2: a student whose training diverges is not stored (TrainingDiverged)

    def _p(self, key: str) -> Any:
        return self.params.get(key, DEFAULTS[key])

    def validate(self) -> None:
        require(self._p("split") != "train_a", "split",
                "queries from the parent's own training split (train_a) are not what a thief has; use train_b or "
                "train_c")
        arch = self._p("student_arch")
        keys = arch if isinstance(arch, (list, tuple)) else [arch]
        require(arch is None or (len(keys) > 0 and all(isinstance(k, str) and k for k in keys)), "student_arch",
                f"must be null (the parent's architecture), a key of the zoo's archs or a list of keys, got {arch!r}")
        queries = self._p("queries")
        require(queries is None or (isinstance(queries, int) and queries > 0), "queries",
                f"must be null (the whole split) or an integer > 0, got {queries!r}")
        temp = self._p("temperature")
        require(isinstance(temp, (int, float)) and temp > 0, "temperature", f"must be > 0, got {temp!r}")
        steps = self._p("steps")
        require(isinstance(steps, int) and steps > 0, "steps", f"must be an integer > 0, got {steps!r}")
        self._train_config()

    def _train_config(self) -> TrainConfig:
        return TrainConfig(steps=int(self._p("steps")), lr=float(self._p("lr")), batch_size=int(self._p("batch_size")))

    def student_arch(self, spec: ModelSpec, ctx: TransformContext) -> str | None:
        """The zoo arch key of the student (None: the parent's own architecture)."""
        wanted = self._p("student_arch")
        if wanted is None:
            return None
        keys = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
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
        temperature = float(self._p("temperature"))
        split = ctx.data.split(self._p("split"))
        n = len(split) if self._p("queries") is None else int(self._p("queries"))
        require(n <= len(split), "queries", f"{n} queries asked but split '{self._p('split')}' has {len(split)} "
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

        stats = train(student, queries, self._train_config(), seed=ctx.seed, device=ctx.device, loss_fn=loss_fn,
                      desc="distill", progress=ctx.progress)
        held_out = ctx.data.split(self._p("eval_split"))
        x_eval = held_out.tensor(device=ctx.device)
        student_pred = predict(student, x_eval).argmax(1)
        agreement = float((student_pred == predict(model, x_eval).argmax(1)).float().mean())
        info: dict[str, Any] = {
            "student_arch": key or "same", "student_seed": ctx.seed,
            "queries": teacher.query_count, "query_split": self._p("split"), "temperature": temperature,
            "steps": int(stats["steps"]), "distill_loss": stats["final_loss"],
            "agreement": agreement, "accuracy": float((student_pred == held_out.labels.to(ctx.device)).float().mean()),
        }
        if key is not None:
            info["arch"] = key  # the zoo records the child under its student's architecture
        return TransformResult(student, sspec, info)
