"""MetaFinger: fingerprinting DNNs with meta-training (Yang, Wang, Wang, IJCAI 2022).

Reference: the paper's Sec. 4 (Algorithm 1) and the authors' code, kangyangWHU/MetaFinger ``meta_learning.py``
(``MetaFinger.gen_queryset``, ``epoch_train``, ``screen_queryset``). The owner's query images are optimised
against shadow models so that "pirated" shadows (copies of the owner after the paper's model augmentation)
answer them like the owner and independently trained shadows (the owner's architecture trained from scratch on
the owner's own data, other seeds) do not. As in the authors' code:

- the shadows form two disjoint pools, a meta-training pool and a validation pool (each with pirated and
  independent models);
- each round takes fresh natural training images; Adam updates the pixels; for each pirated anchor (in random
  order) the loss is ``mean KL(anchor || pirated) - alpha * mean KL(anchor || independent)`` over ``n_sample``
  sampled training-pool shadows, with a random input transformation per step for robustness;
- the epoch kept is the one of the second half of the epochs whose inputs the validation independents agree
  with least (the authors' ``best_inp``; later epochs win ties);
- those inputs are screened on the validation pool: a query is kept only if every validation pirate gives the
  owner's label and no validation independent does (the authors' TPR = 1, FPR = 0);
- rounds repeat until ``queries`` queries passed, the fingerprint is the first ``queries`` of them.

Fingerprint = the query images + the owner's labels on them; score = the suspect's label agreement (black-box
labels).

Shadow leakage: the paper's pirates are fine-tuned, 30% magnitude-pruned and weight-noised (0.1 std) copies;
the last two are the grid's ``prune30_unstructured`` and the first step of ``removal``. By default only
fine-tuned pirates are made (``pirates: [finetune]``); ``shadow_families()`` names the families the shadows saw
(so a table can mark the ``finetune`` cells), and ``pirates: [finetune, prune, noise]`` (config
``metafinger_allpirates``) restores the paper's augmentation, the pruned copies of independents included.

Deviations (also in baselines/METHODS.md, with their measured effect): a handful of shadows trained inside
``fingerprint()`` (the paper trains dozens of full models); at most ``rounds`` rounds (authors: up to 100), so
a fingerprint can hold fewer than ``queries`` queries; the deterministic ``prune`` pirate exists once, in the
training pool; no adversarially trained pirates (too costly on CPU); the input transformations are our
differentiable subset of the authors' list; the threshold is ours (the paper reports query accuracy and AUC).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import Fingerprint, FpbenchError, Method, MethodParams, Subject, require
from fpbench.params import require_fillable
from fpbench.shadows import (
    PIRATE_KINDS,
    freeze,
    independent_shadow,
    magnitude_prune_,
    pirated_shadow,
    shadow_families,
    shadow_seeds,
)


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


@dataclass
class ShadowPools:
    """The meta-training pool (pirates with the owner first, independents) and the disjoint validation pool."""

    train_pirates: list[nn.Module]
    train_independents: list[nn.Module]
    val_pirates: list[nn.Module]
    val_independents: list[nn.Module]


@torch.no_grad()
def agreement(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[len(models), N]: whether each model labels each input ``y`` (an empty list gives [0, N])."""
    if not models:
        return torch.zeros((0, len(y)), dtype=torch.bool, device=y.device)
    return torch.stack([m(x).argmax(1) == y for m in models])


def passes_screen(x: torch.Tensor, y: torch.Tensor, pirates: list[nn.Module], independents: list[nn.Module]
                  ) -> torch.Tensor:
    """The authors' screen: every pirate labels the query ``y`` and no independent does ([N] bool)."""
    return agreement(pirates, x, y).all(0) & ~agreement(independents, x, y).any(0)


@dataclass(frozen=True)
class MetaFingerParams(MethodParams):
    queries: int = 100  # fingerprint size (the authors' n_query; one query each)
    candidates: int = 100  # natural train_a images optimised per round (authors: batch_size 70 on CIFAR-10)
    rounds: int = 4  # at most this many rounds of fresh candidates until `queries` pass (authors: up to 100)
    epochs: int = 10  # meta-training epochs per round (authors: 10)
    lr: float = 0.01  # Adam on the pixels (authors: 0.01 on CIFAR-10)
    alpha: float = 1.0  # weight of the independent (negative) KL term (authors: 1)
    n_sample: int = 3  # pirated / independent shadows sampled per anchor step (authors: 3)
    # Kinds of pirated shadows. Default: fine-tuned only; prune (= prune30_unstructured) and noise (= the first
    # step of removal) are held out of the pools so the method is not trained on attacks it is scored against.
    pirates: tuple[str, ...] = ("finetune",)
    n_pirates: int = 2  # pirated shadows of each kind per pool (the deterministic `prune` pirate: one, training)
    finetune_steps: int = 50  # SGD steps (lr 0.01) of a fine-tuned pirate on train_a
    prune_fraction: float = 0.3  # magnitude pruning of the `prune` pirate (the authors' 30%)
    noise_scale: float = 0.1  # weight noise = 0.1 x each layer's weight std (authors' WeightPert, alpha=10)
    n_independent: int = 4  # independent shadows of the meta-training pool
    n_val_independent: int = 2  # independent shadows of the validation pool (other seeds)
    shadow_steps: int = 500  # training steps of each independent shadow: the tiny zoo roots' own recipe

    def __post_init__(self) -> None:
        super().__post_init__()
        require_fillable(self.queries, self.rounds, self.candidates)
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        require(self.n_sample >= 1, "n_sample", f"must be >= 1, got {self.n_sample}")
        require(len(self.pirates) >= 1 and all(k in PIRATE_KINDS for k in self.pirates)
                and len(set(self.pirates)) == len(self.pirates), "pirates",
                f"a non-empty list of distinct kinds among {', '.join(PIRATE_KINDS)}, got {list(self.pirates)!r}")
        require(self.n_pirates >= 1, "n_pirates", f"must be >= 1, got {self.n_pirates}")
        require(self.finetune_steps >= 1, "finetune_steps", f"must be >= 1, got {self.finetune_steps}")
        require(0 < self.prune_fraction < 1, "prune_fraction", f"must be in (0, 1), got {self.prune_fraction}")
        require(self.noise_scale >= 0, "noise_scale", f"must be >= 0, got {self.noise_scale}")
        require(self.n_independent >= 1, "n_independent", "need at least one independent shadow")
        require(self.n_val_independent >= 1, "n_val_independent", "need at least one validation independent")
        require(self.shadow_steps >= 1, "shadow_steps", f"must be >= 1, got {self.shadow_steps}")


class MetaFinger(Method):
    Params = MetaFingerParams
    p: MetaFingerParams
    access = "black-box labels"
    version = "2"  # 2: validation pool and screen, rounds, 500-step independents, prune/noise pirates held out

    def shadow_families(self) -> frozenset[str]:
        """The transform families the pirated shadows were made with (independents imitate none)."""
        return shadow_families(self.p.pirates)

    # ------------------------------------------------------------------ shadows
    def _pirates(self, owner: Subject, pool: str) -> list[nn.Module]:
        p, ctx = self.p, self.ctx
        data = ctx.data.split("train_a")
        common = {"device": ctx.device, "cache_dir": ctx.workdir, "progress": ctx.progress}
        out = []
        for kind in p.pirates:
            if kind == "prune":  # deterministic: one copy, in the training pool only
                if pool == "train":
                    out.append(pirated_shadow(owner.model, owner.spec, "prune", seed=0, device=ctx.device,
                                              prune_fraction=p.prune_fraction))
                continue
            for s in shadow_seeds(ctx.seed, f"metafinger-{pool}-{kind}", p.n_pirates):
                out.append(pirated_shadow(owner.model, owner.spec, kind, seed=s, data=data, steps=p.finetune_steps,
                                          noise_scale=p.noise_scale, **common))
        return out

    def _independents(self, owner: Subject, pool: str, n: int) -> list[nn.Module]:
        p, ctx = self.p, self.ctx
        data = ctx.data.split("train_a")
        models = [independent_shadow(owner.spec, data, steps=p.shadow_steps, seed=s, device=ctx.device,
                                     cache_dir=ctx.workdir, progress=ctx.progress)
                  for s in shadow_seeds(ctx.seed, f"metafinger-{pool}-independent", n)]
        if "prune" in p.pirates:  # the authors' augmentation of the negatives, part of the prune family
            models += [magnitude_prune_(copy.deepcopy(m), p.prune_fraction) for m in list(models)]
        return models

    def pools(self, owner: Subject) -> ShadowPools:
        """Both shadow pools, all frozen; the owner (a copy: freezing must not touch it) leads the pirates."""
        pools = ShadowPools(
            train_pirates=[copy.deepcopy(owner.model)] + self._pirates(owner, "train"),
            train_independents=self._independents(owner, "train", self.p.n_independent),
            val_pirates=self._pirates(owner, "val"),
            val_independents=self._independents(owner, "val", self.p.n_val_independent),
        )
        for models in vars(pools).values():
            for m in models:
                freeze(m)
        return pools

    # ------------------------------------------------------------------ meta-training
    def _epoch(self, x: torch.Tensor, opt: torch.optim.Optimizer, pirates: list[nn.Module],
               independents: list[nn.Module], g: torch.Generator) -> None:
        p = self.p
        for a in torch.randperm(len(pirates), generator=g).tolist():
            xt = random_input_transform(x, g)
            anchor = pirates[a](xt)
            pos = torch.randperm(len(pirates), generator=g)[: min(p.n_sample, len(pirates))].tolist()
            neg = torch.randperm(len(independents), generator=g)[: min(p.n_sample, len(independents))].tolist()
            loss = (sum(kl_to(anchor, pirates[j](xt)) for j in pos) / len(pos)
                    - p.alpha * sum(kl_to(anchor, independents[k](xt)) for k in neg) / len(neg))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)

    def _round(self, owner: nn.Module, x0: torch.Tensor, pools: ShadowPools, g: torch.Generator) -> torch.Tensor:
        """One round: ``epochs`` epochs on the training pool; the inputs of the second-half epoch the validation
        independents agree with least (the authors' best epoch)."""
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.p.lr)
        best, best_neg = x0, float("inf")
        for epoch in range(self.p.epochs):
            self._epoch(x, opt, pools.train_pirates, pools.train_independents, g)
            if epoch >= self.p.epochs // 2:
                with torch.no_grad():
                    xd = x.detach()
                    neg = float(agreement(pools.val_independents, xd, owner(xd).argmax(1)).float().mean())
                if neg <= best_neg:
                    best, best_neg = xd.clone(), neg
        return best

    def fingerprint(self, owner: Subject) -> Fingerprint:
        p, ctx = self.p, self.ctx
        g = torch.Generator().manual_seed(ctx.seed)
        pools = self.pools(owner)
        model = owner.model.eval()
        train = ctx.data.split("train_a")
        order = torch.randperm(len(train), generator=g)
        kept_x, kept_y, per_round = [], [], []
        for r in range(p.rounds):
            idx = order[r * p.candidates: (r + 1) * p.candidates]
            if len(idx) == 0:
                break
            x = self._round(model, train.tensor(idx, ctx.device), pools, g)
            with torch.no_grad():
                y = model(x).argmax(1)
            ok = passes_screen(x, y, pools.val_pirates, pools.val_independents)
            kept_x.append(x[ok].cpu())
            kept_y.append(y[ok].cpu())
            per_round.append(int(ok.sum()))
            if sum(per_round) >= p.queries:
                break
        if not sum(per_round):
            raise FpbenchError(
                f"{self.name}: no query passed the validation screen in {len(per_round)} rounds of {p.candidates} "
                "candidates; raise 'rounds' or 'epochs', or train stronger shadows ('shadow_steps')")
        x, y = torch.cat(kept_x)[: p.queries], torch.cat(kept_y)[: p.queries]
        meta = {"pools": {k: len(v) for k, v in vars(pools).items()}, "passed_per_round": per_round,
                "queries": len(y), "shadow_families": sorted(self.shadow_families())}
        return Fingerprint(tensors={"x": x, "y": y}, meta=meta)

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        y = suspect.labels(fp.tensors["x"].to(suspect.device)).cpu()
        return float((y == fp.tensors["y"]).float().mean())
