"""Representation CKA (Kornblith et al. 2019, as used by REEF, Zhang et al. 2024).

Linear CKA between the owner's and the suspect's penultimate features on a fixed probe set
(``fpbench.ops.linear_cka``; it compares representations of different widths).
"""

from __future__ import annotations

import torch

from fpbench.api import Fingerprint, Method, Subject, require
from fpbench.ops import linear_cka


class CKA(Method):
    name = "cka"
    access = "white-box features"
    version = "1"

    def validate(self) -> None:
        require(int(self.params.get("queries", 200)) >= 2, "queries", "need at least 2 probe inputs")

    def fingerprint(self, owner: Subject) -> Fingerprint:
        x = self.ctx.data.split("probe").tensor()[: int(self.params.get("queries", 200))]
        return Fingerprint(tensors={"x": x, "feat": owner.features(x.to(owner.device)).cpu()})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        with torch.no_grad():
            feat = suspect.features(fp.tensors["x"].to(suspect.device)).cpu()
        return linear_cka(fp.tensors["feat"], feat)
