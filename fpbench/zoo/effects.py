"""What a transform did to a model's weights: sparsity and the parameter change relative to its parent.

Measured on effective weights (``fpbench.weights``: LoRA merged, quantized layers dequantized) of the
vision trunk's conv kernels and linear matrices, so every transform is measured the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fpbench.weights import effective_named_weights

EFFECT_KEYS = ("weight_sparsity", "rel_change_norm")


def trunk_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return effective_named_weights(getattr(model, "trunk", model))


def sparsity(weights: dict[str, torch.Tensor]) -> float:
    """Fraction of exactly-zero entries over all weights."""
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / total if total else float("nan")


def relative_change_norm(child: dict[str, torch.Tensor], parent: dict[str, torch.Tensor]) -> float:
    """||theta_child - theta_parent|| / ||theta_parent|| over name-aligned weights; NaN when they do not align."""
    if not parent or child.keys() != parent.keys() or any(child[k].shape != parent[k].shape for k in parent):
        return float("nan")
    diff = sum(float((child[k].double() - parent[k].double()).pow(2).sum()) for k in parent)
    base = sum(float(parent[k].double().pow(2).sum()) for k in parent)
    return math.sqrt(diff / base) if base > 0 else float("nan")


def weight_effects(child: nn.Module, parent: nn.Module, same_arch: bool) -> dict[str, float]:
    """``weight_sparsity`` of the child and its ``rel_change_norm`` from the parent (NaN across architectures)."""
    cw = trunk_weights(child)
    change = relative_change_norm(cw, trunk_weights(parent)) if same_arch else float("nan")
    return {"weight_sparsity": sparsity(cw), "rel_change_norm": change}
