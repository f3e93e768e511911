"""UAP fingerprinting (Peng, Li, Chen, Zhang, Zhu, Xue, CVPR 2022, "Fingerprinting deep neural networks globally
via universal adversarial perturbations"; arXiv 2202.08602).

A universal adversarial perturbation (UAP) ``v`` of the owner points from natural inputs towards the owner's
decision boundary in a direction shared by the whole data distribution; derived models keep that geometry,
independent ones only partly. The data points cover the owner's feature space (one probe input per k-means
cluster of the owner's penultimate features); a model's fingerprint is its softmax outputs on every ``x_i``
and ``x_i + v`` (``[points, 2 * classes]``, the uniform distribution subtracted). A suspect is queried on the
same ``2 * points`` inputs (black-box probabilities).

``similarity: encoder`` (the paper's verdict, Section 4): a contrastive encoder (``baselines/uap_encoder.py``)
is trained per owner on fingerprints of shadow models, so that the owner and its pirated copies embed close
together and independently trained models far; the score is the cosine of the owner's and the suspect's
embeddings. The shadow pools come from ``fpbench/shadows.py``, built from the owner and its own training
data only: pirated copies of the owner (``pirates``: by default weight noise at several scales; ``prune``,
``finetune`` and ``distill`` copies are the paper's kinds and may be chosen), and ``n_independent`` models of
the owner's architecture trained from scratch like the zoo's roots (``shadow_steps``), each with copies of
the same cheap kinds, so that every lineage -- not only the owner's -- teaches the encoder what a derived copy
looks like. The transform families the encoder's pirates were made with are ``shadow_families()`` (weight
noise is the first step of the grid's ``removal``): the report marks those cells as seen in training; by
default the grid's finetune, prune and distill families are held out.
``similarity: cosine`` (config ``uap_raw``) is this module's method up to version 1, kept for comparison:
the cosine of the two fingerprint vectors, no encoder; ``similarity: delta`` (``uap_delta``) compares only the
UAP's effect ``p(x + v) - p(x)``.

Deviations from the paper (also in baselines/METHODS.md, with their measured effect):
- the UAP is gradient-based (signed ascent over mini-batches, ``fpbench.ops.universal_perturbation``) rather
  than the DeepFool-based iteration of Moosavi-Dezfooli et al.; same object, cheaper search;
- the paper's pirates are model-extraction, fine-tuned and pruned copies and its independents are trained on
  other data and architectures; ours default to weight-noise pirates (so that the grid's finetune, prune and
  distill cells are not scored by an encoder trained on them) and independents of the owner's architecture
  on the owner's data (a defender has no other);
- the encoder's architecture (an MLP), augmentations (point dropout, output noise), loss (supervised
  contrastive) and training budget are ours: the paper's code is not public;
- the paper aggregates scores over repeated fingerprint samples in a hypothesis test; we score one
  fingerprint per pair, and the fixed threshold is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

from baselines.uap_encoder import EncoderConfig, encode, encoder_from_state, train_encoder
from fpbench.api import ConfigError, Fingerprint, Method, MethodParams, NotApplicable, Subject, require
from fpbench.ops import universal_perturbation
from fpbench.shadows import distilled_shadow, independent_shadow, pirated_shadow, shadow_seeds

# The grid's transform family (a transform's ``impl``) each kind of pirated shadow is made like.
PIRATE_FAMILIES = {"noise": "removal", "prune": "prune", "finetune": "finetune", "distill": "distill"}
CHEAP_PIRATES = ("noise", "prune")  # no training: independents get copies of these kinds too


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


def response_matrix(p_clean: torch.Tensor, p_adv: torch.Tensor) -> torch.Tensor:
    """A model's fingerprint as the encoder reads it: ``[points, 2 * classes]`` outputs, uniform subtracted."""
    uniform = 1.0 / p_clean.shape[1]
    return torch.cat([p_clean - uniform, p_adv - uniform], 1).float()


@dataclass(frozen=True)
class UAPParams(MethodParams):
    points: int = 50  # data points (k-means clusters of the owner's features): 2 * points queries per suspect
    eps: float = 0.1  # L-inf radius of the UAP, pixels in [0, 1]
    step_size: float | None = None  # of the UAP's signed ascent (null: eps / 4)
    uap_steps: int = 10  # passes of the ascent
    uap_inputs: int = 500  # owner's training inputs the UAP is computed on
    similarity: Literal["encoder", "cosine", "delta"] = "encoder"  # the paper's encoder, or a fixed similarity
    # The encoder's shadow pools (similarity: encoder only).
    pirates: tuple[str, ...] = ("noise",)  # kinds of pirated copies: noise, prune, finetune, distill
    noise_scales: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)  # one weight-noise copy per scale (x each layer's std)
    prune_fractions: tuple[float, ...] = (0.2, 0.4, 0.6)  # one magnitude-pruned copy per fraction
    trained_pirates: int = 2  # fine-tuned / distilled copies of the owner (other seeds), when those kinds are chosen
    finetune_steps: int = 50  # SGD steps (lr 0.01) of a fine-tuned copy on the owner's data
    n_independent: int = 4  # independent shadows: the owner's architecture trained from scratch, other seeds
    shadow_steps: int = 500  # training steps of an independent (the tiny zoo's roots: 500) or distilled shadow
    encoder_steps: int = 500
    temperature: float = 0.1  # of the contrastive loss

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.points >= 2, "points", f"need at least 2 data points, got {self.points}")
        require(0 < self.eps <= 1, "eps", f"the L-inf radius must be in (0, 1], got {self.eps}")
        require(self.step_size is None or self.step_size > 0, "step_size", f"must be > 0 or null, got {self.step_size}")
        require(self.uap_steps >= 1, "uap_steps", f"must be >= 1, got {self.uap_steps}")
        require(self.uap_inputs >= 1, "uap_inputs", f"must be >= 1, got {self.uap_inputs}")
        require(len(self.pirates) >= 1 and all(k in PIRATE_FAMILIES for k in self.pirates), "pirates",
                f"a non-empty list of {', '.join(PIRATE_FAMILIES)}, got {list(self.pirates)!r}")
        require(all(s > 0 for s in self.noise_scales), "noise_scales", f"must be > 0, got {list(self.noise_scales)}")
        require(all(0 < f < 1 for f in self.prune_fractions), "prune_fractions",
                f"each in (0, 1), got {list(self.prune_fractions)}")
        require(self.trained_pirates >= 1, "trained_pirates", f"must be >= 1, got {self.trained_pirates}")
        require(self.finetune_steps >= 1, "finetune_steps", f"must be >= 1, got {self.finetune_steps}")
        require(self.n_independent >= 1, "n_independent", "the encoder needs at least one independent shadow")
        require(self.shadow_steps >= 1, "shadow_steps", f"must be >= 1, got {self.shadow_steps}")
        require(self.encoder_steps >= 1, "encoder_steps", f"must be >= 1, got {self.encoder_steps}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


class UAP(Method):
    Params = UAPParams
    p: UAPParams
    access = "black-box probabilities"
    compares_outputs = True  # the fingerprint is the owner's output vectors
    version = "2"  # 2: the contrastive encoder (similarity: encoder) is the default

    def shadow_families(self) -> frozenset[str]:
        """The grid's transform families the encoder's pirated shadows were made like (none without encoder)."""
        if self.p.similarity != "encoder":
            return frozenset()
        return frozenset(PIRATE_FAMILIES[k] for k in self.p.pirates)

    # ------------------------------------------------------------------ shadows
    def _copies(self, model: nn.Module, owner: Subject, tag: str, *, cheap_only: bool) -> list[nn.Module]:
        """Pirated copies of ``model`` of the configured kinds (only the untrained kinds when ``cheap_only``)."""
        p, ctx = self.p, self.ctx
        common = {"device": ctx.device}
        trained = {"cache_dir": ctx.workdir, "progress": ctx.progress, **common}
        data = ctx.data.split("train_a")
        out: list[nn.Module] = []
        for kind in p.pirates:
            if kind == "noise":
                seeds = shadow_seeds(ctx.seed, f"uap-{tag}-noise", len(p.noise_scales))
                out += [pirated_shadow(model, owner.spec, "noise", seed=s, noise_scale=scale, **common)
                        for s, scale in zip(seeds, p.noise_scales, strict=True)]
            elif kind == "prune":
                out += [pirated_shadow(model, owner.spec, "prune", seed=0, prune_fraction=f, **common)
                        for f in p.prune_fractions]
            elif cheap_only:
                continue
            elif kind == "finetune":
                out += [pirated_shadow(model, owner.spec, "finetune", seed=s, data=data, steps=p.finetune_steps,
                                       **trained)
                        for s in shadow_seeds(ctx.seed, f"uap-{tag}-finetune", p.trained_pirates)]
            else:  # distill: model extraction from the owner's soft outputs
                out += [distilled_shadow(model, owner.spec, data, steps=p.shadow_steps, seed=s, **trained)
                        for s in shadow_seeds(ctx.seed, f"uap-{tag}-distill", p.trained_pirates)]
        return out

    def _shadow_pool(self, owner: Subject) -> tuple[list[nn.Module], torch.Tensor]:
        """Shadow models and their lineage (0: the owner and its pirated copies; k: independent k and its copies)."""
        p, ctx = self.p, self.ctx
        models = [owner.model, *self._copies(owner.model, owner, "owner", cheap_only=False)]
        lineage = [0] * len(models)
        data = ctx.data.split("train_a")
        seeds = shadow_seeds(ctx.seed, "uap-independent", p.n_independent)
        for k, seed in enumerate(seeds, start=1):
            indep = independent_shadow(owner.spec, data, steps=p.shadow_steps, seed=seed, device=ctx.device,
                                       cache_dir=ctx.workdir, progress=ctx.progress)
            family = [indep, *self._copies(indep, owner, f"independent{k}", cheap_only=True)]
            models += family
            lineage += [k] * len(family)
        return models, torch.tensor(lineage)

    # ------------------------------------------------------------------ fingerprint and score
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
        tensors = {"x": x.cpu(), "x_adv": x_adv.cpu(), "v": v.cpu(), "p": p_clean, "p_adv": p_adv}
        meta = {"fooling_rate": fooled, "num_classes": int(p_clean.shape[1])}
        if p.similarity == "encoder":
            enc_tensors, enc_meta = self._encoder(owner, x, x_adv)
            tensors.update(enc_tensors)
            meta.update(enc_meta)
        return Fingerprint(tensors=tensors, meta=meta)

    def _encoder(self, owner: Subject, x: torch.Tensor, x_adv: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        """Train the contrastive encoder on the shadow pool's fingerprints; its weights and the owner's embedding."""
        models, lineage = self._shadow_pool(owner)
        with torch.no_grad():
            fps = torch.stack([response_matrix(m.eval()(x).softmax(1).cpu(), m(x_adv).softmax(1).cpu())
                               for m in models])
        cfg = EncoderConfig(steps=self.p.encoder_steps, temperature=self.p.temperature)
        encoder, loss = train_encoder(fps, lineage, cfg, self.ctx.seed)
        with torch.no_grad():
            z = encode(encoder, fps)
        sims = z @ z[0]
        meta = {"shadows": len(models), "pirated_shadows": int((lineage == 0).sum()) - 1, "encoder_loss": loss,
                "train_pirate_sim": float(sims[1:][lineage[1:] == 0].mean()) if (lineage == 0).sum() > 1 else None,
                "train_independent_sim": float(sims[lineage != 0].mean())}
        tensors = {f"enc.{k}": t.detach().clone() for k, t in encoder.state_dict().items()}
        tensors["z_owner"] = z[0].clone()
        return tensors, meta

    def score(self, fp: Fingerprint, suspect: Subject) -> float:
        x = torch.cat([fp.tensors["x"], fp.tensors["x_adv"]]).to(suspect.device)
        out = suspect.probs(x).cpu()
        if out.shape[1] != fp.tensors["p"].shape[1]:
            raise NotApplicable(f"{self.name} compares output vectors: the suspect answers with {out.shape[1]} classes, "
                                f"the fingerprint holds {fp.tensors['p'].shape[1]}")
        n = fp.tensors["x"].shape[0]
        if self.p.similarity == "encoder":
            if "z_owner" not in fp.tensors:
                raise ConfigError(f"{self.name}: this fingerprint holds no encoder (made with another similarity)")
            with torch.no_grad():
                z = encode(encoder_from_state(fp.tensors), response_matrix(out[:n], out[n:])[None])[0]
            return float(z @ fp.tensors["z_owner"])
        sim = self.p.similarity
        mine = fingerprint_vector(out[:n], out[n:], sim)
        theirs = fingerprint_vector(fp.tensors["p"], fp.tensors["p_adv"], sim)
        return float(F.cosine_similarity(mine, theirs, dim=0))
