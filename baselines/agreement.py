"""Output agreement: the fraction of held-out natural inputs on which suspect and owner give the same label.

The simplest black-box reference every method is compared to (QuRD, AAAI 2025 found it competitive).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpbench.api import Fingerprint, Method, MethodParams, Subject, require


@dataclass(frozen=True)
class AgreementParams(MethodParams):
    queries: int = 200  # held-out natural (probe) inputs

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 1, "queries", f"must be >= 1, got {self.queries}")


class Agreement(Method):
    Params = AgreementParams
    p: AgreementParams
    access = "black-box labels"
    version = "1"

    def fingerprint(self, owner: Subject) -> Fingerprint:
        x = self.ctx.data.split("probe").tensor()[: self.p.queries]
        with torch.no_grad():
            y = owner.model.eval()(x.to(owner.device)).argmax(1).cpu()
        return Fingerprint(tensors={"x": x, "y": y})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        y = suspect.labels(fp.tensors["x"].to(suspect.device)).cpu()
        return float((y == fp.tensors["y"]).float().mean())
