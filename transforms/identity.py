"""The parent unchanged: a sanity cell where every positive is the owner's own model."""

from __future__ import annotations

from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult


class Identity(Transform):
    modalities = ("vision", "vision-language", "language")

    @property
    def cheap(self) -> bool:
        return True  # nothing to store: the recipe is the parent

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        return TransformResult(model, spec, {})
