"""CAE: Conferrable Adversarial Examples (Lukas, Zhang, Kerschbaum, ICLR 2021).

Name: the seed paper lists "CAE (Cosine Angular Error)", which names no published fingerprinting method; in the
literature CAE is the conferrable-adversarial-examples fingerprint, which we implement (see baselines/METHODS.md).

The defender builds an ensemble of surrogate models (the owner's architecture distilled from the owner's
softmax outputs on the owner's data: they behave like derived models) and reference models (trained
independently on the same data with its true labels). Starting from natural inputs the owner classifies
correctly, it optimises perturbations within an L-inf ball of ``eps`` with Adam on the paper's loss

    L = alpha * H(1, max_t Conf_t(x')) - beta * H(M(x0), M(x')) + gamma * H(M(x'), S(x'))

where ``Conf_t(x') = mean_S softmax(S(x'))_t * (1 - mean_R softmax(R(x'))_t)`` is the conferrability of target
class t (the paper's ensemble), the second term makes x' adversarial for the owner M and the third makes the
surrogates follow the owner on x'. The fingerprint keeps the examples with the highest conferrability
(``Transfer(S, x', t) * (1 - Transfer(R, x', t))`` on hard labels, ties by the soft score) whose target label
``t = M(x')`` differs from the owner's label on x0, and the target labels; the score is the suspect's rate of
the target label on them (the paper's CAEAcc, black-box labels).

Deviations (also in baselines/METHODS.md): a few small shadows trained inside ``fingerprint()`` (the paper uses
tens of surrogates and references of several architectures); no dropout inside the ensemble; the paper keeps
every example above a conferrability threshold, we keep the ``queries`` most conferrable ones (topped up with
the most conferrable non-adversarial ones when too few flip the owner); loss weights and eps are ours for
28x28-class grayscale tasks. The threshold is ours, not a paper constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import Fingerprint, Method, MethodParams, NotApplicable, Subject, require
from fpbench.shadows import distilled_shadow, freeze, independent_shadow, shadow_seeds


def mean_softmax(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    return torch.stack([m(x).softmax(1) for m in models]).mean(0)


def conferrability(surrogate_probs: torch.Tensor, reference_probs: torch.Tensor) -> torch.Tensor:
    """Per class: the surrogates' mean probability times one minus the references' (the paper's ensemble)."""
    return surrogate_probs * (1.0 - reference_probs)


def cae_loss(owner_logits: torch.Tensor, y0: torch.Tensor, surrogate_probs: torch.Tensor,
             reference_probs: torch.Tensor, *, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """The paper's loss (to minimise), averaged over the batch."""
    conf = conferrability(surrogate_probs, reference_probs).max(1).values
    conferrable = -torch.log(conf.clamp_min(1e-12))  # H(1, max_t Conf_t)
    owner_flip = F.cross_entropy(owner_logits, y0, reduction="none")  # H(M(x0), M(x')), maximised
    follow = -(owner_logits.softmax(1) * surrogate_probs.clamp_min(1e-12).log()).sum(1)  # H(M(x'), S(x'))
    return (alpha * conferrable - beta * owner_flip + gamma * follow).mean()


@dataclass(frozen=True)
class CAEParams(MethodParams):
    queries: int = 100  # fingerprint size: the most conferrable examples (one query each)
    candidates: int = 200  # natural train_a inputs the owner classifies correctly, optimised then ranked
    eps: float = 0.1  # L-inf radius of the perturbation, pixels in [0, 1]
    steps: int = 40  # Adam steps on the perturbation
    lr: float = 0.01
    alpha: float = 1.0  # loss weight of the conferrability term
    beta: float = 1.0  # ... of making x' adversarial for the owner
    gamma: float = 0.1  # ... of the surrogates following the owner on x'
    n_surrogates: int = 3  # distilled from the owner's softmax outputs on train_a
    n_references: int = 3  # trained from scratch on train_a with true labels, other seeds
    shadow_steps: int = 100  # training steps of each surrogate / reference

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 1, "queries", f"must be >= 1, got {self.queries}")
        require(self.candidates >= self.queries, "candidates", f"must be >= queries={self.queries}, got {self.candidates}")
        require(0 < self.eps <= 1, "eps", f"must be in (0, 1] (L-inf radius in [0, 1] pixels), got {self.eps}")
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.n_surrogates >= 1, "n_surrogates", "need at least one surrogate")
        require(self.n_references >= 1, "n_references", "need at least one reference model")
        require(self.shadow_steps >= 1, "shadow_steps", f"must be >= 1, got {self.shadow_steps}")
        for w in ("alpha", "beta", "gamma"):
            require(getattr(self, w) >= 0, w, f"must be >= 0, got {getattr(self, w)}")


class CAE(Method):
    Params = CAEParams
    p: CAEParams
    access = "black-box labels"
    version = "1"

    def check_applicable(self, owner: Subject, suspect: Subject) -> None:
        if suspect.spec.num_classes != owner.spec.num_classes:
            raise NotApplicable(
                f"{self.name} checks the target label: the suspect has {suspect.spec.num_classes} classes, the owner "
                f"{owner.spec.num_classes}")

    def _ensemble(self, owner: Subject) -> tuple[list[nn.Module], list[nn.Module]]:
        p, ctx = self.p, self.ctx
        data = ctx.data.split("train_a")
        common = {"steps": p.shadow_steps, "device": ctx.device, "cache_dir": ctx.workdir, "progress": ctx.progress}
        surrogates = [distilled_shadow(owner.model, owner.spec, data, seed=s, **common)
                      for s in shadow_seeds(ctx.seed, "cae-surrogate", p.n_surrogates)]
        references = [independent_shadow(owner.spec, data, seed=s, **common)
                      for s in shadow_seeds(ctx.seed, "cae-reference", p.n_references)]
        return [freeze(m) for m in surrogates], [freeze(m) for m in references]

    def _candidates(self, owner: nn.Module, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Natural train_a inputs the owner classifies correctly, and the owner's labels on them."""
        data = self.ctx.data.split("train_a")
        order = torch.randperm(len(data), generator=g)[: 4 * self.p.candidates]
        x = data.tensor(order, self.ctx.device)
        with torch.no_grad():
            y = owner(x).argmax(1)
        right = (y.cpu() == data.labels[order]).nonzero().flatten()[: self.p.candidates]
        return x[right], y[right]

    def _optimise(self, owner: nn.Module, x0: torch.Tensor, y0: torch.Tensor, surrogates: list[nn.Module],
                  references: list[nn.Module], g: torch.Generator) -> torch.Tensor:
        p = self.p
        eps = p.eps
        weights = {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma}
        delta = ((torch.rand(x0.shape, generator=g) * 2 - 1) * eps).to(x0.device).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=p.lr)
        for _ in range(p.steps):
            x = (x0 + delta).clamp(0, 1)
            loss = cae_loss(owner(x), y0, mean_softmax(surrogates, x), mean_softmax(references, x), **weights)
            (delta.grad,) = torch.autograd.grad(loss, delta)  # only the input: the owner's weights stay untouched
            opt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
        return (x0 + delta.detach()).clamp(0, 1)

    @torch.no_grad()
    def _select(self, x: torch.Tensor, y0: torch.Tensor, owner: nn.Module, surrogates: list[nn.Module],
                references: list[nn.Module]) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        t = owner(x).argmax(1)
        hard = (torch.stack([m(x).argmax(1) == t for m in surrogates]).float().mean(0)
                * (1 - torch.stack([m(x).argmax(1) == t for m in references]).float().mean(0)))
        soft = conferrability(mean_softmax(surrogates, x), mean_softmax(references, x)).gather(1, t[:, None])[:, 0]
        flipped = t != y0
        # Lexicographic rank (stable sorts, least significant key first): adversarial for the owner first, then
        # hard conferrability, then the soft score.
        order = torch.arange(len(x))
        for key in (soft.cpu(), hard.cpu(), flipped.float().cpu()):
            order = order[torch.sort(key[order], descending=True, stable=True).indices]
        keep = order[: self.p.queries]
        meta = {"adversarial": int(flipped.cpu()[keep].sum()), "mean_conferrability": float(hard.cpu()[keep].mean()),
                "candidates": int(len(x))}
        return keep, t, meta

    def fingerprint(self, owner: Subject) -> Fingerprint:
        g = torch.Generator().manual_seed(self.ctx.seed)
        surrogates, references = self._ensemble(owner)
        model = owner.model.eval()
        x0, y0 = self._candidates(model, g)
        x = self._optimise(model, x0, y0, surrogates, references, g)
        keep, t, meta = self._select(x, y0, model, surrogates, references)
        return Fingerprint(tensors={"x": x[keep].cpu(), "y": t[keep].cpu()}, meta=meta)

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        y = suspect.labels(fp.tensors["x"].to(suspect.device)).cpu()
        return float((y == fp.tensors["y"]).float().mean())
