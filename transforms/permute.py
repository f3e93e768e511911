"""Function-preserving channel permutation inside timm ResNet BasicBlocks and EfficientNet blocks.

Inside a BasicBlock the hidden channels between ``conv1`` and ``conv2`` can be reordered freely:
permute conv1's output channels, bn1's parameters and running stats, and conv2's input channels with
the same seeded permutation and the block computes exactly the same function. EfficientNet
InvertedResidual/EdgeResidual blocks get the same treatment on their expanded channels (incl. SE).
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


def effnet_blocks(model: nn.Module) -> list[nn.Module]:
    """timm EfficientNet InvertedResidual / EdgeResidual blocks whose expanded channels can be permuted."""
    from timm.models._efficientnet_blocks import EdgeResidual, InvertedResidual, SqueezeExcite

    trunk = getattr(model, "trunk", model)
    out = []
    for m in trunk.modules():
        if isinstance(m, InvertedResidual):
            ok = (getattr(m, "conv_s2d", None) is None and isinstance(m.conv_pw, nn.Conv2d) and m.conv_pw.groups == 1
                  and m.conv_dw.groups == m.conv_dw.in_channels == m.conv_dw.out_channels)
        elif isinstance(m, EdgeResidual):
            ok = isinstance(m.conv_exp, nn.Conv2d) and m.conv_exp.groups == 1
        else:
            continue
        ok = ok and isinstance(m.aa, nn.Identity) and isinstance(m.se, (nn.Identity, SqueezeExcite))
        ok = ok and m.conv_pwl.groups == 1
        if ok:
            out.append(m)
    return out


def _permute_bn(bn: nn.Module, perm: torch.Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        if t is not None:
            t.copy_(t[perm])


def _rows_out(conv: nn.Module, perm: torch.Tensor) -> None:
    conv.weight.copy_(conv.weight[perm])
    if conv.bias is not None:
        conv.bias.copy_(conv.bias[perm])


def hidden_width(b: nn.Module) -> int:
    """The number of hidden channels of a block (those :func:`permute_hidden` reorders)."""
    if hasattr(b, "conv1"):
        return b.conv1.out_channels
    return (b.conv_pw if hasattr(b, "conv_pw") else b.conv_exp).out_channels


@torch.no_grad()
def permute_hidden(b: nn.Module, perm: torch.Tensor) -> None:
    """Reorder the hidden channels of a BasicBlock (conv1 out, bn1, conv2 in) or an EfficientNet block
    (expansion conv out, its BN, depthwise conv + BN, SE, conv_pwl in): the block's function is unchanged."""
    perm = perm.to(next(b.parameters()).device)
    if hasattr(b, "conv1"):
        _rows_out(b.conv1, perm)
        _permute_bn(b.bn1, perm)
        b.conv2.weight.copy_(b.conv2.weight[:, perm])
        return
    _rows_out(b.conv_pw if hasattr(b, "conv_pw") else b.conv_exp, perm)
    _permute_bn(b.bn1, perm)
    if hasattr(b, "conv_dw"):
        _rows_out(b.conv_dw, perm)
        _permute_bn(b.bn2, perm)
    if not isinstance(b.se, nn.Identity):  # SE pools per channel, then gates per channel
        b.se.conv_reduce.weight.copy_(b.se.conv_reduce.weight[:, perm])
        _rows_out(b.se.conv_expand, perm)
    b.conv_pwl.weight.copy_(b.conv_pwl.weight[:, perm])


def hidden_features(b: nn.Module) -> torch.Tensor:
    """One row per hidden channel: every weight that channel owns, in and out (for weight matching)."""
    if hasattr(b, "conv1"):
        parts = [b.conv1.weight.flatten(1), b.bn1.weight[:, None], b.bn1.bias[:, None],
                 b.conv2.weight.transpose(0, 1).flatten(1)]
    else:
        first = b.conv_pw if hasattr(b, "conv_pw") else b.conv_exp
        parts = [first.weight.flatten(1), b.bn1.weight[:, None], b.bn1.bias[:, None],
                 b.conv_pwl.weight.transpose(0, 1).flatten(1)]
        if hasattr(b, "conv_dw"):
            parts.append(b.conv_dw.weight.flatten(1))
    return torch.cat([t.detach().float() for t in parts], dim=1)


def permutable_blocks(model: nn.Module) -> list[nn.Module]:
    """Every block whose hidden channels :func:`permute_hidden` can reorder, in module order."""
    return basic_blocks(model) + effnet_blocks(model)


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
    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        if not basic_blocks(model) and not effnet_blocks(model):
            raise NotApplicable("no timm ResNet BasicBlock or EfficientNet InvertedResidual/EdgeResidual to rewrite")

    @torch.no_grad()
    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        self.check(spec, model)
        blocks = permutable_blocks(model)
        before = snapshot(model)
        gen = torch.Generator().manual_seed(int(ctx.seed))
        for b in blocks:
            permute_hidden(b, torch.randperm(hidden_width(b), generator=gen))
        info = {"blocks": len(blocks), "param_change": param_change(before, model)}
        return TransformResult(model, spec, info)
