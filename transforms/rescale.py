"""Function-preserving positive rescaling inside timm ResNet BasicBlocks (a weight-space attack).

ReLU is positively homogeneous, so scaling bn1's weight and bias of hidden channel c by s_c > 0 and
conv2's input channel c by 1 / s_c leaves each block's output unchanged (in eval mode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult, require
from transforms.permute import param_change, require_blocks, snapshot


class Rescale(Transform):
    name = "rescale"
    cheap = False

    def validate(self) -> None:
        lo, hi = float(self.params.get("low", 0.5)), float(self.params.get("high", 2.0))
        require(0.0 < lo <= hi, "low/high", f"scales need 0 < low <= high, got low={lo}, high={hi}")

    def _blocks(self, model: nn.Module) -> list[Any]:
        blocks = require_blocks(model)
        bad = [b for b in blocks if not isinstance(b.act1, nn.ReLU)]
        if bad:
            raise NotApplicable(f"{len(bad)} BasicBlock(s) use {type(bad[0].act1).__name__}, not ReLU; "
                                "positive rescaling is only function-preserving through ReLU")
        return blocks

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        self._blocks(model)

    @torch.no_grad()
    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        blocks = self._blocks(model)
        lo, hi = float(self.params.get("low", 0.5)), float(self.params.get("high", 2.0))
        before = snapshot(model)
        gen = torch.Generator().manual_seed(int(ctx.seed))
        for b in blocks:
            n = b.conv1.out_channels
            # log-uniform in [lo, hi] so up- and down-scaling are equally likely
            u = torch.rand(n, generator=gen, dtype=torch.float64)
            s = torch.exp(torch.log(torch.tensor(lo, dtype=torch.float64)) * (1 - u)
                          + torch.log(torch.tensor(hi, dtype=torch.float64)) * u)
            s = s.to(device=b.bn1.weight.device, dtype=b.bn1.weight.dtype)
            b.bn1.weight.mul_(s)
            b.bn1.bias.mul_(s)
            b.conv2.weight.div_(s.view(1, -1, 1, 1))
        info = {"blocks": len(blocks), "param_change": param_change(before, model)}
        return TransformResult(model, spec, info)
