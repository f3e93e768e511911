"""Weight quantization: per-output-channel symmetric k-bit rounding of conv and linear weights.

This is the project's own quantizer (fake-quant: weights snapped to 2^k - 1 levels per channel and
kept in float), used for convolutions, which bitsandbytes and torchao do not replace.
"""

from __future__ import annotations

import torch
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require


@torch.no_grad()
def quantize_per_channel_(weight: torch.Tensor, bits: int) -> None:
    qmax = 2 ** (bits - 1) - 1
    flat = weight.view(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
    flat.copy_((flat / scale).round().clamp(-qmax, qmax) * scale)


class Quantize(Transform):
    name = "quantize"
    cheap = True

    def validate(self) -> None:
        bits = self.params.get("bits")
        require(isinstance(bits, int) and 2 <= bits <= 8, "bits", f"must be an integer in 2..8, got {bits!r}")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        bits = int(self.params["bits"])
        n = 0
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                quantize_per_channel_(m.weight.data, bits)
                n += 1
        return TransformResult(model, spec, {"bits": bits, "quantized_layers": n})
