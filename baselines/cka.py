"""Representation CKA (Kornblith et al. 2019, as used by REEF, Zhang et al. 2024).

Linear CKA between the owner's and the suspect's penultimate features on a fixed probe set
(``fpbench.ops.linear_cka``; it compares representations of different widths).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpbench.api import Fingerprint, Method, MethodParams, Subject, require
from fpbench.ops import linear_cka


@dataclass(frozen=True)
class CKAParams(MethodParams):
    queries: int = 200  # probe inputs

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 2, "queries", f"need at least 2 probe inputs, got {self.queries}")


class CKA(Method):
    Params = CKAParams
    p: CKAParams
    access = "white-box features"
    version = "1"

    def fingerprint(self, owner: Subject) -> Fingerprint:
        x = self.ctx.data.split("probe").tensor()[: self.p.queries]
        return Fingerprint(tensors={"x": x, "feat": owner.features(x.to(owner.device)).cpu()})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        with torch.no_grad():
            feat = suspect.features(fp.tensors["x"].to(suspect.device)).cpu()
        return linear_cka(fp.tensors["feat"], feat)
