"""SAC: sample correlation fingerprinting (Guan, Liang, He, NeurIPS 2022).

The fingerprint is a set of samples plus the owner's output-correlation matrix over them (pairwise cosine of
softmax outputs, ``fpbench.ops.correlation_matrix``). A suspect is queried on the same samples and the
distance is the mean absolute difference of the two matrices; we return ``1 - distance`` so higher = derived.

Two variants, as in the paper: ``variant: w`` (SAC-w) uses samples the owner misclassifies; ``variant: m``
(SAC-m, the paper's default for its broader robustness, config ``sac``) uses CutMix mixtures of natural inputs.
Deviation: where the probe split holds too few misclassified samples, SAC-w tops up with the owner's
lowest-margin samples (the paper uses test-set errors; a small, accurate owner may have too few).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fpbench.api import Fingerprint, Method, MethodParams, Subject, require
from fpbench.ops import correlation_matrix


def cutmix(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n CutMix images: a random box of one natural image pasted into another (Yun et al. 2019)."""
    h, w = x.shape[-2:]
    a = torch.randint(len(x), (n,), generator=generator)
    b = torch.randint(len(x), (n,), generator=generator)
    lam = torch.rand(n, generator=generator)
    out = x[a].clone()
    for i in range(n):
        ch, cw = int(h * (1 - lam[i]).sqrt()), int(w * (1 - lam[i]).sqrt())
        cy, cx = int(torch.randint(h, (1,), generator=generator)), int(torch.randint(w, (1,), generator=generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        out[i, :, y0:y1, x0:x1] = x[b[i], :, y0:y1, x0:x1]
    return out


@dataclass(frozen=True)
class SACParams(MethodParams):
    variant: Literal["m", "w"] = "m"  # m: CutMix mixtures (SAC-m); w: samples the owner misclassifies (SAC-w)
    queries: int = 50  # samples of the correlation matrix

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 2, "queries", f"need at least 2 samples for a correlation, got {self.queries}")


class SAC(Method):
    Params = SACParams
    p: SACParams
    access = "black-box probabilities"
    version = "1"

    def _samples(self, owner: Subject) -> torch.Tensor:
        n = self.p.queries
        probe = self.ctx.data.split("probe")
        x = probe.tensor()
        g = torch.Generator().manual_seed(self.ctx.seed)
        if self.p.variant == "m":
            return cutmix(x, n, g)
        with torch.no_grad():
            logits = owner.model.eval()(x.to(owner.device)).cpu()
        wrong = logits.argmax(1) != probe.labels
        top2 = logits.topk(2, dim=1).values
        margin = (top2[:, 0] - top2[:, 1]).masked_fill(wrong, float("-inf"))  # errors first, then least sure
        return x[margin.argsort()[:n]]

    def fingerprint(self, owner: Subject) -> Fingerprint:
        x = self._samples(owner)
        with torch.no_grad():
            corr = correlation_matrix(torch.softmax(owner.model.eval()(x.to(owner.device)), 1).cpu())
        return Fingerprint(tensors={"x": x, "corr": corr.float()}, meta={"variant": self.p.variant})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        corr = correlation_matrix(suspect.probs(fp.tensors["x"].to(suspect.device)).cpu())
        return 1.0 - float((corr.float() - fp.tensors["corr"]).abs().mean())
