"""PDF, the parameter-distribution fingerprint of LeaFBench (``fingerprint/pdf/parameter_distribution.py``): per
decoder layer the standard deviation of each attention matrix (q, k, v, o), each of the four sequences z-scored
over depth; the score is (mean Pearson correlation of the four sequences + 1) / 2. Models of different depth:
the shorter sequence is linearly interpolated to the longer one's length, as LeaFBench does.

No deviation from LeaFBench's computation; the fixed threshold is ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fpbench.api import Fingerprint, Method

PARTS = ("q", "k", "v", "o")


def layer_stds(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """[4, L]: the std of each attention matrix per layer, z-scored over the layers."""
    layers = sorted({int(k.split(".")[1]) for k in weights if k.startswith("layers.")})
    s = torch.tensor([[float(weights[f"layers.{i}.attn.{p}"].double().std()) for i in layers] for p in PARTS],
                     dtype=torch.float64)
    return (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True).clamp_min(1e-12)


def _resample(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.shape[1] == n else F.interpolate(x[None], size=n, mode="linear", align_corners=True)[0]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 0.0


class LLMPdf(Method):
    access = "white-box weights"
    modality = "language"
    version = "1"

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001 - an LMSubject
        return Fingerprint(tensors={"stds": layer_stds(owner.named_weights()).float()})

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        mine, theirs = fp.tensors["stds"].double(), layer_stds(suspect.named_weights()).double()
        n = max(mine.shape[1], theirs.shape[1])
        mine, theirs = _resample(mine, n), _resample(theirs, n)
        return (sum(pearson(mine[i], theirs[i]) for i in range(len(PARTS))) / len(PARTS) + 1) / 2
