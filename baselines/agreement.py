"""Output agreement: the fraction of held-out natural inputs on which suspect and owner give the same label.

The simplest black-box reference every method is compared to (QuRD, AAAI 2025 found it competitive).
"""

from __future__ import annotations

import torch

from fpbench.api import Fingerprint, Method, Subject, require


class Agreement(Method):
    name = "agreement"
    access = "black-box labels"
    version = "1"

    def validate(self) -> None:
        require(int(self.params.get("queries", 200)) >= 1, "queries", "must be >= 1")

    def fingerprint(self, owner: Subject) -> Fingerprint:
        x = self.ctx.data.split("probe").tensor()[: int(self.params.get("queries", 200))]
        with torch.no_grad():
            y = owner.model.eval()(x.to(owner.device)).argmax(1).cpu()
        return Fingerprint(tensors={"x": x, "y": y})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        y = suspect.labels(fp.tensors["x"].to(suspect.device)).cpu()
        return float((y == fp.tensors["y"]).float().mean())
