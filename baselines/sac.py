"""SAC: sample correlation fingerprinting (Guan, Liang, He, NeurIPS 2022; reference code guanjiyang/SAC).

The fingerprint is a set of samples plus the owner's correlation matrix over them; a suspect is queried on the
same samples and the distance is the mean absolute difference of the two matrices (the reference's
``cal_correlation``); we return ``1 - distance`` so that higher = derived. As in the reference
(``correlation_wrong.py``: ``cal_cor`` and ``correlation``), the matrix is computed on the model's raw outputs
(logits), entry (i, j) = (1 - cos(o_i, o_j)) / 2. ``outputs: softmax`` (our earlier version, not the reference)
correlates softmax outputs instead: for confident models these collapse toward one-hot vectors, which is close to
the reference's separate one-hot variant (``cal_cor_onehot``) and discards what the logits say.

The two variants of the paper:

- ``variant: m`` (SAC-m, config ``sac``): CutMix samples as in the reference's ``cut_mix.py``: the first
  ``queries`` held-out (probe) images, each with a box pasted from another of them (a random permutation); the
  box is one fixed-size square (side ``int(0.2 * size)``) at one position for the whole set, its centre drawn
  until it lies in a corner zone (both coordinates within a sixth of the image border). ``cutmix: standard``
  is ordinary CutMix instead (Yun et al. 2019: a box of random area and position per sample; our earlier
  version).
- ``variant: w`` (SAC-w, config ``sac_w``): normal samples that the owner *and* surrogate models misclassify.
  The paper trains surrogates (its abstract: SAC-m works "without the need for training the surrogate models")
  and the reference reads the common errors from ``dataset_common.h5`` (its ``source_wrong_final.h5``, the
  owner's errors alone, is the "SAC-source" option). Our surrogates are the owner's architecture distilled from
  its softmax outputs on its own training data (``fpbench.shadows.distilled_shadow``), trained inside
  ``fingerprint()`` and cached; ``surrogates: 0`` selects on the owner's errors alone.

Deviations, each with its reason: the samples come from the probe split (the reference uses its test set); where
fewer than ``queries`` samples are misclassified in common, SAC-w tops up with the owner's other errors, then with
its lowest-margin correct samples (a small, accurate owner has too few errors); the surrogates are two models of
the owner's architecture trained 200 steps (``surrogate_steps``; the paper's are full extraction models; the tiny
zoo's roots train 500; two 200-step surrogates cost 47-69 s per ci owner on our loaded CPU, two 500-step ones 2-3
min); the fixed
threshold is ours (the paper reports AUC). Measured effects: ``baselines/METHODS.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fpbench.api import Fingerprint, Method, MethodParams, Owner, Suspect, require
from fpbench.ops import correlation_matrix
from fpbench.shadows import distilled_shadow, freeze, shadow_seeds

CORNER_BOX = 0.2  # the reference's cut_rat: the pasted box's side as a fraction of the image side


def corner_box(h: int, w: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the reference's SAC-m box: side ``int(0.2 * side)``, centre in a corner zone."""
    ch, cw = int(h * CORNER_BOX), int(w * CORNER_BOX)

    while True:
        cy = int(torch.randint(h, (1,), generator=generator))
        cx = int(torch.randint(w, (1,), generator=generator))
        if not (h / 6 < cy < 5 * h / 6 or w / 6 < cx < 5 * w / 6):  # both outside the middle band
            break
    return max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)


def corner_cutmix(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SAC-m samples: each image of ``x`` with the corner box pasted from another image of ``x`` (one box for all)."""
    y0, y1, x0, x1 = corner_box(x.shape[-2], x.shape[-1], generator)
    source = torch.randperm(len(x), generator=generator)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[source][:, :, y0:y1, x0:x1]
    return out


def standard_cutmix(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n CutMix images: a box of random area and position of one natural image pasted into another (Yun et al.)."""
    h, w = x.shape[-2:]
    a = torch.randint(len(x), (n,), generator=generator)
    b = torch.randint(len(x), (n,), generator=generator)
    lam = torch.rand(n, generator=generator)
    out = x[a].clone()
    for i in range(n):
        ch, cw = int(h * (1 - lam[i]).sqrt()), int(w * (1 - lam[i]).sqrt())
        cy, cx = int(torch.randint(h, (1,), generator=generator)), int(torch.randint(w, (1,), generator=generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        out[i, :, y0:y1, x0:x1] = x[b[i], :, y0:y1, x0:x1]
    return out


def sample_correlation(outputs: torch.Tensor) -> torch.Tensor:
    """The reference's correlation matrix of a batch of outputs: (1 - cosine) / 2 between every two rows."""
    return (1.0 - correlation_matrix(outputs)) / 2.0


@dataclass(frozen=True)
class SACParams(MethodParams):
    variant: Literal["m", "w"] = "m"  # m: corner-CutMix samples (SAC-m); w: samples misclassified in common (SAC-w)
    queries: int = 50  # samples of the correlation matrix (the reference offers 50 and 100 for SAC-m)
    outputs: Literal["logits", "softmax"] = "logits"  # what is correlated: raw outputs (the reference) or softmax
    cutmix: Literal["corner", "standard"] = "corner"  # SAC-m: the reference's fixed corner box, or standard CutMix
    surrogates: int = 2  # SAC-w: distilled surrogates whose errors the samples must share (0: the owner's alone)
    surrogate_steps: int = 200  # SAC-w: training steps of each surrogate (fewer than a root: CPU cost, see docstring)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 2, "queries", f"need at least 2 samples for a correlation, got {self.queries}")
        require(self.surrogates >= 0, "surrogates", f"must be >= 0 (0: the owner's errors alone), got {self.surrogates}")
        require(self.surrogate_steps >= 1, "surrogate_steps", f"must be >= 1, got {self.surrogate_steps}")


class SAC(Method):
    Params = SACParams
    p: SACParams
    access = "black-box probabilities"
    version = "2"  # v2: logits, the reference's (1 - cos) / 2 matrix, corner CutMix, SAC-w on common errors

    def shadow_families(self) -> frozenset[str]:
        """Transform families the method's own shadow models were made with: SAC-w's surrogates are distilled."""
        return frozenset({"distill"}) if self.p.variant == "w" and self.p.surrogates > 0 else frozenset()

    def _outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1) if self.p.outputs == "softmax" else logits

    def _misclassified_in_common(self, owner: Owner, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """SAC-w's sample order: errors of the owner and every surrogate, the owner's other errors, then its
        correct samples from the least to the most confident (the top-up where errors are too few)."""
        with torch.no_grad():
            logits = owner.model.eval()(x.to(owner.device)).cpu()
        wrong = logits.argmax(1) != labels
        common = wrong.clone()
        data = self.ctx.data.split("train_a")
        for seed in shadow_seeds(self.ctx.seed, "sac-surrogate", self.p.surrogates):
            surrogate = freeze(distilled_shadow(owner.model, owner.spec, data, steps=self.p.surrogate_steps,
                                                seed=seed, device=owner.device, cache_dir=self.ctx.workdir,
                                                progress=self.ctx.progress))
            with torch.no_grad():
                common &= surrogate(x.to(owner.device)).cpu().argmax(1) != labels
        top2 = logits.topk(2, dim=1).values
        margin = torch.where(wrong, torch.zeros(()), top2[:, 0] - top2[:, 1])
        rank = 2 - wrong.long() - common.long()  # 0: common error, 1: the owner's error only, 2: correct
        order = margin.argsort(stable=True)
        return order[rank[order].argsort(stable=True)]

    def _samples(self, owner: Owner) -> torch.Tensor:
        n = self.p.queries
        probe = self.ctx.data.split("probe")
        g = torch.Generator().manual_seed(self.ctx.seed)
        if self.p.variant == "m":
            if self.p.cutmix == "standard":
                return standard_cutmix(probe.tensor(), n, g)
            return corner_cutmix(probe.tensor(slice(0, n)), g)
        x = probe.tensor()
        return x[self._misclassified_in_common(owner, x, probe.labels)[:n]]

    def fingerprint(self, owner: Owner) -> Fingerprint:
        x = self._samples(owner)
        with torch.no_grad():
            corr = sample_correlation(self._outputs(owner.model.eval()(x.to(owner.device)).cpu()))
        return Fingerprint(tensors={"x": x, "corr": corr.float()}, meta={"variant": self.p.variant})

    def score(self, fp: Fingerprint, suspect: Suspect) -> float:
        corr = sample_correlation(self._outputs(suspect.logits(fp.tensors["x"].to(suspect.device)).cpu()))
        return 1.0 - float((corr.float() - fp.tensors["corr"]).abs().mean())
