"""HuRef (Zeng et al., NeurIPS 2024; LeaFBench ``fingerprint/huref/invariant_terms.py``, mean-pooling variant):
invariants of the last two decoder layers over a fixed set of token embeddings X (the owner's vocabulary's least
frequent tokens):
    A = X Wq^T Wk X^T,  B = X Wv^T Wo^T X^T,  C = X (Wgate^T * Wup^T) Wdown^T X^T
(grouped-query k/v tiled up to the query width, as LeaFBench does; a model with no gate, GPT-2, uses
X Wup^T Wdown^T X^T). The 6 [N, N] terms are cut into 512 contiguous chunks, each chunk's mean taken and the 512
means z-scored; score = (cosine + 1) / 2. The terms do not change under a rotation or permutation of the hidden
space applied consistently to the weights and embeddings, which a cosine of raw weights does not survive.

Deviations: the token set is the byte tokenizer's tokens ranked by frequency in the ``source`` corpus, least
frequent (that occur) first, up to ``tokens`` of them (LeaFBench: the 4096 rarest Wikipedia tokens of the
family's tokenizer); the fixed threshold is ours.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from fpbench.api import Fingerprint, Method, MethodParams, NotApplicable, require
from fpbench.llm import corpora
from fpbench.llm.text import tokenizer_for


@dataclass(frozen=True)
class HurefParams(MethodParams):
    tokens: int = 4096  # how many of the least frequent (occurring) tokens form X
    chunks: int = 512  # mean-pooled features
    source: str = "wordnet"  # corpus whose token frequencies rank the tokens
    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.tokens >= 2, "tokens", f"need at least 2 tokens, got {self.tokens}")
        require(self.chunks >= 2, "chunks", f"need at least 2 chunks, got {self.chunks}")


def rare_tokens(source: str, n: int, limit: int = 20000, tokenizer: str = "byte") -> list[int]:
    """Ids of the ``n`` least frequent tokens that occur in ``source``'s first ``limit`` texts (ties by id)."""
    return list(_rare_tokens(source, n, limit, tokenizer))


@lru_cache(maxsize=8)
def _rare_tokens(source: str, n: int, limit: int, tokenizer: str) -> tuple[int, ...]:  # counted once per process
    tok = tokenizer_for(tokenizer)
    counts = Counter(i for ids in tok(corpora.texts(source, limit), add_special_tokens=False).input_ids for i in ids)
    return tuple(i for i, _ in sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))[:n])


def _tokenizer_name(subject: object) -> str:
    return str((getattr(getattr(subject, "spec", None), "input", None) or {}).get("tokenizer", "byte"))


def _tile(w: torch.Tensor, rows: int) -> torch.Tensor:
    return w if w.shape[0] == rows else w.repeat(rows // w.shape[0], 1)


def invariant_terms(w: dict[str, torch.Tensor], tokens: list[int]) -> torch.Tensor:
    """[6, N, N]: A, B and C of the last two layers."""
    layers = sorted({int(k.split(".")[1]) for k in w if k.startswith("layers.")})
    if len(layers) < 2:
        raise NotApplicable("HuRef reads the last two decoder layers; this model has fewer")
    x = w["embed"].double()[tokens]
    terms = []
    for i in layers[-2:]:
        g = {k.split(".", 2)[2]: v.double() for k, v in w.items() if k.startswith(f"layers.{i}.")}
        q = g["attn.q"]
        k, v = _tile(g["attn.k"], q.shape[0]), _tile(g["attn.v"], q.shape[0])
        mlp = g["mlp.up"].T * g["mlp.gate"].T if "mlp.gate" in g else g["mlp.up"].T
        terms += [x @ q.T @ k @ x.T, x @ v.T @ g["attn.o"].T @ x.T, x @ mlp @ g["mlp.down"].T @ x.T]
    return torch.stack(terms)


def pooled(terms: torch.Tensor, chunks: int) -> torch.Tensor:
    means = torch.stack([c.mean() for c in torch.tensor_split(terms.flatten(), chunks)])
    return (means - means.mean()) / means.std().clamp_min(1e-12)


class LLMHuref(Method):
    Params = HurefParams
    p: HurefParams
    access = "white-box weights"
    modality = "language"
    version = "1"

    def _feature(self, subject) -> torch.Tensor:  # noqa: ANN001 - an LMSubject
        return pooled(invariant_terms(subject.named_weights(), rare_tokens(self.p.source, self.p.tokens,
                                                                  tokenizer=_tokenizer_name(subject))),
                      self.p.chunks)

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001
        return Fingerprint(tensors={"feature": self._feature(owner).float()})

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        return (float(F.cosine_similarity(fp.tensors["feature"].double(), self._feature(suspect), dim=0)) + 1) / 2
