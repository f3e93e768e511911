"""Fingerprint vectors (Xu et al., "FP-VEC", arXiv 2409.08846): tau = theta_fp - theta_base, added as theta + lambda*tau.

A vector covers every floating-point tensor of the model's state, aligned by name: the parameters and the
float buffers (BatchNorm running statistics), so that ``base + tau`` is ``theta_fp`` whatever the injection
touched (an injection that moved BatchNorm statistics and a parameters-only vector gave FSR 0.44 where
theta_fp had 1.0 on the ci base; the vision track now injects with frozen statistics, so their part of tau is
zero). Integer buffers (BatchNorm's batch counter) are the target's own. The vector is kept
in float64 so that ``base + tau`` reproduces ``theta_fp`` bit for bit (the difference of two float32 numbers
is exact in float64, and so is adding it back before rounding to float32).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fpbench.api import FpbenchError


class StructureMismatch(FpbenchError, ValueError):
    """Two models (or a model and a fingerprint vector) do not share the same parameter names and shapes."""


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The floating-point tensors of ``model``'s state by name (parameters and float buffers, detached)."""
    return {name: t for name, t in model.state_dict().items() if t.is_floating_point()}


def check_same_structure(reference: Mapping[str, torch.Size | tuple[int, ...]],
                         candidate: Mapping[str, torch.Size | tuple[int, ...]], *, what: str, against: str) -> None:
    """Raise StructureMismatch naming the first tensor whose name or shape differs between the two maps."""
    hint = "a fingerprint vector transfers only between models of the base model's structure (same names, same shapes)"
    for name, shape in reference.items():
        if name not in candidate:
            raise StructureMismatch(f"{what} does not fit {against}: tensor '{name}' is missing from {against}; {hint}")
        if tuple(candidate[name]) != tuple(shape):
            raise StructureMismatch(f"{what} does not fit {against}: tensor '{name}' has shape {list(candidate[name])} "
                                    f"in {against} but {list(shape)} in {what}; {hint}")
    for name in candidate:
        if name not in reference:
            raise StructureMismatch(f"{what} does not fit {against}: {against} has tensor '{name}' that {what} lacks; {hint}")


def _shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in tensors.items()}


@dataclass
class FingerprintVector:
    """``tensors[name] = theta_fp[name] - theta_base[name]`` (float64) for every floating-point state tensor."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def between(cls, fingerprinted: nn.Module, base: nn.Module, meta: dict[str, Any] | None = None) -> FingerprintVector:
        fp, bs = state_tensors(fingerprinted), state_tensors(base)
        check_same_structure(_shapes(bs), _shapes(fp), what="the base model", against="the fingerprinted model")
        tensors = {k: fp[k].detach().cpu().double() - bs[k].detach().cpu().double() for k in bs}
        return cls(tensors, dict(meta or {}))

    def check(self, model: nn.Module, name: str = "the model") -> None:
        check_same_structure(_shapes(self.tensors), _shapes(state_tensors(model)),
                             what="the fingerprint vector", against=name)

    def apply(self, model: nn.Module, lam: float = 1.0, name: str = "the model") -> nn.Module:
        """A copy of ``model`` with ``lam * tau`` added to its parameters (no training); ``model`` is left as is."""
        self.check(model, name)
        out = copy.deepcopy(model)
        state = out.state_dict()
        for key, t in self.tensors.items():
            state[key] = (state[key].double() + float(lam) * t.to(state[key].device)).to(state[key].dtype)
        out.load_state_dict(state)
        return out

    def norm(self) -> float:
        return float(torch.sqrt(sum((t * t).sum() for t in self.tensors.values())))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(path),
                  metadata={k: str(v) for k, v in self.meta.items()})

    @classmethod
    def load(cls, path: Path) -> FingerprintVector:
        return cls(load_file(str(path)))


def weight_average(a: nn.Module, b: nn.Module, alpha: float = 0.5) -> nn.Module:
    """Model merging by weight averaging: ``alpha * a + (1 - alpha) * b`` over every floating tensor of the state.

    Integer buffers (e.g. BatchNorm's batch counter) are kept from ``a``. Both models must share one structure.
    """
    sa, sb = a.state_dict(), b.state_dict()
    check_same_structure(_shapes(sa), _shapes(sb), what="the first model", against="the model merged into it")
    merged = {k: (alpha * v + (1 - alpha) * sb[k]) if v.is_floating_point() else v for k, v in sa.items()}
    out = copy.deepcopy(a)
    out.load_state_dict(merged)
    return out
