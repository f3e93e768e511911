"""Black-box deployment variants of a language model (LeaFBench's deployment techniques): the same weights behind
an API that changes what a querier sees -- a system prompt before every prompt, paraphrased inputs, noise on the
output logits, forced sampling settings. A ``deploy`` child (``transforms.deploy``) records its variant as a
``deploy`` wrapper in its spec; :class:`fpbench.llm.subject.LMSubject` applies it to every black-box query
(next-token logits, generation). White-box queries reach the model itself, so white-box methods are not
applicable to such a child (``fpbench.api.Method.check_applicable``): LeaFBench, too, scores them with
black-box methods only.

Paraphrase modes: ``lower`` (the text lowercased), ``synonyms`` (each word that WordNet lists in a synset with
other words replaced by the synset's first other word: a thesaurus rewrite, deterministic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from fpbench.errors import ConfigError
from fpbench.llm import corpora

PARAPHRASES = ("", "lower", "synonyms")


@dataclass(frozen=True)
class Deployment:
    system_prompt: str = ""
    paraphrase: str = ""  # one of PARAPHRASES ("": none)
    logit_noise: float = 0.0  # std of the Gaussian noise added to every logit the API returns or samples from
    temperature: float | None = None  # sampling temperature the API forces (None: the caller's)
    seed: int = 0  # the noise's seed (the same prompt gets the same noise: an API that caches answers)

    def __post_init__(self) -> None:
        if self.paraphrase not in PARAPHRASES:
            raise ConfigError(f"deployment paraphrase must be one of {PARAPHRASES}, got {self.paraphrase!r}")
        if self.logit_noise < 0 or (self.temperature is not None and self.temperature <= 0):
            raise ConfigError("deployment logit_noise must be >= 0 and temperature > 0 (or null)")

    @classmethod
    def of(cls, spec: Any) -> Deployment | None:
        """The deployment a model's spec records (its ``deploy`` wrapper), or None."""
        for w in getattr(spec, "wrappers", None) or []:
            if w.get("kind") == "deploy":
                return cls(**{k: v for k, v in w.items() if k != "kind"})
        return None

    def prompts(self, prompts: list[str]) -> list[str]:
        """What the model is given for ``prompts``: paraphrased, after the system prompt."""
        if self.paraphrase == "lower":
            prompts = [p.lower() for p in prompts]
        elif self.paraphrase == "synonyms":
            table = synonyms()
            prompts = [re.sub(r"[A-Za-z]+", lambda m: table.get(m.group(0).lower(), m.group(0)), p) for p in prompts]
        return [self.system_prompt + p for p in prompts]

    def noise(self, logits: torch.Tensor, salt: int = 0) -> torch.Tensor:
        if not self.logit_noise:
            return logits
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + salt)
        return logits + self.logit_noise * torch.randn(logits.shape, generator=gen).to(logits.device, logits.dtype)


@lru_cache(maxsize=1)
def synonyms() -> dict[str, str]:
    """word -> the first other single-word lemma of the first WordNet synset that lists it with others."""
    table: dict[str, str] = {}
    for words in corpora.wordnet_synsets():
        single = [w.lower() for w in words if w.isalpha()]
        for w in single:
            other = next((o for o in single if o != w), None)
            if other and w not in table and len(w) > 2:
                table[w] = other
    return table


def rewrap_deploy(model: nn.Module, wrapper: dict[str, Any]) -> nn.Module:
    """``fpbench.models.WRAPPERS['deploy']``: the module is the parent's; the subject applies the deployment."""
    return model
