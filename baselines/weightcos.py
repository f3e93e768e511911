"""Parameter cosine: the naive white-box reference.

Cosine similarity of the owner's and the suspect's trunk weights, flattened and concatenated over the
tensors whose names and shapes match. It assumes aligned units, so a neuron permutation (the ``permute``
attack) should defeat it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fpbench.api import Fingerprint, Method, NotApplicable, Subject


class WeightCos(Method):
    access = "white-box weights"
    version = "1"

    def fingerprint(self, owner: Subject) -> Fingerprint:
        return Fingerprint(tensors={k: v.detach().float().cpu() for k, v in owner.named_weights().items()})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        theirs = suspect.named_weights()
        names = sorted(k for k, v in fp.tensors.items() if k in theirs and theirs[k].shape == v.shape)
        if not names:
            raise NotApplicable("weightcos: no weight tensor matches the owner's by name and shape "
                                "(different architecture)")
        a = torch.cat([fp.tensors[k].flatten() for k in names]).double()
        b = torch.cat([theirs[k].detach().float().cpu().flatten() for k in names]).double()
        return float(F.cosine_similarity(a, b, dim=0))
