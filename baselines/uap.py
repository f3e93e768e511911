"""UAP fingerprinting (Peng et al., CVPR 2022, "Fingerprinting deep neural networks globally via universal
adversarial perturbations").

A universal adversarial perturbation (UAP) ``v`` of the owner points from natural inputs towards the owner's
decision boundary in a direction shared by the whole data distribution; derived models keep that geometry,
independent ones only partly. The fingerprint is a set of data points that cover the owner's feature space
(one probe input per k-means cluster of the owner's penultimate features) with ``v``; a model's fingerprint
vector is its softmax outputs on every ``x_i`` and ``x_i + v`` concatenated. A suspect is queried on the same
``2 * points`` inputs (black-box probabilities) and compared with the owner's vector.

Deviations from the paper, both for a CPU budget:
- the UAP is gradient-based (signed ascent over mini-batches, ``fpbench.ops.universal_perturbation``) rather
  than the DeepFool-based iteration of Moosavi-Dezfooli et al. the paper uses; same object, cheaper search;
- the paper trains a contrastive encoder (on fingerprints of the owner's pirated variants vs independently
  trained models) and scores the encoder's similarity; we compare the two fingerprint vectors directly.
  ``similarity: cosine`` (default) is the cosine of the concatenated output vectors with the uniform
  distribution subtracted (so "equally unsure" carries no weight); ``similarity: delta`` compares only the
  UAP's effect, ``p(x + v) - p(x)``. No encoder means no learned invariance to the transforms: the score is
  the raw output similarity, and its fixed threshold is ours (the paper decides with its encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from fpbench.api import ConfigError, Fingerprint, Method, MethodParams, NotApplicable, Subject, require
from fpbench.ops import universal_perturbation


def cluster_representatives(features: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of the ``n`` inputs nearest the centroids of a k-means clustering of ``features`` (distinct)."""
    km = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(features.double().numpy())
    dist = torch.cdist(torch.as_tensor(km.cluster_centers_), features.double())  # [n, N]
    chosen: list[int] = []
    for row in dist:  # nearest input not already taken (two centroids may share a nearest input)
        order = row.argsort().tolist()
        chosen.append(next(i for i in order if i not in chosen))
    return torch.tensor(chosen)


def fingerprint_vector(p_clean: torch.Tensor, p_adv: torch.Tensor, similarity: str) -> torch.Tensor:
    """A model's fingerprint as one vector, given its softmax outputs on the points and their UAP versions."""
    if similarity == "delta":
        return (p_adv - p_clean).flatten().double()
    uniform = 1.0 / p_clean.shape[1]
    return torch.cat([p_clean - uniform, p_adv - uniform], 1).flatten().double()


@dataclass(frozen=True)
class UAPParams(MethodParams):
    points: int = 50  # data points (k-means clusters of the owner's features): 2 * points queries per suspect
    eps: float = 0.1  # L-inf radius of the UAP, pixels in [0, 1]
    step_size: float | None = None  # of the UAP's signed ascent (null: eps / 4)
    uap_steps: int = 10  # passes of the ascent
    uap_inputs: int = 500  # owner's training inputs the UAP is computed on
    similarity: Literal["cosine", "delta"] = "cosine"  # compare the outputs (centred), or only the UAP's effect

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.points >= 2, "points", f"need at least 2 data points, got {self.points}")
        require(0 < self.eps <= 1, "eps", f"the L-inf radius must be in (0, 1], got {self.eps}")
        require(self.step_size is None or self.step_size > 0, "step_size", f"must be > 0 or null, got {self.step_size}")
        require(self.uap_steps >= 1, "uap_steps", f"must be >= 1, got {self.uap_steps}")
        require(self.uap_inputs >= 1, "uap_inputs", f"must be >= 1, got {self.uap_inputs}")


class UAP(Method):
    Params = UAPParams
    p: UAPParams
    access = "black-box probabilities"
    version = "1"

    def check_applicable(self, owner: Subject, suspect: Subject) -> None:
        if suspect.spec.num_classes != owner.spec.num_classes:
            raise NotApplicable(f"{self.name} compares output vectors: the suspect has {suspect.spec.num_classes} classes, "
                                f"the owner {owner.spec.num_classes}")

    def fingerprint(self, owner: Subject) -> Fingerprint:
        p = self.p
        n, eps = p.points, p.eps
        probe = self.ctx.data.split("probe")
        if len(probe) < n:
            raise ConfigError(f"invalid parameter 'points': {n} > the {len(probe)} probe inputs; lower points")
        model = owner.model.eval()
        g = torch.Generator().manual_seed(self.ctx.seed)
        # The UAP is computed on the owner's own training data (a defender has it), labelled by the owner.
        train = self.ctx.data.split("train_a")
        idx = torch.randperm(len(train), generator=g)[: p.uap_inputs]
        xt = train.tensor(idx).to(owner.device)
        with torch.no_grad():
            yt = model(xt).argmax(1)
        step_size = eps / 4 if p.step_size is None else p.step_size
        v = universal_perturbation(model, xt, yt, eps=eps, step_size=step_size, steps=p.uap_steps, generator=g)
        xp = probe.tensor().to(owner.device)
        with torch.no_grad():
            feats = model.features(xp).cpu()  # type: ignore[operator]
        x = xp[cluster_representatives(feats, n, self.ctx.seed).to(owner.device)]
        x_adv = (x + v).clamp(0, 1)
        with torch.no_grad():
            p_clean, p_adv = model(x).softmax(1).cpu(), model(x_adv).softmax(1).cpu()
            fooled = float((model(((xt + v).clamp(0, 1))).argmax(1) != yt).float().mean())
        return Fingerprint(tensors={"x": x.cpu(), "x_adv": x_adv.cpu(), "v": v.cpu(), "p": p_clean, "p_adv": p_adv},
                           meta={"fooling_rate": fooled, "num_classes": int(p_clean.shape[1])})

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        x = torch.cat([fp.tensors["x"], fp.tensors["x_adv"]]).to(suspect.device)
        out = suspect.probs(x).cpu()
        if out.shape[1] != fp.tensors["p"].shape[1]:
            raise NotApplicable(f"{self.name} compares output vectors: the suspect answers with {out.shape[1]} classes, "
                                f"the fingerprint holds {fp.tensors['p'].shape[1]}")
        n = fp.tensors["x"].shape[0]
        sim = self.p.similarity
        mine = fingerprint_vector(out[:n], out[n:], sim)
        theirs = fingerprint_vector(fp.tensors["p"], fp.tensors["p_adv"], sim)
        return float(F.cosine_similarity(mine, theirs, dim=0))
