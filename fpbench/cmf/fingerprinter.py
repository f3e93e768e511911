"""CrossModalFingerprinter (seed paper, sec. III-A/B): passive and embedded modes.

Passive mode (the default): each unit of the owner (a weight matrix for the ``svd`` extractor, a layer's
outputs on reference inputs for ``cka``/``activation``, see ``fpbench.cmf.extractors``) has a signature; the
owner's units are matched to the suspect's (``correspondence``), and the score is the mean similarity over
the matched pairs (eq. 5 for svd). tau = 0.7 (paper sec. IV-E).

Embedded mode: the owner was protected by the ``cmf_embed`` transform, which added α·s_j to the leading
singular values of selected matrices and handed the owner its secret (s, α, the matrices' names and
original singular values) in ``Subject.owner_private``. Verification (eq. 4-5): on the suspect's matrices
that correspond to those, ŝ = (σ(suspect) − σ(original)) / α, and the score is cos(s, ŝ). A signed matrix
with no counterpart contributes ŝ_j = 0 (no evidence). ``aggregate: median`` (not in the paper) scores the
median over matrices of the per-matrix cosines instead, so that a few replaced matrices cannot drown the rest.
``readout: projection`` (not in the paper) reads σ_i of the suspect as u_iᵀ W v_i along the owner's own singular
directions instead of the i-th largest singular value: at a larger α, shifted singular values overtake their
neighbours and eq. 4's sorted readout scrambles the signature; the projection does not (it needs the suspect's
matrix in the owner's shape, so it is not invariant to a channel permutation as sorted values are).

Correspondence (eq. 6): ``name`` pairs units of the same name; ``spectral`` pairs them one-to-one by the
extractor's own similarity (spectra for svd, CKA or activation structure for the others; Hungarian
assignment); ``auto`` uses names when at least half of the owner's units find their name in the suspect.
A pair in which no owner unit finds a counterpart (another architecture under name matching) is not
applicable (``NotApplicable`` with the reason: an n/a record), never scored 0: a 0 would be a verdict the
method cannot give, and ``weightcos`` marks the same pairs n/a, so both white-box methods' AUCs are over the
same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from fpbench.api import Access, ConfigError, Fingerprint, Method, MethodParams, NotApplicable, Subject, require
from fpbench.cmf.extractors import EXTRACTORS, SignatureExtractor, make_extractor
from fpbench.spectral import as_matrix, cosine, match_one_to_one, singular_directions, top_singular_values

# Kept for callers of the passive path's helper.
__all__ = ["CrossModalFingerprinter", "CmfParams", "top_singular_values"]


@dataclass(frozen=True)
class CmfParams(MethodParams):
    mode: Literal["passive", "embedded"] = "passive"  # embedded: the owner carries a signature (cmf_embed)
    extractor: str = "svd"  # a key of fpbench.cmf.extractors.EXTRACTORS: svd | cka | activation
    correspondence: Literal["name", "spectral", "auto"] = "name"  # how owner units are matched to the suspect's
    top_k: int = 20  # singular values per weight matrix (eq. 7)
    queries: int = 64  # reference (probe) inputs of the activation-based extractors
    aggregate: Literal["concat", "median"] = "concat"  # embedded mode: the paper's eq. 5, or per-matrix median
    readout: Literal["sorted", "projection"] = "sorted"  # embedded mode: eq. 4, or along the owner's directions

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.top_k > 0, "top_k", f"must be a positive integer, got {self.top_k}")
        require(self.extractor in EXTRACTORS, "extractor",
                f"must be one of {', '.join(EXTRACTORS)}, got {self.extractor!r}")
        require(self.mode == "passive" or self.extractor == "svd", "extractor",
                "the embedded mode reads the signature from singular values: use extractor: svd")
        require(self.extractor == "svd" or self.queries >= 2, "queries",
                f"activation-based extractors need >= 2 reference inputs, got {self.queries}")


class CrossModalFingerprinter(Method):
    Params = CmfParams
    p: CmfParams
    version = "4"  # v4: a pair with no corresponding unit is n/a (was scored 0); v3: float64 Gram matrix

    @property
    def access(self) -> Access:  # type: ignore[override]
        return EXTRACTORS[self.p.extractor].access  # features-based extractors need more than weights

    # ------------------------------------------------------------------ helpers
    def _extractor(self) -> SignatureExtractor:
        p = self.p
        reference = None
        if p.extractor != "svd":
            reference = self.ctx.data.split("probe").tensor()[: p.queries]
        return make_extractor(p.extractor, p.top_k, reference)

    def _match(self, owner: dict[str, torch.Tensor], suspect: dict[str, torch.Tensor], sim: Any,
               shapes: dict[str, list[int]] | None = None, suspect_shapes: dict[str, list[int]] | None = None,
               ) -> dict[str, tuple[str, float]]:
        """``{owner unit: (suspect unit, similarity)}`` under the configured correspondence."""
        def same(n: str) -> bool:
            return n in suspect and (shapes is None or suspect_shapes is None or shapes[n] == suspect_shapes[n])

        mode = self.p.correspondence
        named = [n for n in owner if same(n)]
        if mode == "name" or (mode == "auto" and 2 * len(named) >= len(owner)):
            return {n: (n, sim(owner[n], suspect[n])) for n in named}
        return match_one_to_one(owner, suspect, sim)

    # ------------------------------------------------------------------ Method
    def fingerprint(self, owner: Subject) -> Fingerprint:
        if self.p.mode == "embedded":
            return self._fingerprint_embedded(owner)
        ext = self._extractor()
        tensors = {f"sig:{n}": t for n, t in ext.signatures(owner).items()}
        if ext.reference is not None:
            tensors["x"] = ext.reference
        return Fingerprint(tensors=tensors, meta={"top_k": ext.top_k, "extractor": ext.name})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        if self.p.mode == "embedded":
            return self._score_embedded(fp, suspect)
        ext = self._extractor()
        if "x" in fp.tensors:
            ext.reference = fp.tensors["x"]
        owner = {k[4:]: t for k, t in fp.tensors.items() if k.startswith("sig:")}
        matched = self._match(owner, ext.signatures(suspect), ext.similarity)
        if not matched:  # another architecture under name matching: nothing to compare, which is not a 0
            raise NotApplicable(self._unmatched(suspect, "unit"))
        return float(sum(s for _, s in matched.values()) / len(matched))

    def _unmatched(self, suspect: Subject, what: str) -> str:
        return (f"{self.name}: no {what} of suspect {suspect.id} corresponds to the owner's under "
                f"correspondence '{self.p.correspondence}' (another architecture); correspondence: spectral "
                "matches units across architectures")

    # ------------------------------------------------------------------ embedded mode
    def _fingerprint_embedded(self, owner: Subject) -> Fingerprint:
        secret = (getattr(owner, "owner_private", None) or {}).get("cmf_signature")
        if secret is None:
            raise ConfigError(
                f"method {self.name} with mode: embedded needs an owner protected by the cmf_embed transform, but "
                f"{owner.id} carries no embedded signature; use method=cmf_embedded (its config protects every "
                "root with 'protect: cmf_embed' before the cell's transform)")
        k = self.p.top_k
        weights = owner.named_weights()
        tensors = {"s": torch.tensor(secret["s"], dtype=torch.float64)}
        alpha, s = float(secret["alpha"]), tensors["s"]
        projection = self.p.readout == "projection"
        for m in secret["matrices"]:
            sigma = torch.tensor(m["sigma"], dtype=torch.float64)
            tensors[f"sigma:{m['name']}"] = sigma
            tensors[f"profile:{m['name']}"] = top_singular_values(weights[m["name"]], k)
            if projection:
                seg = s[m["start"] : m["start"] + m["length"]]
                u, v = singular_directions(weights[m["name"]], sigma + alpha * seg)
                tensors[f"u:{m['name']}"], tensors[f"v:{m['name']}"] = u, v
        meta = {"alpha": float(secret["alpha"]), "top_k": k,
                "matrices": [{key: m[key] for key in ("name", "shape", "start", "length")} for m in secret["matrices"]]}
        return Fingerprint(tensors=tensors, meta=meta)

    def _score_embedded(self, fp: Fingerprint, suspect: Subject) -> float:
        alpha, k = float(fp.meta["alpha"]), int(fp.meta["top_k"])
        weights = suspect.named_weights()
        profiles = {m["name"]: fp.tensors[f"profile:{m['name']}"] for m in fp.meta["matrices"]}
        shapes = {m["name"]: list(m["shape"]) for m in fp.meta["matrices"]}
        suspect_sigs = {n: top_singular_values(w, k) for n, w in weights.items()}
        matched = self._match(profiles, suspect_sigs, cosine, shapes, {n: list(w.shape) for n, w in weights.items()})
        if not matched:  # not one signed matrix has a counterpart: the signature cannot be read at all
            raise NotApplicable(self._unmatched(suspect, "signed matrix"))
        s = fp.tensors["s"]
        s_hat = torch.zeros_like(s)
        per_matrix = []
        for m in fp.meta["matrices"]:
            start, n = int(m["start"]), int(m["length"])
            if m["name"] in matched:
                w = weights[matched[m["name"]][0]]
                if f"u:{m['name']}" in fp.tensors:  # readout along the owner's singular directions
                    u, v = fp.tensors[f"u:{m['name']}"], fp.tensors[f"v:{m['name']}"]
                    mat = as_matrix(w).double()
                    sigma = ((u.T @ mat) * v.T).sum(1) if tuple(mat.shape) == (u.shape[0], v.shape[0]) else None
                else:
                    sigma = top_singular_values(w, n).double()
            else:
                sigma = None
            if sigma is not None:
                s_hat[start : start + n] = (sigma - fp.tensors[f"sigma:{m['name']}"]) / alpha
            per_matrix.append(cosine(s[start : start + n], s_hat[start : start + n]))
        if self.p.aggregate == "median":
            # Not in the paper: one matrix replaced wholesale makes |s_hat| huge on its segment and drowns the
            # others in the concatenated cosine; the median over matrices ignores a minority of such segments.
            return float(torch.tensor(per_matrix).median())
        return cosine(s, s_hat)  # eq. 5 on the concatenated signature (the paper)
