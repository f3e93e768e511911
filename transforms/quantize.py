"""Weight quantization: linear layers through bitsandbytes or torchao, convolutions through our own quantizer.

``backend`` chooses what quantizes the ``nn.Linear`` layers:

- ``bitsandbytes``: LLM.int8 (``Linear8bitLt``, 8 bits) or NF4/FP4 (``Linear4bit``, 4 bits). Their
  state dicts round-trip through safetensors, so the child is stored with its weights and
  ``ModelSpec.wrappers`` tells the loader to rebuild the bitsandbytes layers (``fpbench.wrappers``).
- ``torchao``: weight-only int8 (``Int8WeightOnlyConfig``) or int1..int7 (``IntxWeightOnlyConfig``,
  per output channel). torchao keeps the codes in tensor subclasses that safetensors cannot store, so
  a torchao child is kept ``cheap``: stored as its recipe and re-applied on load (quantization is
  deterministic and takes milliseconds).
- ``own``: every layer through our quantizer below.

Convolutions always go through our per-output-channel symmetric k-bit quantizer (fake-quant: weights
snapped to 2^k - 1 levels per channel and kept in float), because bitsandbytes and torchao only
replace ``nn.Linear``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformParams, TransformResult, require
from fpbench.models import is_conv1d

# Bit widths each library quantizes linear layers to (torchao: Int8WeightOnly, IntxWeightOnly int1..int7).
LIBRARY_BITS = {"bitsandbytes": (8, 4), "torchao": tuple(range(1, 9)), "own": tuple(range(2, 9))}


@torch.no_grad()
def quantize_per_channel_(weight: torch.Tensor, bits: int) -> None:
    qmax = 2 ** (bits - 1) - 1
    flat = weight.view(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
    flat.copy_((flat / scale).round().clamp(-qmax, qmax) * scale)


def _torchao_config(bits: int) -> Any:
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis

    if bits == 8:
        return Int8WeightOnlyConfig()
    # Int4WeightOnlyConfig has no CPU kernel; IntxWeightOnlyConfig does int1..int7 per output channel on CPU.
    return IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=PerAxis(0))


def _quantize_linears_torchao(model: nn.Module, names: list[str], bits: int) -> None:
    from torchao.quantization import quantize_

    chosen = set(names)
    quantize_(model, _torchao_config(bits), filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn in chosen)


@dataclass(frozen=True)
class QuantizeParams(TransformParams):
    bits: int  # weight bit width (2..8; a library backend takes the widths it supports for linears)
    backend: str = "own"  # what quantizes the linear layers: a key of LIBRARY_BITS
    quant_type: Literal["nf4", "fp4"] = "nf4"  # bitsandbytes' 4-bit format

    def __post_init__(self) -> None:
        super().__post_init__()
        require(2 <= self.bits <= 8, "bits", f"must be an integer in 2..8, got {self.bits!r}")
        require(self.backend in LIBRARY_BITS, "backend",
                f"must be one of {', '.join(LIBRARY_BITS)}, got {self.backend!r}")
        require(self.bits in LIBRARY_BITS[self.backend], "bits",
                f"backend {self.backend} quantizes linears to {LIBRARY_BITS[self.backend]} bits, not {self.bits}; "
                "choose another backend (torchao does 2..8, own does 2..8)")


class Quantize(Transform):
    Params = QuantizeParams
    p: QuantizeParams
    version = "2"  # v2: linears through bitsandbytes/torchao (backend); v1 was our quantizer everywhere
    modalities = ("vision", "vision-language", "language")  # works on any module with a trunk of linear layers

    @property
    def cheap(self) -> bool:
        # bitsandbytes layers round-trip through a state dict (stored); torchao tensor subclasses do not (recipe).
        return self.p.backend != "bitsandbytes"

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        if self.p.backend != "own" and any(is_conv1d(m) for m in model.modules()):
            raise NotApplicable(f"quantize: {self.p.backend} replaces nn.Linear layers, and this model computes with "
                                "transformers Conv1D layers (GPT-2's attention and MLP), which it would leave in "
                                "float; use backend own, which quantizes them too")
        if any(w["kind"] == "lora" for w in spec.wrappers):  # its adapters are Conv2d/Linear layers too
            raise NotApplicable("quantize: the parent keeps unmerged LoRA adapters; quantize a merged child "
                                "(peft_lora) instead of peft_lora_unmerged")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        from fpbench.wrappers import bnb_linear, replace_module

        bits, backend, quant_type = self.p.bits, self.p.backend, self.p.quant_type
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
        for conv in convs:
            quantize_per_channel_(conv.weight.data, bits)
        info: dict[str, Any] = {"bits": bits, "backend": backend, "conv_backend": "own", "quantized_convs": len(convs),
                                "quantized_linears": len(linears), "quantized_layers": len(convs) + len(linears)}
        if backend == "own":
            for name in linears:
                quantize_per_channel_(model.get_submodule(name).weight.data, bits)
            conv1d = [m for m in model.modules() if is_conv1d(m)]
            for m in conv1d:  # stored [in, out]: quantize per output channel on the transpose
                w = m.weight.data.T.contiguous()
                quantize_per_channel_(w, bits)
                m.weight.data.copy_(w.T)
            info["quantized_conv1d"] = len(conv1d)
            info["quantized_layers"] += len(conv1d)
            return TransformResult(model, spec, info)
        if backend == "torchao":
            _quantize_linears_torchao(model, linears, bits)
            info["linear_format"] = "int8_weight_only" if bits == 8 else f"intx_weight_only_int{bits}_per_axis"
            return TransformResult(model, spec, info)
        for name in linears:
            replace_module(model, name, bnb_linear(model.get_submodule(name), bits, quant_type, ctx.device))  # type: ignore[arg-type]
        info["linear_format"] = "llm_int8" if bits == 8 else quant_type
        wrapper = {"kind": "quantize", "backend": "bitsandbytes", "bits": bits, "quant_type": quant_type,
                   "modules": linears}
        child_spec = ModelSpec.from_dict({**spec.to_dict(), "wrappers": [*spec.wrappers, wrapper]})
        return TransformResult(model.to(ctx.device), child_spec, info)
