"""Gradient statistics (LeaFBench ``fingerprint/gradient/calculate_gradient.py``): the next-token loss on
``prompts`` probe texts is back-propagated once per text and, per weight, the sums of g, g^2 and |g| are kept;
over groups of weights -- all, attention (q/k/v/o), MLP (gate/up/down), embeddings (embed, lm_head) -- a 14-number
vector: for all weights [mean, variance, L2 = sqrt(sum g^2), mean|g| / std, variance / mean|g|^2], for each other
group [mean, variance, L2]. Score = (Pearson correlation of the two vectors + 1) / 2.

Deviations: probe texts are WordNet glosses (LeaFBench: TruthfulQA statements); float32 gradients (LeaFBench:
fp16 weights); the fixed threshold is ours. The 14 entries are correlated raw, as LeaFBench does: the L2 entries are
orders of magnitude above the means, so they dominate the Pearson correlation (part of the method as published).
Measured on the tiny byte-level LMs of ``tests/test_llm_methods.py``: owner 1.0, its fine-tunes 0.9994-0.9996, an
independent seed 0.9984, another family 0.9999 -- no separation at that scale (log10 |entry| instead of raw
entries did not separate either: 0.991-0.997 for all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.llm_pdf import pearson
from fpbench.api import Fingerprint, Method, MethodParams, require
from fpbench.llm import corpora

GROUPS = {"attention": ("attn.q", "attn.k", "attn.v", "attn.o"), "mlp": ("mlp.gate", "mlp.up", "mlp.down"),
          "embedding": ("embed", "lm_head")}


@dataclass(frozen=True)
class GradientParams(MethodParams):
    prompts: int = 20  # LeaFBench: 20 statements, one per backward pass
    prompt_chars: int = 64
    source: str = "wordnet"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.prompts >= 1, "prompts", f"need >= 1 probe text, got {self.prompts}")


def gradient_vector(sums: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The 14 statistics from per-weight (sum g, sum g^2, sum |g|) accumulated over the texts."""
    def stats(names: list[str]) -> tuple[float, float, float, float]:
        g = torch.cat([sums[n][0].flatten() for n in names])
        g2 = torch.cat([sums[n][1].flatten() for n in names])
        a = torch.cat([sums[n][2].flatten() for n in names])
        return float(g.mean()), float(g.var()), float(g2.sum().sqrt()), float(a.mean())

    every = list(sums)
    mean, var, l2, mean_abs = stats(every)
    out = [mean, var, l2, mean_abs / max(var ** 0.5, 1e-30), var / max(mean_abs ** 2, 1e-30)]
    for parts in GROUPS.values():
        names = [n for n in every if n.endswith(parts)]
        out += list(stats(names)[:3]) if names else [0.0, 0.0, 0.0]
    return torch.tensor(out, dtype=torch.float64)


class LLMGradient(Method):
    Params = GradientParams
    p: GradientParams
    access = "white-box weights"
    modality = "language"
    version = "1"

    def _vector(self, subject) -> torch.Tensor:  # noqa: ANN001 - an LMSubject
        texts = corpora.probe_prompts(self.p.source, self.p.prompts, self.p.prompt_chars, self.ctx.seed)
        sums: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for text in texts:  # one text per backward pass, as LeaFBench's batch size 1
            for name, g in subject.gradients([text]).items():
                g = g.double()
                s = sums.get(name)
                sums[name] = (g, g * g, g.abs()) if s is None else (s[0] + g, s[1] + g * g, s[2] + g.abs())
        return gradient_vector(sums)

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001
        return Fingerprint(tensors={"vector": self._vector(owner)})

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        return (pearson(fp.tensors["vector"].double(), self._vector(suspect)) + 1) / 2
