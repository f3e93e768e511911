"""Checks that a model is a working model before anything scores it. Ground floor: imports only ``errors``.

A transform at extreme settings (``removal`` with ``noise=1e39, steps=0``) can return a module whose weights
overflowed to inf/NaN, or whose outputs are no longer finite; scoring such a child would record noise as
evidence. :func:`check_child` refuses it as not applicable, naming the transform, the first bad tensor and the
fix, so the cell records the reason instead of a score. :func:`first_non_finite` is shared with the loader of
untrusted model files (``fpbench.safeload``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from fpbench.errors import NotApplicable


class BrokenChild(NotApplicable):
    """A transform made a child that cannot do its task (non-finite weights or outputs); the reason names the fix."""


def first_non_finite(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None when all are finite."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, t in items:
        if type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):
            # a library's quantized tensor (torchao) supports few ops: check the values it computes with
            dequantize = getattr(t, "dequantize", None)
            if dequantize is None:
                continue
            t = dequantize()
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            return name
    return None


def _fix(transform: str, params: Mapping[str, Any] | None) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in sorted((params or {}).items())) or "its defaults"
    return (f"transform '{transform}' at {shown} destroys the model; choose gentler settings "
            f"(transform.params.*, e.g. a smaller noise, lr or amount, or more recovery steps)")


@torch.no_grad()
def check_child(model: nn.Module, transform: str, params: Mapping[str, Any] | None = None,
                probe: torch.Tensor | None = None) -> None:
    """Raise :class:`BrokenChild` when ``model`` has a non-finite weight or buffer, or non-finite outputs on ``probe``
    (a small batch of the zoo's test inputs, on the model's device)."""
    bad = first_non_finite(model.state_dict())
    if bad is not None:
        raise BrokenChild(f"the child has non-finite weights (first: '{bad}'): {_fix(transform, params)}")
    if probe is None:
        return
    was_training = model.training
    model.eval()
    try:
        out = model(probe)
    finally:
        model.train(was_training)
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor) and not bool(torch.isfinite(logits).all()):
        raise BrokenChild(f"the child's outputs on test inputs are not finite: {_fix(transform, params)}")
