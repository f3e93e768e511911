"""Representation CKA as REEF uses it (Zhang et al., ICLR 2025; reference code tmylla/REEF, ``src/compute_cka.py``).

Linear CKA (Kornblith et al. 2019, ``fpbench.ops.linear_cka``) between the owner's and the suspect's
representations of the same probe inputs. As in REEF (``compute_cka.py`` loads each model's activations with
``load_acts(..., center=True, scale=True)``): the representation is an intermediate layer, and every feature is
centred and divided by its standard deviation over the inputs before the CKA. REEF's default layer is 18 of a
32-layer LLM (0-indexed: the output of the 19th block); we take the layer at the same relative depth, ``depth =
19/32`` of each model's weight layers in execution order (``Suspect.activations``: conv outputs averaged over
space), so models of different depth are compared at the same relative depth.

``representation: penultimate`` with ``standardize: false`` (config ``cka_penultimate``) is our earlier version:
the penultimate features, centred only. Deviations from REEF: our layers are convolutions and linears of a CNN
(REEF reads a transformer block's hidden state at the last token; the CNN analogue of that token is the
spatial mean); a feature that is constant over the probe inputs (a dead channel) is dropped before the scaling
(REEF would divide by zero); the fixed threshold is ours (REEF reports the CKA itself). Measured effects:
``baselines/METHODS.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from fpbench.api import Fingerprint, Method, MethodParams, Suspect, require
from fpbench.ops import linear_cka

REEF_DEPTH = 19 / 32  # REEF's default layer 18 (0-indexed) of Llama-2-7B's 32 blocks


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Each feature centred and scaled to unit std over the inputs (REEF's ``load_acts``); constant ones dropped."""
    x = x.double()
    std = x.std(0)
    keep = std > 0
    return (x[:, keep] - x[:, keep].mean(0)) / std[keep]


def layer_at_depth(names: list[str], depth: float) -> str:
    """The name of the layer at relative ``depth`` of ``names`` (in execution order): index ceil(depth * L) - 1."""
    return names[min(max(math.ceil(depth * len(names)) - 1, 0), len(names) - 1)]


@dataclass(frozen=True)
class CKAParams(MethodParams):
    queries: int = 200  # probe inputs
    representation: Literal["intermediate", "penultimate"] = "intermediate"  # REEF's layer, or penultimate features
    depth: float = REEF_DEPTH  # intermediate: relative depth of the layer among the model's weight layers
    standardize: bool = True  # REEF: each feature centred and divided by its std; false: centred only

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 2, "queries", f"need at least 2 probe inputs, got {self.queries}")
        require(0 < self.depth <= 1, "depth", f"must be in (0, 1] (a fraction of the model's layers), got {self.depth}")


class CKA(Method):
    Params = CKAParams
    p: CKAParams
    access = "white-box features"
    version = "2"  # v2: REEF's intermediate layer and per-feature standardisation by default

    def _representation(self, model: Suspect, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        x = x.to(model.device)
        if self.p.representation == "penultimate":
            return model.features(x).cpu(), "penultimate"
        acts = model.activations(x)
        name = layer_at_depth(list(acts), self.p.depth)
        return acts[name].cpu(), name

    def _prepare(self, feat: torch.Tensor) -> torch.Tensor:
        return standardize(feat) if self.p.standardize else feat

    def fingerprint(self, owner: Suspect) -> Fingerprint:
        x = self.ctx.data.split("probe").tensor()[: self.p.queries]
        with torch.no_grad():
            feat, layer = self._representation(owner, x)
        return Fingerprint(tensors={"x": x, "feat": feat.float()}, meta={"layer": layer})

    def score(self, fp: Fingerprint, suspect: Suspect) -> float:
        with torch.no_grad():
            feat, _ = self._representation(suspect, fp.tensors["x"])
        return linear_cka(self._prepare(fp.tensors["feat"]), self._prepare(feat))
