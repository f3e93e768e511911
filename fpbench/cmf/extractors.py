"""SignatureExtractor (seed paper sec. III-B): three ways to turn a model into per-unit signatures.

Every extractor gives a model a dict ``{unit name: signature tensor}`` and a ``similarity`` of two units'
signatures; the fingerprinter matches the owner's units to the suspect's (by name, or one-to-one by that
similarity: eq. 6) and averages the similarity over the matched pairs.

- ``svd``: a unit is a weight matrix, its signature the top-k singular values (eq. 7); cosine.
- ``cka``: a unit is a layer, its signature the layer's (spatially pooled) outputs on reference inputs;
  linear CKA of two layers' outputs on the same inputs (eq. 8, ``fpbench.ops.linear_cka``).
- ``activation``: a unit is a layer, its signature the matrix of cosine similarities between the reference
  inputs' activations at that layer (how the layer arranges the inputs); Pearson correlation of two such
  matrices. It compares layers of any width, without reading a single weight.
The last two send the reference inputs through the suspect (counted against the query budget).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from fpbench.api import Access, ConfigError, Subject
from fpbench.ops import correlation_matrix, linear_cka
from fpbench.spectral import cosine, top_singular_values


class SignatureExtractor(abc.ABC):
    name: ClassVar[str]
    access: ClassVar[Access]

    def __init__(self, top_k: int = 20, reference: torch.Tensor | None = None) -> None:
        self.top_k = top_k
        self.reference = reference  # reference inputs [n, C, H, W] in [0, 1] (activation-based extractors)

    @property
    def queries(self) -> int:
        return 0

    @abc.abstractmethod
    def signatures(self, subject: Subject) -> dict[str, torch.Tensor]: ...

    @abc.abstractmethod
    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> float: ...


class SVDExtractor(SignatureExtractor):
    name = "svd"
    access = "white-box weights"

    def signatures(self, subject: Subject) -> dict[str, torch.Tensor]:
        return {n: top_singular_values(w, self.top_k) for n, w in subject.named_weights().items()}

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return cosine(a, b)


class CKAExtractor(SignatureExtractor):
    name = "cka"
    access = "white-box features"

    @property
    def queries(self) -> int:
        return 0 if self.reference is None else int(self.reference.shape[0])

    def signatures(self, subject: Subject) -> dict[str, torch.Tensor]:
        assert self.reference is not None
        return subject.activations(self.reference)  # counted against the query budget

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return linear_cka(a, b)


class ActivationExtractor(CKAExtractor):
    name = "activation"

    def signatures(self, subject: Subject) -> dict[str, torch.Tensor]:
        out = {}
        for n, a in super().signatures(subject).items():
            g = correlation_matrix(a - a.mean(0, keepdim=True)).float()
            i, j = torch.triu_indices(g.shape[0], g.shape[0], offset=1)
            out[n] = g[i, j]
        return out

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return cosine(a - a.mean(), b - b.mean())  # Pearson correlation of the two similarity structures


EXTRACTORS: dict[str, type[SignatureExtractor]] = {
    "svd": SVDExtractor, "cka": CKAExtractor, "activation": ActivationExtractor,
}


def make_extractor(name: str, top_k: int, reference: torch.Tensor | None) -> SignatureExtractor:
    if name not in EXTRACTORS:
        raise ConfigError(f"invalid parameter 'extractor': '{name}'; valid: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](top_k=top_k, reference=reference)
