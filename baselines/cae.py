"""CAE: Conferrable Adversarial Examples (Lukas, Zhang, Kerschbaum, ICLR 2021).

Name: the seed paper lists "CAE (Cosine Angular Error)", which names no published fingerprinting method; in the
literature CAE is the conferrable-adversarial-examples fingerprint, which we implement (see baselines/METHODS.md).

Reference: the paper's Sec. 4 (conferrability, Eq. 1-2; the Conferrable Ensemble Method, Eq. 3-5; the
fingerprint and CAEAcc, Sec. 5); the authors' code is not public. The defender builds an ensemble of surrogate
models (behaving like models derived from the owner) and reference models (the owner's architecture trained
independently on the same data with its true labels, with the zoo roots' recipe: "trained like real
independents"). Starting from natural inputs the owner classifies correctly, it optimises perturbations within
an L-inf ball of ``eps`` with Adam on the paper's loss

    L = alpha * H(1, max_t Conf_t(x')) - beta * H(M(x0), M(x')) + gamma * H(M(x'), S(x'))

where ``Conf_t(x') = mean_S softmax(S(x'))_t * (1 - mean_R softmax(R(x'))_t)`` is the ensemble's conferrability
of target class t, each member of the ensemble dropped with probability ``dropout`` at every step (the paper's
dropout over the ensemble), the second term makes x' adversarial for the owner M and the third makes the
surrogates follow the owner on x'. An example is kept only if it is adversarial for the owner (its target label
``t = M(x')`` differs from the owner's label on x0) and its conferrability on hard labels,
``Transfer(S, x', t) * (1 - Transfer(R, x', t))`` over all members (Eq. 2), is at least ``min_conferrability``;
rounds of fresh inputs repeat until ``queries`` examples are kept (the most conferrable first). The score is
the suspect's rate of the target label on them (the paper's CAEAcc, black-box labels).

Shadow leakage: the paper's surrogates are extracted (distilled) models, the grid's ``distill`` cells. By
default our surrogates are fine-tuned copies of the owner (``surrogates: finetune``; ``shadow_families()`` says
so, marking the ``finetune`` cells); ``surrogates: distill`` (config ``cae_distill``) restores the paper's.

Deviations (also in baselines/METHODS.md, with their measured effect): a few small shadows trained inside
``fingerprint()`` (the paper: tens of surrogates and references of several architectures); fine-tuned instead of
distilled surrogates by default (above); at most ``rounds`` rounds, so a fingerprint can hold fewer than
``queries`` examples; eps, the loss weights and the cut-off are ours for 28x28-class grayscale tasks. The
threshold is ours, not a paper constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import Fingerprint, FpbenchError, Method, MethodParams, Subject, require
from fpbench.params import require_fillable
from fpbench.shadows import distilled_shadow, freeze, independent_shadow, pirated_shadow, shadow_families, shadow_seeds


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


def dropped(models: list[nn.Module], rate: float, g: torch.Generator) -> list[nn.Module]:
    """The ensemble members kept this step: each dropped with probability ``rate``, at least one kept."""
    if rate <= 0:
        return models
    keep = (torch.rand(len(models), generator=g) >= rate).tolist()
    if not any(keep):
        keep[int(torch.randint(len(models), (1,), generator=g))] = True
    return [m for m, k in zip(models, keep, strict=True) if k]


@torch.no_grad()
def hard_conferrability(x: torch.Tensor, t: torch.Tensor, surrogates: list[nn.Module],
                        references: list[nn.Module]) -> torch.Tensor:
    """The paper's Eq. 2 on hard labels: Transfer(S, x, t) * (1 - Transfer(R, x, t)), per input ([N])."""
    transfer_s = torch.stack([m(x).argmax(1) == t for m in surrogates]).float().mean(0)
    transfer_r = torch.stack([m(x).argmax(1) == t for m in references]).float().mean(0)
    return transfer_s * (1 - transfer_r)


@dataclass(frozen=True)
class CAEParams(MethodParams):
    queries: int = 100  # fingerprint size: the most conferrable kept examples (one query each)
    candidates: int = 100  # natural train_a inputs the owner classifies correctly, optimised per round
    rounds: int = 4  # at most this many rounds of fresh candidates until `queries` examples are kept
    eps: float = 0.1  # L-inf radius of the perturbation, pixels in [0, 1]
    steps: int = 40  # Adam steps on the perturbation
    lr: float = 0.01
    alpha: float = 1.0  # loss weight of the conferrability term
    beta: float = 1.0  # ... of making x' adversarial for the owner
    gamma: float = 0.1  # ... of the surrogates following the owner on x'
    dropout: float = 0.3  # probability of dropping each ensemble member at each step (as both public re-implementations)
    min_conferrability: float = 0.85  # cut-off on the hard conferrability (Eq. 2) of a kept example
    # What surrogates are: `finetune` (copies of the owner fine-tuned on train_a; default: the grid's `distill`
    # family held out) or `distill` (the paper's: extracted from the owner's softmax outputs on train_a).
    surrogates: Literal["finetune", "distill"] = "finetune"
    n_surrogates: int = 3
    n_references: int = 3  # trained from scratch on train_a with true labels, other seeds
    finetune_steps: int = 50  # SGD steps (lr 0.01) of a fine-tuned surrogate
    shadow_steps: int = 500  # training steps of each reference (and distilled surrogate): the tiny zoo roots' recipe

    def __post_init__(self) -> None:
        super().__post_init__()
        require_fillable(self.queries, self.rounds, self.candidates)
        require(0 < self.eps <= 1, "eps", f"must be in (0, 1] (L-inf radius in [0, 1] pixels), got {self.eps}")
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(0 <= self.min_conferrability <= 1, "min_conferrability",
                f"must be in [0, 1] (a conferrability), got {self.min_conferrability}")
        require(self.n_surrogates >= 1, "n_surrogates", "need at least one surrogate")
        require(self.n_references >= 1, "n_references", "need at least one reference model")
        require(self.finetune_steps >= 1, "finetune_steps", f"must be >= 1, got {self.finetune_steps}")
        require(self.shadow_steps >= 1, "shadow_steps", f"must be >= 1, got {self.shadow_steps}")
        for w in ("alpha", "beta", "gamma"):
            require(getattr(self, w) >= 0, w, f"must be >= 0, got {getattr(self, w)}")


class CAE(Method):
    Params = CAEParams
    p: CAEParams
    access = "black-box labels"
    version = "2"  # 2: adversarial and above the cut-off only, rounds, dropout, 500-step references, fine-tuned surrogates

    def shadow_families(self) -> frozenset[str]:
        """The transform family the surrogates were made with (references imitate none)."""
        return shadow_families([self.p.surrogates])

    def ensemble(self, owner: Subject) -> tuple[list[nn.Module], list[nn.Module]]:
        """(surrogates, references), all frozen."""
        p, ctx = self.p, self.ctx
        data = ctx.data.split("train_a")
        common = {"device": ctx.device, "cache_dir": ctx.workdir, "progress": ctx.progress}
        seeds = shadow_seeds(ctx.seed, f"cae-surrogate-{p.surrogates}", p.n_surrogates)
        if p.surrogates == "distill":
            surrogates = [distilled_shadow(owner.model, owner.spec, data, seed=s, steps=p.shadow_steps, **common)
                          for s in seeds]
        else:
            surrogates = [pirated_shadow(owner.model, owner.spec, "finetune", seed=s, data=data,
                                         steps=p.finetune_steps, **common) for s in seeds]
        references = [independent_shadow(owner.spec, data, seed=s, steps=p.shadow_steps, **common)
                      for s in shadow_seeds(ctx.seed, "cae-reference", p.n_references)]
        return [freeze(m) for m in surrogates], [freeze(m) for m in references]

    def _optimise(self, owner: nn.Module, x0: torch.Tensor, y0: torch.Tensor, surrogates: list[nn.Module],
                  references: list[nn.Module], g: torch.Generator) -> torch.Tensor:
        p = self.p
        eps = p.eps
        weights = {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma}
        delta = ((torch.rand(x0.shape, generator=g) * 2 - 1) * eps).to(x0.device).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=p.lr)
        for _ in range(p.steps):
            x = (x0 + delta).clamp(0, 1)
            s_probs = mean_softmax(dropped(surrogates, p.dropout, g), x)
            r_probs = mean_softmax(dropped(references, p.dropout, g), x)
            loss = cae_loss(owner(x), y0, s_probs, r_probs, **weights)
            (delta.grad,) = torch.autograd.grad(loss, delta)  # only the input: the owner's weights stay untouched
            opt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
        return (x0 + delta.detach()).clamp(0, 1)

    def fingerprint(self, owner: Subject) -> Fingerprint:
        p, ctx = self.p, self.ctx
        g = torch.Generator().manual_seed(ctx.seed)
        surrogates, references = self.ensemble(owner)
        model = owner.model.eval()
        data = ctx.data.split("train_a")
        order = torch.randperm(len(data), generator=g)
        kept: list[tuple[torch.Tensor, ...]] = []
        per_round, start = [], 0
        for _ in range(p.rounds):
            idx = order[start: start + p.candidates]
            start += p.candidates
            if len(idx) == 0:
                break
            x0 = data.tensor(idx, ctx.device)
            with torch.no_grad():
                y0 = model(x0).argmax(1)
            right = (y0.cpu() == data.labels[idx]).to(x0.device)  # natural inputs the owner classifies correctly
            x0, y0 = x0[right], y0[right]
            if len(x0) == 0:
                per_round.append(0)
                continue
            x = self._optimise(model, x0, y0, surrogates, references, g)
            with torch.no_grad():
                t = model(x).argmax(1)
                soft = conferrability(mean_softmax(surrogates, x), mean_softmax(references, x)).gather(1, t[:, None])[:, 0]
            hard = hard_conferrability(x, t, surrogates, references)
            ok = (t != y0) & (hard >= p.min_conferrability)  # adversarial for the owner and conferrable
            kept.append((x[ok].cpu(), t[ok].cpu(), y0[ok].cpu(), hard[ok].cpu(), soft[ok].cpu()))
            per_round.append(int(ok.sum()))
            if sum(per_round) >= p.queries:
                break
        if not sum(per_round):
            raise FpbenchError(
                f"{self.name}: no example was adversarial for the owner with conferrability >= "
                f"{p.min_conferrability} in {len(per_round)} rounds of {p.candidates} candidates; raise 'rounds', "
                "'eps' or 'steps', or lower 'min_conferrability'")
        x, t, y0, hard, soft = (torch.cat(parts) for parts in zip(*kept, strict=True))
        # The most conferrable first (hard score, then soft; stable sorts, least significant key first).
        order = torch.arange(len(x))
        for key in (soft, hard):
            order = order[torch.sort(key[order], descending=True, stable=True).indices]
        keep = order[: p.queries]
        meta = {"kept_per_round": per_round, "queries": len(keep), "mean_conferrability": float(hard[keep].mean()),
                "shadow_families": sorted(self.shadow_families())}
        return Fingerprint(tensors={"x": x[keep], "y": t[keep], "y_natural": y0[keep]}, meta=meta)

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        y = suspect.labels(fp.tensors["x"].to(suspect.device)).cpu()
        return float((y == fp.tensors["y"]).float().mean())
