"""Effective weights of a module, named as in the plain (unwrapped) model.

White-box methods compare a parent with its children, whose layers may have been wrapped by peft
(LoRA: ``base_layer`` + ``lora_A``/``lora_B``) or replaced by quantized layers (bitsandbytes,
torchao). This module turns any of those back into the dense weight the layer computes with, under
the name the layer had in the parent, so methods never need to know how a child was made.
"""

from __future__ import annotations

import torch
from torch import nn

PEFT_PREFIXES = ("base_model.model.",)


def normalize_name(name: str) -> str:
    for prefix in PEFT_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name.replace(".base_layer.", ".")


def dense_weight(module: nn.Module) -> torch.Tensor | None:
    """The dense float weight ``module`` computes with, or None if it has no weight matrix/kernel."""
    # peft LoRA layer: base weight plus the (unmerged) low-rank delta of each active adapter.
    if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
        w = dense_weight(module.base_layer)
        if w is None:
            return None
        merged = getattr(module, "merged", False)
        if not merged:
            for adapter in getattr(module, "active_adapters", []):
                if adapter in module.lora_A:
                    w = w + module.get_delta_weight(adapter).detach().float().cpu()
        return w
    weight = getattr(module, "weight", None)
    if weight is None or not isinstance(weight, torch.Tensor) or weight.ndim < 2:
        return None
    cls = type(weight).__name__
    if cls == "Int8Params":  # bitsandbytes LLM.int8: after a forward pass the row scales move to module.state
        scb = weight.SCB if getattr(weight, "SCB", None) is not None else getattr(getattr(module, "state", None), "SCB", None)
        if scb is not None:
            return (weight.data.float() * scb.float().view(-1, 1) / 127.0).cpu()
    if cls == "Params4bit":  # bitsandbytes NF4 / FP4
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state).float().cpu()
    if hasattr(weight, "dequantize") and type(weight) is not nn.Parameter and cls not in ("Tensor", "Parameter"):
        return weight.dequantize().float().detach().cpu()  # torchao tensor subclasses
    return weight.detach().float().cpu()


def effective_named_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: dense weight}`` for every leaf layer with a >=2-D weight (conv kernels, linear matrices)."""
    out: dict[str, torch.Tensor] = {}
    for name, sub in module.named_modules():
        if name.endswith(("lora_A", "lora_B", "base_layer")) or ".lora_" in name or ".base_layer" in name:
            continue
        w = dense_weight(sub)
        if w is not None and (len(list(sub.children())) == 0 or hasattr(sub, "base_layer")):
            out[normalize_name(name) + ".weight"] = w
    return out
