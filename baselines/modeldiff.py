"""ModelDiff (Li et al., ISSTA 2021): decision-distance vectors (DDVs) over input pairs.

Each pair is a natural probe input and its adversarial version crafted on the owner (PGD,
``fpbench.ops.pgd_attack``). A model's DDV holds, per pair, the cosine distance of its outputs on the two
inputs; the score is the cosine similarity of owner's and suspect's DDVs. Deviation: the paper searches the
perturbations with a genetic-style optimisation that maximises DDV diversity; we use plain PGD on the owner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fpbench.api import Fingerprint, Method, MethodParams, Subject, require
from fpbench.ops import pgd_attack


def ddv(out_a: torch.Tensor, out_b: torch.Tensor) -> torch.Tensor:
    """Per-pair cosine distance of two output batches, as a unit vector."""
    d = 1.0 - F.cosine_similarity(out_a.double(), out_b.double(), dim=1)
    return F.normalize(d, dim=0)


@dataclass(frozen=True)
class ModelDiffParams(MethodParams):
    pairs: int = 50  # (natural, adversarial) input pairs: a verification sends 2 * pairs inputs
    eps: float = 0.03  # L-inf radius of the PGD perturbation, pixels in [0, 1]
    steps: int = 10  # PGD steps (step size eps / 4)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.pairs >= 2, "pairs", f"need at least 2 input pairs, got {self.pairs}")
        require(0 < self.eps <= 1, "eps", f"must be in (0, 1], got {self.eps}")
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


class ModelDiff(Method):
    Params = ModelDiffParams
    p: ModelDiffParams
    access = "black-box probabilities"
    version = "1"

    def fingerprint(self, owner: Subject) -> Fingerprint:
        probe = self.ctx.data.split("probe")
        x = probe.tensor()[: self.p.pairs].to(owner.device)
        model = owner.model.eval()
        g = torch.Generator().manual_seed(self.ctx.seed)
        eps = self.p.eps
        with torch.no_grad():
            y = model(x).argmax(1)
        x_adv = pgd_attack(model, x, y, eps=eps, step_size=eps / 4, steps=self.p.steps, generator=g)
        with torch.no_grad():
            v = ddv(torch.softmax(model(x), 1), torch.softmax(model(x_adv), 1))
        return Fingerprint(tensors={"x": x.cpu(), "x_adv": x_adv.cpu(), "ddv": v.float()})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        pa = suspect.probs(fp.tensors["x"].to(suspect.device)).cpu()
        pb = suspect.probs(fp.tensors["x_adv"].to(suspect.device)).cpu()
        return float(F.cosine_similarity(ddv(pa, pb), fp.tensors["ddv"].double(), dim=0))
