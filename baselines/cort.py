"""CoRt: correlation-based representation fingerprinting, as the seed paper describes it.

No published method under this name was found; this implements the seed paper's one-line description:
the correlation structure of a model's representations over a fixed probe set. Each model gives a
sample-by-sample Pearson correlation matrix of its penultimate features (n x n, so it is comparable across
feature widths); the score is the Pearson correlation of the two matrices' upper triangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpbench.api import Fingerprint, Method, MethodParams, Subject, require
from fpbench.ops import correlation_matrix


def sample_correlation(feat: torch.Tensor) -> torch.Tensor:
    """Upper triangle of the Pearson correlation between samples (rows centred over features)."""
    f = feat.reshape(feat.shape[0], -1).double()
    c = correlation_matrix(f - f.mean(1, keepdim=True))
    i, j = torch.triu_indices(len(c), len(c), offset=1)
    return c[i, j]


@dataclass(frozen=True)
class CoRtParams(MethodParams):
    queries: int = 100  # probe inputs (the correlation matrices are queries x queries)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 3, "queries", f"need at least 3 probe inputs, got {self.queries}")


class CoRt(Method):
    Params = CoRtParams
    p: CoRtParams
    access = "white-box features"
    version = "1"

    def fingerprint(self, owner: Subject) -> Fingerprint:
        x = self.ctx.data.split("probe").tensor()[: self.p.queries]
        with torch.no_grad():
            r = sample_correlation(owner.features(x.to(owner.device)).cpu())
        return Fingerprint(tensors={"x": x, "r": r.float()})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        with torch.no_grad():
            r = sample_correlation(suspect.features(fp.tensors["x"].to(suspect.device)).cpu())
        return float(torch.corrcoef(torch.stack([r, fp.tensors["r"].double()]))[0, 1])
