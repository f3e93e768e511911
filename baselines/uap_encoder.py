"""The contrastive fingerprint encoder of UAP fingerprinting (Peng et al., CVPR 2022, Section 4), used only by
``baselines/uap.py``.

A model's UAP fingerprint (its outputs on the data points and on their UAP versions, ``[points, 2 * classes]``)
is mapped by a small MLP to a unit vector; the encoder is trained so that fingerprints of one lineage (a model
and the copies derived from it) lie close together and fingerprints of different lineages far apart. The loss
is the supervised contrastive loss (Khosla et al., NeurIPS 2020) over two augmented views of every shadow
fingerprint: a view drops a random fraction of the data points (zeroes their outputs) and adds Gaussian noise,
so the encoder cannot rest on one point. The paper trains its encoder contrastively on pirated vs independent
fingerprints; the architecture, augmentations, loss form and optimiser here are ours (the paper's code is not
public).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def build_encoder(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The encoder's module (its state dict names are what a fingerprint stores)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def encode(encoder: nn.Module, fingerprints: torch.Tensor) -> torch.Tensor:
    """Unit embeddings of fingerprints ``[M, points, 2 * classes]``."""
    return F.normalize(encoder(fingerprints.flatten(1)), dim=1)


def supervised_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al.'s SupCon loss over unit embeddings ``z`` [N, d]: every other sample of the same label is a
    positive of an anchor, every sample but the anchor is in its denominator (anchors without positives skip)."""
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positive.sum(1)
    has = count > 0
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1)[has] / count[has]
    return -mean_log_prob.mean()


def augment(fingerprints: torch.Tensor, drop: float, noise: float, generator: torch.Generator) -> torch.Tensor:
    """One view: each data point's outputs zeroed with probability ``drop``, plus Gaussian noise of std ``noise``."""
    m, n, _ = fingerprints.shape
    keep = (torch.rand((m, n, 1), generator=generator) >= drop).to(fingerprints.dtype)
    return fingerprints * keep + noise * torch.randn(fingerprints.shape, generator=generator)


@dataclass(frozen=True)
class EncoderConfig:
    hidden: int = 256
    dim: int = 64
    steps: int = 500
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    drop: float = 0.2
    noise: float = 0.02


def train_encoder(fingerprints: torch.Tensor, lineage: torch.Tensor, cfg: EncoderConfig,
                  seed: int) -> tuple[nn.Sequential, float]:
    """Train an encoder on shadow fingerprints ``[M, points, 2 * classes]`` labelled by ``lineage`` [M] (CPU,
    seeded: the same inputs give the same weights); returns it in eval mode and the last loss."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(seed)
        encoder = build_encoder(fingerprints[0].numel(), cfg.hidden, cfg.dim)
    opt = torch.optim.Adam(encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels = torch.cat([lineage, lineage])
    loss = torch.zeros(())
    for _ in range(cfg.steps):
        views = torch.cat([augment(fingerprints, cfg.drop, cfg.noise, g), augment(fingerprints, cfg.drop, cfg.noise, g)])
        loss = supervised_contrastive_loss(encode(encoder, views), labels, cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return encoder.eval(), float(loss.detach())


def encoder_from_state(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """Rebuild a trained encoder from the tensors a fingerprint stores (``enc.<name>``)."""
    w0, w2 = state["enc.0.weight"], state["enc.2.weight"]
    encoder = build_encoder(w0.shape[1], w0.shape[0], w2.shape[0])
    encoder.load_state_dict({k[len("enc."):]: v for k, v in state.items() if k.startswith("enc.")}, strict=True)
    return encoder.eval()
