"""Function-preserving positive rescaling inside timm ResNet BasicBlocks (a weight-space attack).

ReLU is positively homogeneous, so scaling bn1's weight and bias of hidden channel c by s_c > 0 and
conv2's input channel c by 1 / s_c leaves each block's output unchanged (in eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformParams, TransformResult, require
from transforms.permute import param_change, require_blocks, snapshot


@dataclass(frozen=True)
class RescaleParams(TransformParams):
    low: float = 0.5  # per-channel scales are drawn log-uniformly in [low, high]
    high: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.low > 0, "low", f"scales must be > 0 (ReLU is only positively homogeneous), got {self.low}")
        require(self.high >= self.low, "high", f"must be >= low={self.low}, got {self.high}")


class Rescale(Transform):
    Params = RescaleParams
    p: RescaleParams

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
        lo, hi = self.p.low, self.p.high
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
