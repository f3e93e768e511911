"""Logit agreement, the black-box reference for language models: the share of probe prompts on which the owner
and the suspect predict the same next token (greedy, from next-token logits). LeaFBench has no such baseline; it is
the language-model twin of the vision grid's ``agreement``: what any method must beat."""

from __future__ import annotations

from dataclasses import dataclass

from fpbench.api import Fingerprint, Method, MethodParams
from fpbench.llm import corpora


@dataclass(frozen=True)
class AgreementParams(MethodParams):
    prompts: int = 200
    prompt_chars: int = 32
    source: str = "wordnet"
    threshold: float = 0.5
    query_budget: int | None = 200


class LLMAgreement(Method):
    Params = AgreementParams
    p: AgreementParams
    access = "black-box probabilities"
    modality = "language"
    version = "1"

    def _next_tokens(self, subject):  # noqa: ANN001, ANN202 - an LMSubject
        prompts = corpora.probe_prompts(self.p.source, self.p.prompts, self.p.prompt_chars, self.ctx.seed)
        return subject.next_token_logits(prompts).argmax(-1)

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001
        return Fingerprint(tensors={"next": self._next_tokens(owner)})

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        return float((self._next_tokens(suspect) == fp.tensors["next"]).float().mean())
