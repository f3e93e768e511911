"""Function-preserving channel permutation inside timm ResNet BasicBlocks (a weight-space attack).

Inside a BasicBlock the hidden channels between ``conv1`` and ``conv2`` can be reordered freely:
permute conv1's output channels, bn1's parameters and running stats, and conv2's input channels with
the same seeded permutation and the block computes exactly the same function.
"""

from __future__ import annotations

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult


def basic_blocks(model: nn.Module) -> list[nn.Module]:
    """timm BasicBlocks whose conv1 -> bn1 -> act1 -> conv2 path can be rewritten channel-wise."""
    from timm.models.resnet import BasicBlock

    trunk = getattr(model, "trunk", model)
    out = []
    for m in trunk.modules():
        if not isinstance(m, BasicBlock):
            continue
        ok = (isinstance(m.conv1, nn.Conv2d) and isinstance(m.bn1, nn.BatchNorm2d) and m.bn1.affine
              and isinstance(m.conv2, nn.Conv2d) and m.conv2.groups == 1
              and isinstance(m.drop_block, nn.Identity) and isinstance(m.aa, nn.Identity))
        if ok:
            out.append(m)
    return out


def require_blocks(model: nn.Module) -> list[nn.Module]:
    blocks = basic_blocks(model)
    if not blocks:
        raise NotApplicable("no timm ResNet BasicBlock (conv1 -> bn1 -> act -> conv2) to rewrite in this model")
    return blocks


def param_change(before: dict[str, torch.Tensor], model: nn.Module) -> float:
    """Relative L2 change ||w' - w|| / ||w|| over all floating-point parameters."""
    num = den = 0.0
    for name, p in model.named_parameters():
        w = before[name]
        num += float((p.detach() - w).double().pow(2).sum())
        den += float(w.double().pow(2).sum())
    return (num / max(den, 1e-30)) ** 0.5


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


class Permute(Transform):
    name = "permute"
    cheap = False

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        require_blocks(model)

    @torch.no_grad()
    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        blocks = require_blocks(model)
        before = snapshot(model)
        gen = torch.Generator().manual_seed(int(ctx.seed))
        for b in blocks:
            n = b.conv1.out_channels
            perm = torch.randperm(n, generator=gen).to(b.conv1.weight.device)
            b.conv1.weight.copy_(b.conv1.weight[perm])
            if b.conv1.bias is not None:
                b.conv1.bias.copy_(b.conv1.bias[perm])
            for t in (b.bn1.weight, b.bn1.bias, b.bn1.running_mean, b.bn1.running_var):
                if t is not None:
                    t.copy_(t[perm])
            b.conv2.weight.copy_(b.conv2.weight[:, perm])
        info = {"blocks": len(blocks), "param_change": param_change(before, model)}
        return TransformResult(model, spec, info)
