"""MetaFinger: fingerprinting DNNs with meta-training (Yang, Wang, Wang, IJCAI 2022).

The owner's query images are optimised against a pool of shadow models so that "pirated" shadows (copies of
the owner after fine-tuning, magnitude pruning or weight noise: the paper's model augmentation) answer them
like the owner and independently trained shadows (the owner's architecture trained from scratch on the
owner's own data, other seeds) do not. As in the authors' code: the queries start from natural training
images, Adam updates the pixels; for each pirated anchor the loss is
``mean KL(anchor || pirated) - alpha * mean KL(anchor || independent)`` over a few sampled shadows, with a
random input transformation (noise, blur, shift) per step for robustness; the queries are then screened:
those all pirated shadows label like the owner and no independent does are kept.
Fingerprint = the query images + the owner's labels on them; score = the suspect's label agreement (black-box
labels).

Deviations (also in baselines/METHODS.md): a handful of cheap shadows trained inside ``fingerprint()``
(the paper trains dozens of full models and splits them into train/validation/test pools); screening uses the
training pool plus freshly augmented copies, and when fewer than ``queries`` candidates pass the screen the
rest are the best-ranked by (pirated agreement - independent agreement); adversarially trained pirates are
left out (too costly on CPU). The threshold is ours: the paper reports query accuracy and AUC, not a constant.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import Fingerprint, Method, MethodParams, NotApplicable, Subject, require
from fpbench.shadows import PIRATE_KINDS, freeze, independent_shadow, pirated_shadow, shadow_seeds


def random_input_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One of: identity, Gaussian noise, uniform noise, 3x3 average blur, a shift of up to 2 px (differentiable)."""
    kind = int(torch.randint(5, (1,), generator=generator))
    if kind == 1:
        return (x + 0.05 * torch.randn(x.shape, generator=generator).to(x.device)).clamp(0, 1)
    if kind == 2:
        return (x + 0.05 * (2 * torch.rand(x.shape, generator=generator).to(x.device) - 1)).clamp(0, 1)
    if kind == 3:
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if kind == 4:
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return x


def kl_to(anchor_logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """KL(other || anchor) per batch, as the authors' ``KLDivLoss(anchor.log_softmax, other.softmax)``."""
    return F.kl_div(anchor_logits.log_softmax(1), other_logits.softmax(1), reduction="batchmean")


@dataclass(frozen=True)
class MetaFingerParams(MethodParams):
    queries: int = 100  # fingerprint size (the authors' n_query; one query each)
    candidates: int = 200  # natural train_a images optimised, then screened down to `queries`
    epochs: int = 15  # meta-training epochs over the pirated anchors (authors: 10)
    lr: float = 0.01  # Adam on the pixels (authors: 0.01 on CIFAR-10)
    alpha: float = 1.0  # weight of the independent (negative) KL term (authors: 1)
    n_sample: int = 2  # pirated / independent shadows sampled per anchor step (authors: 3)
    pirates: tuple[str, ...] = PIRATE_KINDS  # kinds of pirated shadows, one of each
    finetune_steps: int = 50  # SGD steps (lr 0.01) of the fine-tuned pirate on train_a
    noise_scale: float = 0.1  # weight noise = 0.1 x each layer's weight std (authors' WeightPert, alpha=10)
    n_independent: int = 4  # independent shadows trained from scratch (+ a pruned copy of each)
    shadow_steps: int = 100  # training steps of each independent shadow

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 1, "queries", f"must be >= 1, got {self.queries}")
        require(self.candidates >= self.queries, "candidates", f"must be >= queries={self.queries}, got {self.candidates}")
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        require(self.n_independent >= 1, "n_independent", "need at least one independent shadow")
        require(self.n_sample >= 1, "n_sample", f"must be >= 1, got {self.n_sample}")
        require(len(self.pirates) >= 1 and all(k in PIRATE_KINDS for k in self.pirates), "pirates",
                f"a non-empty list of {', '.join(PIRATE_KINDS)}, got {list(self.pirates)!r}")
        require(self.finetune_steps >= 1, "finetune_steps", f"must be >= 1, got {self.finetune_steps}")
        require(self.noise_scale >= 0, "noise_scale", f"must be >= 0, got {self.noise_scale}")
        require(self.shadow_steps >= 1, "shadow_steps", f"must be >= 1, got {self.shadow_steps}")


class MetaFinger(Method):
    Params = MetaFingerParams
    p: MetaFingerParams
    access = "black-box labels"
    version = "1"

    def check_applicable(self, owner: Subject, suspect: Subject) -> None:
        if suspect.spec.num_classes != owner.spec.num_classes:
            raise NotApplicable(
                f"{self.name} compares labels: the suspect has {suspect.spec.num_classes} classes, the owner "
                f"{owner.spec.num_classes}")

    # ------------------------------------------------------------------ shadows
    def _shadows(self, owner: Subject) -> tuple[list[nn.Module], list[nn.Module]]:
        """(pirated pool with the owner first, independent pool), all frozen."""
        p, ctx = self.p, self.ctx
        data = ctx.data.split("train_a")
        common = {"device": ctx.device, "cache_dir": ctx.workdir, "progress": ctx.progress}
        seeds = shadow_seeds(ctx.seed, "metafinger-pirate", len(p.pirates))
        pirates = [copy.deepcopy(owner.model)] + [  # a copy: freezing must not touch the owner
            pirated_shadow(owner.model, owner.spec, kind, seed=s, data=data, steps=p.finetune_steps,
                           noise_scale=p.noise_scale, **common)
            for kind, s in zip(p.pirates, seeds, strict=True)
        ]
        independents = [
            independent_shadow(owner.spec, data, steps=p.shadow_steps, seed=s, **common)
            for s in shadow_seeds(ctx.seed, "metafinger-independent", p.n_independent)
        ]
        # Model augmentation of the negatives (as the authors do): pruned copies enlarge the independent pool.
        independents += [pirated_shadow(m, owner.spec, "prune", seed=0, device=ctx.device) for m in list(independents)]
        return [freeze(m) for m in pirates], [freeze(m) for m in independents]

    # ------------------------------------------------------------------ meta-training
    def _optimise(self, x0: torch.Tensor, pirates: list[nn.Module], independents: list[nn.Module],
                  g: torch.Generator) -> torch.Tensor:
        p = self.p
        n_sample, alpha = p.n_sample, p.alpha
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=p.lr)
        for _ in range(p.epochs):
            for a in torch.randperm(len(pirates), generator=g).tolist():
                xt = random_input_transform(x, g)
                anchor = pirates[a](xt)
                pos = torch.randperm(len(pirates), generator=g)[: min(n_sample, len(pirates))].tolist()
                neg = torch.randperm(len(independents), generator=g)[: min(n_sample, len(independents))].tolist()
                loss = (sum(kl_to(anchor, pirates[j](xt)) for j in pos) / len(pos)
                        - alpha * sum(kl_to(anchor, independents[k](xt)) for k in neg) / len(neg))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
        return x.detach()

    @torch.no_grad()
    def _screen(self, x: torch.Tensor, y: torch.Tensor, pirates: list[nn.Module], independents: list[nn.Module],
                n: int) -> tuple[torch.Tensor, int]:
        """Indices of the ``n`` queries that best separate the pools (pirated agreement minus independent agreement
        with the owner's label, ties by index) and how many of them pass the paper's screen (all pirates agree,
        no independent does)."""
        pos = torch.stack([m(x).argmax(1) == y for m in pirates[1:]] or [torch.ones_like(y, dtype=torch.bool)])
        neg = torch.stack([m(x).argmax(1) == y for m in independents])
        rank = (pos.float().mean(0) - neg.float().mean(0)).cpu()
        keep = torch.sort(rank, descending=True, stable=True).indices[:n]
        passed = (pos.all(0) & ~neg.any(0)).cpu()[keep]
        return keep, int(passed.sum())

    def fingerprint(self, owner: Subject) -> Fingerprint:
        p, ctx = self.p, self.ctx
        g = torch.Generator().manual_seed(ctx.seed)
        pirates, independents = self._shadows(owner)
        train = ctx.data.split("train_a")
        idx = torch.randperm(len(train), generator=g)[: p.candidates]
        x = self._optimise(train.tensor(idx, ctx.device), pirates, independents, g)
        with torch.no_grad():
            y = owner.model.eval()(x).argmax(1)
        keep, passed = self._screen(x, y, pirates, independents, p.queries)
        return Fingerprint(tensors={"x": x[keep].cpu(), "y": y[keep].cpu()},
                           meta={"pirates": len(pirates), "independents": len(independents), "passed_screen": passed})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        y = suspect.labels(fp.tensors["x"].to(suspect.device)).cpu()
        return float((y == fp.tensors["y"]).float().mean())
