"""CrossModalFingerprinter (seed paper, sec. III-A/B), passive mode.

Passive mode: the signature of a model is, for each weight matrix (conv kernels reshaped to
out x in*k*k), its top-k singular values (paper eq. 7, k = 20); owner and suspect signatures are
compared by cosine similarity (eq. 5) over the matrices both have under the same name and shape,
and the mean over matrices is the score; tau = 0.7 (paper sec. IV-E).
"""

from __future__ import annotations

import torch

from fpbench.api import ConfigError, Fingerprint, Method, Subject, require


def top_singular_values(w: torch.Tensor, k: int) -> torch.Tensor:
    m = w.reshape(w.shape[0], -1).float()
    s = torch.linalg.svdvals(m)
    out = torch.zeros(k)
    out[: min(k, s.numel())] = s[:k]
    return out


class CrossModalFingerprinter(Method):
    name = "cmf"
    access = "white-box weights"

    def validate(self) -> None:
        p = self.params
        require(int(p.get("top_k", 20)) > 0, "top_k", "must be a positive integer")
        if p.get("mode", "passive") != "passive":
            raise ConfigError(f"invalid parameter 'mode': '{p.get('mode')}' is not implemented; valid: passive")

    def fingerprint(self, owner: Subject) -> Fingerprint:
        k = int(self.params.get("top_k", 20))
        return Fingerprint(tensors={n: top_singular_values(w, k) for n, w in owner.named_weights().items()},
                           meta={"top_k": k})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        k = int(fp.meta["top_k"])
        sims = []
        for name, w in suspect.named_weights().items():
            ref = fp.tensors.get(name)
            if ref is None:
                continue
            sig = top_singular_values(w, k)
            sims.append(float(torch.nn.functional.cosine_similarity(ref, sig, dim=0)))
        # No shared matrix (another architecture): no evidence of derivation.
        return float(sum(sims) / len(sims)) if sims else 0.0
