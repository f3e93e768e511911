"""Module rewrites a transform records in ``ModelSpec.wrappers``, re-applied before a state dict is loaded.

A stored child whose layers are peft LoRA layers or bitsandbytes quantized linears has a state dict
that only loads (``strict=True``) into a module with the same layers. ``build_module`` builds the
plain architecture and calls the wrapper named by each record's ``kind`` (see ``fpbench.models.WRAPPERS``):

- ``{"kind": "lora", "config": {...LoraConfig fields...}}``: ``rewrap_lora`` injects the same peft
  LoRA layers (unmerged) into the trunk.
- ``{"kind": "quantize", "backend": "bitsandbytes", "modules": [...], "bits": 8|4, "quant_type": ...}``:
  ``rewrap_quantize`` swaps those ``nn.Linear`` for empty bitsandbytes layers that accept the stored
  quantized tensors.

The functions that make these layers live here too, so a transform and the loader build them alike.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

LORA_ADAPTER = "default"
# LLM.int8 logs a warning on every forward of float32 inputs (it casts them to float16): expected, not news
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


# ------------------------------------------------------------------ LoRA (peft)
def lora_peft_model(trunk: nn.Module, config: dict[str, Any]) -> Any:
    """A peft ``PeftModel`` whose LoRA layers are injected into ``trunk`` in place (``LoraConfig(**config)``).

    Models keep ``get_base_model()`` (the timm model itself, not the PeftModel wrapper) as their trunk: it
    keeps ``forward_features``/``forward_head`` and the parent's layer names (plus ``.base_layer``,
    ``.lora_A``, ``.lora_B``), which ``fpbench.weights`` undoes.
    """
    from peft import LoraConfig, get_peft_model

    return get_peft_model(trunk, LoraConfig(**config), adapter_name=LORA_ADAPTER)


def rewrap_lora(model: nn.Module, wrapper: dict[str, Any]) -> nn.Module:
    model.net = lora_peft_model(model.net, wrapper["config"]).get_base_model()  # type: ignore[assignment]
    for p in model.parameters():  # a loaded model trains like any other (peft froze the base weights)
        p.requires_grad_(True)
    return model


# ------------------------------------------------------------------ bitsandbytes
def bnb_linear(linear: nn.Linear, bits: int, quant_type: str = "nf4", device: torch.device | str = "cpu") -> nn.Module:
    """A bitsandbytes layer computing ``linear`` with quantized weights: LLM.int8 (8) or NF4/FP4 (4).

    Quantization happens when the weight moves to ``device`` (bitsandbytes quantizes in ``.to``), on
    CPU or CUDA alike.
    """
    import bitsandbytes as bnb

    has_bias = linear.bias is not None
    weight = linear.weight.detach().float().cpu().clone()
    if bits == 8:
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                    has_fp16_weights=False, threshold=6.0)
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    elif bits == 4:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                  compute_dtype=torch.float32, quant_type=quant_type)
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=quant_type)
        # bitsandbytes' AVX512-bf16 CPU path repacks the weight in place on the first eval forward: it needs
        # out_features % 32 == 0 and leaves codes that dequantize_4bit (fpbench.weights) cannot read. The
        # generic kernel computes the same function.
        layer.support_avx512bf16_for_cpu = False
    else:
        raise ValueError(f"bitsandbytes quantizes linears to 8 or 4 bits, not {bits}")
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.detach().float().cpu().clone(), requires_grad=False)  # type: ignore[union-attr]
    return layer.to(device)


def _load_prequantized_4bit(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook of a Linear4bit: rebuild its Params4bit from the stored packed codes and
    quant-state tensors (``weight.absmax``, ``weight.quant_map``, ...), which a plain ``load_state_dict``
    does not accept; then the packed ``weight`` loads as usual."""
    import bitsandbytes as bnb

    stats_prefix = prefix + "weight."
    stats = {k[len(stats_prefix):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(stats_prefix)}
    if not stats:
        return
    data = state_dict[prefix + "weight"]
    device = module.weight.device
    module.weight = bnb.nn.Params4bit.from_prequantized(data=data, quantized_stats=stats, requires_grad=False,
                                                        device=device, module=module)


def _empty_bnb_linear(linear: nn.Linear, bits: int, quant_type: str) -> nn.Module:
    """A bitsandbytes layer of ``linear``'s shape, ready to receive a stored quantized state dict."""
    layer = bnb_linear(linear, bits, quant_type, device="cpu")
    if bits == 4:
        layer._register_load_state_dict_pre_hook(_load_prequantized_4bit, with_module=True)
    return layer


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def rewrap_quantize(model: nn.Module, wrapper: dict[str, Any]) -> nn.Module:
    backend = wrapper.get("backend")
    if backend != "bitsandbytes":
        raise ValueError(f"quantize wrapper: only bitsandbytes layers are stored with their weights, not {backend!r}")
    bits, quant_type = int(wrapper["bits"]), str(wrapper.get("quant_type", "nf4"))
    for name in wrapper["modules"]:
        linear = model.get_submodule(name)
        replace_module(model, name, _empty_bnb_linear(linear, bits, quant_type))  # type: ignore[arg-type]
    return model
