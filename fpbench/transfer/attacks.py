"""Removal pressure on a fingerprinted model: pruning, quantization and merging, for any architecture.

Further fine-tuning is the fourth attack; it needs the track's data, so each track does it. The layers
an attack touches are the track's choice (``layers``): a classifier's head or a language model's tied
embedding stays whole, as in ``transforms.prune``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from fpbench.api import require
from fpbench.transfer.vector import weight_average
from transforms.quantize import quantize_per_channel_


def prune(model: nn.Module, layers: list[str], amount: float) -> nn.Module:
    """A copy of ``model`` with the ``amount`` smallest-magnitude weights of each named layer set to zero (torch's pruning)."""
    require(0.0 < amount < 1.0, "attacks.prune_amount", f"must be in (0, 1), got {amount}")
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    for name in layers:
        tprune.l1_unstructured(modules[name], "weight", amount=amount)
        tprune.remove(modules[name], "weight")
    return out


@torch.no_grad()
def quantize(model: nn.Module, layers: list[str], bits: int) -> nn.Module:
    """A copy with each named layer's weight snapped to a per-output-channel symmetric ``bits``-bit grid.

    The weight's output dimension is its first for Conv2d/Linear and its last for transformers' Conv1D
    (GPT-2 stores [in, out]); ``layers`` maps to modules and the axis is read from their type.
    """
    require(isinstance(bits, int) and 2 <= bits <= 8, "attacks.quant_bits", f"must be an integer in 2..8, got {bits!r}")
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    for name in layers:
        w = modules[name].weight
        if type(modules[name]).__name__ == "Conv1D":  # transformers' GPT-2 layer: out features last
            wt = w.data.t().contiguous()
            quantize_per_channel_(wt, bits)
            w.data.copy_(wt.t())
        else:
            quantize_per_channel_(w.data, bits)
    return out


def merge(model: nn.Module, other: nn.Module, alpha: float) -> nn.Module:
    """Weight-average ``model`` with ``other`` (``alpha`` is ``model``'s share)."""
    require(0.0 < alpha < 1.0, "attacks.merge_alpha", f"must be in (0, 1), got {alpha}")
    return weight_average(model, other, alpha)
