"""ModelDiff (Li et al., ISSTA 2021): decision-distance vectors (DDVs) over input pairs.

Each pair is a natural probe input and its adversarial version crafted on the owner (PGD,
``fpbench.ops.pgd_attack``). A model's DDV holds, per pair, the cosine distance of its outputs on the two
inputs; the score is the cosine similarity of owner's and suspect's DDVs. Deviation: the paper searches the
perturbations with a genetic-style optimisation that maximises DDV diversity; we use plain PGD on the owner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fpbench.api import Fingerprint, Method, Subject, require
from fpbench.ops import pgd_attack


def ddv(out_a: torch.Tensor, out_b: torch.Tensor) -> torch.Tensor:
    """Per-pair cosine distance of two output batches, as a unit vector."""
    d = 1.0 - F.cosine_similarity(out_a.double(), out_b.double(), dim=1)
    return F.normalize(d, dim=0)


class ModelDiff(Method):
    name = "modeldiff"
    access = "black-box probabilities"
    version = "1"

    def validate(self) -> None:
        require(int(self.params.get("pairs", 50)) >= 2, "pairs", "need at least 2 input pairs")
        require(0 < float(self.params.get("eps", 0.03)) <= 1, "eps", "must be in (0, 1]")

    def fingerprint(self, owner: Subject) -> Fingerprint:
        probe = self.ctx.data.split("probe")
        n = int(self.params.get("pairs", 50))
        x = probe.tensor()[:n].to(owner.device)
        model = owner.model.eval()
        g = torch.Generator().manual_seed(self.ctx.seed)
        eps = float(self.params.get("eps", 0.03))
        with torch.no_grad():
            y = model(x).argmax(1)
        x_adv = pgd_attack(model, x, y, eps=eps, step_size=eps / 4, steps=int(self.params.get("steps", 10)),
                           generator=g)
        with torch.no_grad():
            v = ddv(torch.softmax(model(x), 1), torch.softmax(model(x_adv), 1))
        return Fingerprint(tensors={"x": x.cpu(), "x_adv": x_adv.cpu(), "ddv": v.float()})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        pa = suspect.probs(fp.tensors["x"].to(suspect.device)).cpu()
        pb = suspect.probs(fp.tensors["x_adv"].to(suspect.device)).cpu()
        return float(F.cosine_similarity(ddv(pa, pb), fp.tensors["ddv"].double(), dim=0))
