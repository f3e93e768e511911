"""IPGuard: fingerprinting the owner's classification boundary (Cao, Jia, Gong, AsiaCCS 2021).

(The seed paper cites it as "Z. Li et al., AAAI 2021"; the method is Cao, Jia and Gong's, published at ACM
AsiaCCS 2021.)

The fingerprint is a set of data points near the owner's classification boundary with the owner's labels on
them. Each point starts from uniform random noise (the paper's initialisation; ``init: probe`` starts from
held-out natural inputs instead) and gets a random target label ``i`` and a random other label ``j``; it is
optimised (Adam) on the paper's objective

    ReLU(g_j(x) - g_i(x) + k) + ReLU(max_{t != i, j} g_t(x) - g_j(x))

over the owner's logits ``g``: the owner labels the point ``i`` with a margin of about ``k`` over ``j``, and
``j`` is its runner-up, so the point lies near the i/j boundary (``k`` trades uniqueness for robustness).
A point stops moving once its loss reaches 0. Verification sends the points to the suspect and the score is
the fraction whose label matches the owner's (black-box labels).

Deviations: pixels are clamped to [0, 1] after each step (our models take images in [0, 1]); the points are
optimised as one batch with per-point early stopping (the same objective per point, faster on CPU); the
fixed threshold is ours (the paper reports matching-rate curves over thresholds, not one value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import ConfigError, Fingerprint, Method, MethodParams, NotApplicable, Subject, require


def random_label_pairs(n: int, num_classes: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random (target i, runner-up j) label pairs with i != j."""
    i = torch.randint(num_classes, (n,), generator=generator)
    j = (i + torch.randint(1, num_classes, (n,), generator=generator)) % num_classes
    return i, j


def boundary_loss(logits: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float) -> torch.Tensor:
    """IPGuard's per-point objective: label i with margin k over j, and j above every other label."""
    g_i = logits.gather(1, i[:, None])[:, 0]
    g_j = logits.gather(1, j[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(i, logits.shape[1]).bool() | F.one_hot(j, logits.shape[1]).bool(),
                                float("-inf"))
    g_t = others.max(1).values
    return F.relu(g_j - g_i + k) + F.relu(g_t - g_j)


def boundary_points(model: nn.Module, x0: torch.Tensor, i: torch.Tensor, j: torch.Tensor, *, k: float,
                    steps: int, lr: float) -> tuple[torch.Tensor, int]:
    """Optimise ``x0`` onto the i/j boundary of ``model``; returns the points and the steps run."""
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    active = torch.arange(x.shape[0], device=x.device)  # points whose loss is still > 0
    steps_run = 0
    for _ in range(steps):
        loss = boundary_loss(model(x[active]), i[active], j[active], k)
        keep = loss.detach() > 0
        if not keep.any():
            break
        (x.grad,) = torch.autograd.grad((loss * keep).sum(), x)  # only x: the owner's weights keep no grads
        done = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        done[active[keep]] = False
        frozen = x.detach()[done].clone()
        opt.step()
        with torch.no_grad():
            x[done] = frozen  # a point at loss 0 stays where it is (Adam's momentum would move it)
            x.clamp_(0, 1)
        active = active[keep]  # the forward pass only runs on points still moving
        steps_run += 1
    return x.detach(), steps_run


@dataclass(frozen=True)
class IPGuardParams(MethodParams):
    points: int = 100  # fingerprint data points (one query each)
    k: float = 10.0  # logit margin of the target label over the runner-up
    steps: int = 1000  # Adam steps at most (a point at loss 0 stops moving)
    lr: float = 0.01
    init: Literal["noise", "probe"] = "noise"  # start from uniform noise (the paper's) or held-out natural inputs

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.points >= 1, "points", f"must be >= 1, got {self.points}")
        require(self.k >= 0, "k", f"the logit margin must be >= 0, got {self.k}")
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")


class IPGuard(Method):
    Params = IPGuardParams
    p: IPGuardParams
    access = "black-box labels"
    version = "1"

    def check_applicable(self, owner: Subject, suspect: Subject) -> None:
        if suspect.spec.num_classes != owner.spec.num_classes:
            raise NotApplicable(f"{self.name} compares labels: the suspect has {suspect.spec.num_classes} classes, "
                                f"the owner {owner.spec.num_classes}")

    def _starts(self, owner: Subject, n: int, g: torch.Generator) -> torch.Tensor:
        if self.p.init == "probe":
            probe = self.ctx.data.split("probe")
            if len(probe) < n:
                raise ConfigError(f"invalid parameter 'points': {n} > the {len(probe)} probe inputs; lower points "
                                  "or use init: noise")
            return probe.tensor(torch.randperm(len(probe), generator=g)[:n])
        c, s = int(owner.spec.input["channels"]), int(owner.spec.input["size"])
        return torch.rand((n, c, s, s), generator=g)

    def fingerprint(self, owner: Subject) -> Fingerprint:
        p = self.p
        n, classes = p.points, owner.spec.num_classes
        if classes < 2:
            raise NotApplicable("ipguard needs an owner with at least 2 classes (a boundary to sit on)")
        g = torch.Generator().manual_seed(self.ctx.seed)
        x0 = self._starts(owner, n, g)
        i, j = random_label_pairs(n, classes, g)
        model = owner.model.eval()
        x, steps_run = boundary_points(model, x0.to(owner.device), i.to(owner.device), j.to(owner.device),
                                       k=p.k, steps=p.steps, lr=p.lr)
        with torch.no_grad():
            y = model(x).argmax(1).cpu()
        return Fingerprint(tensors={"x": x.cpu(), "y": y},
                           meta={"steps_run": steps_run, "on_target": float((y == i).float().mean()),
                                 "num_classes": classes})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        # Labels only (the method's access): the class counts were compared in check_applicable.
        y = suspect.labels(fp.tensors["x"].to(suspect.device)).cpu()
        return float((y == fp.tensors["y"]).float().mean())
