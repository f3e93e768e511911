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

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import Fingerprint, Method, NotApplicable, Subject, require
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


class MetaFinger(Method):
    name = "metafinger"
    access = "black-box labels"
    version = "1"

    def validate(self) -> None:
        p = self.params
        require(int(p.get("queries", 100)) >= 1, "queries", "must be >= 1")
        require(int(p.get("candidates", 200)) >= int(p.get("queries", 100)), "candidates", "must be >= queries")
        require(int(p.get("epochs", 15)) >= 1, "epochs", "must be >= 1")
        require(float(p.get("lr", 0.01)) > 0, "lr", "must be > 0")
        require(float(p.get("alpha", 1.0)) >= 0, "alpha", "must be >= 0")
        require(int(p.get("n_independent", 4)) >= 1, "n_independent", "need at least one independent shadow")
        require(int(p.get("n_sample", 2)) >= 1, "n_sample", "must be >= 1")
        kinds = list(p.get("pirates", list(PIRATE_KINDS)))
        require(len(kinds) >= 1 and all(k in PIRATE_KINDS for k in kinds), "pirates",
                f"a non-empty list of {', '.join(PIRATE_KINDS)}")
        require(int(p.get("shadow_steps", 100)) >= 1, "shadow_steps", "must be >= 1")

    def check_applicable(self, owner: Subject, suspect: Subject) -> None:
        if suspect.spec.num_classes != owner.spec.num_classes:
            raise NotApplicable(
                f"metafinger compares labels: the suspect has {suspect.spec.num_classes} classes, the owner "
                f"{owner.spec.num_classes}")

    # ------------------------------------------------------------------ shadows
    def _shadows(self, owner: Subject) -> tuple[list[nn.Module], list[nn.Module]]:
        """(pirated pool with the owner first, independent pool), all frozen."""
        p, ctx = self.params, self.ctx
        data = ctx.data.split("train_a")
        common = {"device": ctx.device, "cache_dir": ctx.workdir, "progress": ctx.progress}
        kinds = list(p.get("pirates", list(PIRATE_KINDS)))
        seeds = shadow_seeds(ctx.seed, "metafinger-pirate", len(kinds))
        pirates = [copy.deepcopy(owner.model)] + [  # a copy: freezing must not touch the owner
            pirated_shadow(owner.model, owner.spec, kind, seed=s, data=data, steps=int(p.get("finetune_steps", 50)),
                           noise_scale=float(p.get("noise_scale", 0.1)), **common)
            for kind, s in zip(kinds, seeds, strict=True)
        ]
        independents = [
            independent_shadow(owner.spec, data, steps=int(p.get("shadow_steps", 100)), seed=s, **common)
            for s in shadow_seeds(ctx.seed, "metafinger-independent", int(p.get("n_independent", 4)))
        ]
        # Model augmentation of the negatives (as the authors do): pruned copies enlarge the independent pool.
        independents += [pirated_shadow(m, owner.spec, "prune", seed=0, device=ctx.device) for m in list(independents)]
        return [freeze(m) for m in pirates], [freeze(m) for m in independents]

    # ------------------------------------------------------------------ meta-training
    def _optimise(self, x0: torch.Tensor, pirates: list[nn.Module], independents: list[nn.Module],
                  g: torch.Generator) -> torch.Tensor:
        p = self.params
        n_sample = int(p.get("n_sample", 2))
        alpha = float(p.get("alpha", 1.0))
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=float(p.get("lr", 0.01)))
        for _ in range(int(p.get("epochs", 15))):
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
        p, ctx = self.params, self.ctx
        g = torch.Generator().manual_seed(ctx.seed)
        pirates, independents = self._shadows(owner)
        train = ctx.data.split("train_a")
        idx = torch.randperm(len(train), generator=g)[: int(p.get("candidates", 200))]
        x = self._optimise(train.tensor(idx, ctx.device), pirates, independents, g)
        with torch.no_grad():
            y = owner.model.eval()(x).argmax(1)
        keep, passed = self._screen(x, y, pirates, independents, int(p.get("queries", 100)))
        return Fingerprint(tensors={"x": x[keep].cpu(), "y": y[keep].cpu()},
                           meta={"pirates": len(pirates), "independents": len(independents), "passed_screen": passed})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        y = suspect.labels(fp.tensors["x"].to(suspect.device)).cpu()
        return float((y == fp.tensors["y"]).float().mean())
