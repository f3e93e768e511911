"""Model equality testing (Gao et al., "Model Equality Testing: Which model is this API serving?", ICLR 2025;
LeaFBench ``fingerprint/met/``): a two-sample test of the suspect's completions against the owner's, with the
MMD statistic under a Hamming kernel; the score is the test's p-value, so a suspect whose completions are
distributed as the owner's scores high and AUC means something.

Samples: ``samples`` sampled completions (temperature ``temperature``, ``max_tokens`` bytes, seeded) of each of
``prompts`` probe prompts (WordNet glosses, cut to ``prompt_chars``). As in MET, completions are compared only
with completions of the same prompt: per prompt, the unbiased MMD^2 under the kernel k(s, t) = exp(-Hamming(s, t) /
L) over the first L = ``max_tokens`` characters (the shorter right-padded); the statistic is their mean over the
prompts. The p-value is the permutation test's: the share of ``permutations`` random relabellings of the pooled samples (within each
prompt) whose unbiased MMD^2 reaches the observed one, with the observed counted (p >= 1 / (permutations + 1)).

Deviations from LeaFBench: its kernel pools completions across prompts, and its null splits the owner's own 25
samples 12/13 (another sample size than the observed statistic's); we follow MET's prompt-matched kernel and the
standard permutation null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fpbench.api import Fingerprint, Method, MethodParams, require
from fpbench.llm import corpora
from fpbench.llm.subject import AnswerMemo


@dataclass(frozen=True)
class MetParams(MethodParams):
    prompts: int = 25
    samples: int = 4  # completions per prompt and model
    max_tokens: int = 24
    temperature: float = 1.0
    prompt_chars: int = 32
    permutations: int = 500
    source: str = "wordnet"
    threshold: float = 0.05  # the test's level: a p-value above it does not reject "same model"
    query_budget: int | None = 100  # prompts x samples

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.prompts >= 1 and self.samples >= 2, "samples", "need >= 1 prompt and >= 2 samples per prompt")
        require(self.permutations >= 19, "permutations", f"need >= 19 permutations, got {self.permutations}")


def hamming_kernel(a: list[str], b: list[str], length: int) -> torch.Tensor:
    """[len(a), len(b)]: exp(-Hamming / length) of the strings' first ``length`` characters (right-padded)."""
    def codes(xs: list[str]) -> torch.Tensor:
        return torch.tensor([[ord(c) for c in x[:length].ljust(length)] for x in xs])

    ca, cb = codes(a), codes(b)
    return torch.exp(-(ca[:, None, :] != cb[None, :, :]).double().mean(-1))


def mmd2(k: torch.Tensor, first: torch.Tensor) -> float:
    """Unbiased MMD^2 of the samples marked ``first`` against the rest, from the pooled kernel matrix."""
    x, y = first, ~first
    kxx, kyy, kxy = k[x][:, x], k[y][:, y], k[x][:, y]
    n, m = int(x.sum()), int(y.sum())
    return float((kxx.sum() - kxx.diag().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1))
                 - 2 * kxy.mean())


def batched_mmd2(k: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
    """:func:`mmd2` of every labelling in ``marks`` [P, n] (True = first sample) at once: [P]."""
    x, y = marks.double(), (~marks).double()
    diag = k.diag()
    n, m = x.sum(1), y.sum(1)
    xx = ((x @ k) * x).sum(1) - x @ diag
    yy = ((y @ k) * y).sum(1) - y @ diag
    xy = ((x @ k) * y).sum(1)
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)


def permutation_p_value(mine: list[list[str]], theirs: list[list[str]], length: int, permutations: int,
                        seed: int) -> tuple[float, float]:
    """(p-value, observed MMD^2) with a prompt-matched kernel: per prompt, samples are pooled and relabelled
    (every relabelling's statistic computed at once; the permutations are drawn as one per prompt per round)."""
    groups = [m + t for m, t in zip(mine, theirs, strict=True)]
    kernels = [hamming_kernel(g, g, length) for g in groups]
    labels = [torch.tensor([True] * len(m) + [False] * len(t)) for m, t in zip(mine, theirs, strict=True)]
    observed = sum(mmd2(k, f) for k, f in zip(kernels, labels, strict=True)) / len(kernels)
    gen = torch.Generator().manual_seed(seed)
    drawn: list[list[torch.Tensor]] = [[] for _ in labels]
    for _ in range(permutations):
        for i, f in enumerate(labels):
            drawn[i].append(f[torch.randperm(len(f), generator=gen)])
    null = sum(batched_mmd2(k, torch.stack(d)) for k, d in zip(kernels, drawn, strict=True)) / len(kernels)
    hits = int((null >= observed - 1e-12).sum())
    return (hits + 1) / (permutations + 1), observed


class LLMMet(Method):
    Params = MetParams
    p: MetParams
    access = "black-box labels"
    modality = "language"
    version = "1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answers = AnswerMemo()  # a suspect's completions do not depend on the owner: sampled once per suspect

    def probe_prompts(self) -> list[str]:
        return corpora.probe_prompts(self.p.source, self.p.prompts, self.p.prompt_chars, self.ctx.seed)

    def _completions(self, subject, seed: int) -> list[list[str]]:  # noqa: ANN001 - an LMSubject
        prompts = self.probe_prompts()
        asked = [p for p in prompts for _ in range(self.p.samples)]

        def ask() -> list[list[str]]:
            flat = subject.generate(asked, self.p.max_tokens, sample=True, temperature=self.p.temperature, seed=seed)
            return [flat[i * self.p.samples:(i + 1) * self.p.samples] for i in range(len(prompts))]

        return self._answers.get(subject, ("met", seed), ask, len(asked), len(asked) * self.p.max_tokens)

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001
        return Fingerprint(meta={"completions": self._completions(owner, self.ctx.seed)})

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        theirs = self._completions(suspect, self.ctx.seed + 1)  # fresh samples: the owner's are not reused
        return permutation_p_value(fp.meta["completions"], theirs, self.p.max_tokens, self.p.permutations,
                                   self.ctx.seed)[0]
