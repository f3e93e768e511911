"""SEF, the sentence-embedding fingerprint of LeaFBench (``fingerprint/sef/``): the model answers ``prompts``
questions (sampled, seeded), each answer is embedded by a sentence model, and the fingerprint is the mean
embedding; score = (cosine of the two means + 1) / 2.

Deviations: the sentence model is all-MiniLM-L6-v2 (``fpbench.llm.embedder``, offline) instead of
Qwen3-Embedding-4B; the questions are WordNet words turned into "Define <word>:" prompts (LeaFBench samples DROP,
ETHICS, PubMedQA and HumanEval questions, not on this machine, and redraws them every run); the questions are
fixed by the seed, so two runs ask the same ones; the fixed threshold is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fpbench.api import Fingerprint, Method, MethodParams, require
from fpbench.llm import corpora
from fpbench.llm.subject import AnswerMemo


@dataclass(frozen=True)
class SefParams(MethodParams):
    prompts: int = 200
    max_tokens: int = 48
    temperature: float = 0.7  # LeaFBench's default sampling temperature
    source: str = "wordnet"
    threshold: float = 0.5
    query_budget: int | None = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.prompts >= 1, "prompts", f"need >= 1 question, got {self.prompts}")


class LLMSef(Method):
    Params = SefParams
    p: SefParams
    access = "black-box labels"
    modality = "language"
    version = "1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answers = AnswerMemo()  # a suspect's answers do not depend on the owner: asked once per suspect

    def questions(self) -> list[str]:
        return [f"Define {word}:" for word, _ in corpora.pairs(self.p.source, self.p.prompts * 5)[:: 5]]

    def _mean_embedding(self, subject, seed: int) -> torch.Tensor:  # noqa: ANN001 - an LMSubject
        from fpbench.llm.embedder import embed

        def ask() -> torch.Tensor:
            answers = subject.generate(questions, self.p.max_tokens, sample=True, temperature=self.p.temperature,
                                       seed=seed)
            return embed([a if a.strip() else "(empty)" for a in answers]).mean(0)

        questions = self.questions()
        return self._answers.get(subject, ("sef", seed), ask, len(questions), len(questions) * self.p.max_tokens)

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001
        return Fingerprint(tensors={"mean": self._mean_embedding(owner, self.ctx.seed)})

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        theirs = self._mean_embedding(suspect, self.ctx.seed + 1)
        return (float(F.cosine_similarity(fp.tensors["mean"], theirs, dim=0)) + 1) / 2
