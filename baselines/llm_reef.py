"""REEF on language models (Zhang et al., ICLR 2025; reference code tmylla/REEF ``src/generate_activations.py``,
``src/compute_cka.py``; LeaFBench ``fingerprint/reef/``): linear CKA between the owner's and the suspect's hidden
states of one decoder layer at each probe prompt's last token, every feature centred and scaled (REEF's
``load_acts(center=True, scale=True)``).

Deviations: the layer is taken at REEF's *relative* depth (18 of 32 blocks, ``baselines.cka.REEF_DEPTH``) of each
model, where REEF and LeaFBench use the absolute index 18 for every model (LeaFBench's TinyLlama has 22 layers,
Qwen-14B 48); the probe prompts are WordNet glosses (``fpbench.llm.corpora``) instead of TruthfulQA statements
(not on this machine); left padding, so the last position is every prompt's own last token (LeaFBench's
right-padded batches can read pad positions); the fixed threshold is ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from baselines.cka import REEF_DEPTH, standardize
from fpbench.api import Fingerprint, Method, MethodParams, require
from fpbench.llm import corpora
from fpbench.llm.models import num_layers
from fpbench.ops import linear_cka


@dataclass(frozen=True)
class ReefParams(MethodParams):
    prompts: int = 200  # probe prompts (REEF and LeaFBench: 200 statements)
    source: str = "wordnet"  # fpbench.llm.corpora source of the probe prompts
    max_chars: int = 48  # each prompt cut to this many characters (bytes: the tiny models' context is short)
    depth: float = REEF_DEPTH  # relative depth of the decoder layer read
    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.prompts >= 2, "prompts", f"need at least 2 probe prompts, got {self.prompts}")
        require(0 < self.depth <= 1, "depth", f"must be in (0, 1], got {self.depth}")


def layer_index(model: torch.nn.Module, depth: float) -> int:
    """The hidden state at relative ``depth`` (1-based over the blocks: index ceil(depth * L); 0 = embeddings)."""
    return max(1, math.ceil(depth * num_layers(model)))


class LLMReef(Method):
    Params = ReefParams
    p: ReefParams
    access = "white-box features"
    modality = "language"
    version = "1"

    def probe_prompts(self) -> list[str]:
        return corpora.probe_prompts(self.p.source, self.p.prompts, self.p.max_chars, self.ctx.seed)

    def _states(self, subject) -> torch.Tensor:  # noqa: ANN001 - an LMSubject
        layer = layer_index(subject.model, self.p.depth)
        return subject.hidden_states(self.probe_prompts(), layers=[layer])[layer]

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001
        return Fingerprint(tensors={"states": standardize(self._states(owner)).float()})

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        return linear_cka(fp.tensors["states"], standardize(self._states(suspect)))
