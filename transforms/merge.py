"""Model merging of one root's two fine-tuned children: a uniform weight soup, task arithmetic, TIES and DARE.

The parent is fine-tuned twice, on disjoint splits (train_b, train_c) with different seeds -- two downstream
models of one base -- and their task vectors (child - parent) are combined with peft's merge utilities
(``peft.utils.merge_utils``: ``task_arithmetic``, ``ties``, ``dare_linear``), the functions peft's
``add_weighted_adapter`` uses. A soup is task arithmetic at weights 1/2 (the average of the two children).
BatchNorm running statistics are averaged; integer buffers keep the parent's. The merged child is a positive for
its root.

``CrossMerge`` (impl ``merge_cross``) merges two *roots*: the parent and a partner root of the same architecture
(the zoo picks it). Two independently trained networks share no basis, so the partner's hidden channels are first
matched to the parent's (weight matching, Ainsworth et al., "Git Re-Basin", ICLR 2023, sec. 3.2, restricted to the
channels inside residual blocks: the residual stream itself is left unaligned), the weights are interpolated, and
a recovery fine-tune repairs the task. The child has two parents and is a positive for both roots.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from peft.utils import merge_utils
from scipy.optimize import linear_sum_assignment
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult, require
from fpbench.train import TrainingParams, accuracy, train
from transforms.permute import hidden_features, permutable_blocks, permute_hidden

COMBINES = ("soup", "task_arithmetic", "ties", "dare_linear")


@dataclass(frozen=True, kw_only=True)
class MergeParams(TrainingParams):
    combine: str = "soup"  # one of COMBINES
    weight: float = 1.0  # each task vector's weight (soup: always 1/2)
    density: float = 0.5  # the share of each task vector kept (ties, dare_linear)
    second_split: str = "train_c"  # the other child's fine-tuning data (the first is ``split``)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.combine in COMBINES, "combine", f"must be one of {', '.join(COMBINES)}, got {self.combine!r}")
        require(0 < self.density <= 1, "density", f"must be in (0, 1], got {self.density}")
        require(self.weight > 0, "weight", f"must be > 0, got {self.weight}")
        require(self.second_split not in ("train_a", self.split), "second_split",
                f"must differ from the parent's train_a and from split ({self.split}), got {self.second_split!r}")


class Merge(Transform):
    Params = MergeParams
    p: MergeParams
    version = "1"
    modalities = ("vision", "vision-language", "language")  # works on any module with a trunk of linear layers

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        base = {k: v.detach().clone() for k, v in model.state_dict().items()}
        children = []
        for i, split in enumerate((p.split, p.second_split)):
            child = copy.deepcopy(model)
            train(child, ctx.data.split(split), p.train_config(), seed=ctx.seed + i, device=ctx.device,
                  desc=f"merge: fine-tune {i + 1}/2", progress=ctx.progress)
            children.append(child.state_dict())
        merged = {k: self._combine(base[k], [c[k].to(base[k].device) for c in children], k, ctx.seed)
                  for k in base}
        model.load_state_dict(merged)
        return TransformResult(model, spec, {"merge": p.combine, "merge_weight": p.weight,
                                             "merge_density": p.density})

    def _combine(self, base: torch.Tensor, tuned: list[torch.Tensor], name: str, seed: int) -> torch.Tensor:
        if not base.is_floating_point():
            return base  # num_batches_tracked and the like
        if "running_" in name:
            return torch.stack(tuned).mean(0)  # statistics, not task vectors: the children's average
        p = self.p
        tasks = [t - base for t in tuned]
        if p.combine == "soup":
            return base + merge_utils.task_arithmetic(tasks, torch.full((2,), 0.5))
        weights = torch.full((2,), p.weight)
        if p.combine == "task_arithmetic":
            return base + merge_utils.task_arithmetic(tasks, weights)
        if p.combine == "ties":
            return base + merge_utils.ties(tasks, weights, density=p.density)
        torch.manual_seed(seed)  # DARE drops at random: seeded, so the child is reproducible
        return base + merge_utils.dare_linear(tasks, weights, density=p.density)


@dataclass(frozen=True, kw_only=True)
class CrossMergeParams(TrainingParams):
    """The partner's share of the interpolation, whether to match its hidden channels first, and the recovery
    fine-tune (TrainingParams: ``steps`` SGD steps at ``lr`` on ``split``)."""

    weight: float = 0.5
    align: bool = True
    steps: int = 300

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.weight < 1, "weight", f"the partner's share must be in (0, 1), got {self.weight}")


@torch.no_grad()
def match_hidden_channels(model: nn.Module, partner: nn.Module) -> int:
    """Permute ``partner``'s block-internal channels so each matches the ``model`` channel whose weights it
    correlates with most (a linear assignment per block); the partner's function is unchanged. Returns the
    number of blocks matched."""
    mine, theirs = permutable_blocks(model), permutable_blocks(partner)
    for a, b in zip(mine, theirs, strict=True):
        similarity = hidden_features(a) @ hidden_features(b).T
        _, cols = linear_sum_assignment(similarity.cpu().numpy(), maximize=True)
        permute_hidden(b, torch.as_tensor(cols, dtype=torch.long))
    return len(mine)


class CrossMerge(Transform):
    Params = CrossMergeParams
    p: CrossMergeParams
    version = "1"
    partners = 1

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        if ctx.partner is None:
            raise NotApplicable("a cross-root merge needs a second root of the same architecture; the zoo has none")
        partner = copy.deepcopy(ctx.partner).to(ctx.device)
        if [n for n, _ in partner.state_dict().items()] != [n for n, _ in model.state_dict().items()]:
            raise NotApplicable("the partner root's weights do not match this model's names: not the same architecture")
        blocks = match_hidden_channels(model, partner) if p.align else 0
        theirs = partner.state_dict()
        merged = {k: ((1 - p.weight) * v + p.weight * theirs[k].to(v.device)) if v.is_floating_point() else v
                  for k, v in model.state_dict().items()}
        model.load_state_dict(merged)
        before = accuracy(model, ctx.data.split("test"), ctx.device)
        train(model, ctx.data.split(p.split), p.train_config(), seed=ctx.seed, device=ctx.device,
              desc="cross-root merge: recovery", progress=ctx.progress)
        return TransformResult(model, spec, {"merge": "cross_root", "merge_weight": p.weight, "aligned_blocks": blocks,
                                             "accuracy_before_recovery": before})
