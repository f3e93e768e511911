"""Shared math, written once: linear CKA, PGD, correlation matrices, cosine helpers.

Ground floor: every method and transform that needs these calls them here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def center_gram(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype, device=k.device) - 1.0 / n
    return h @ k @ h


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same n inputs: [n, d1], [n, d2]."""
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = (y.T @ x).norm() ** 2
    denom = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / denom) if denom > 0 else 0.0


def correlation_matrix(outputs: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity between the rows of ``outputs`` ([n, d] -> [n, n])."""
    z = F.normalize(outputs.reshape(outputs.shape[0], -1).double(), dim=1)
    return z @ z.T


def pgd_attack(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    targeted: bool = False,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    norm: str = "linf",
) -> torch.Tensor:
    """Projected gradient descent in pixel space [0, 1] (Madry et al. 2018).

    Untargeted: maximise the loss of ``y``; targeted: minimise the loss of target ``y``.
    """
    if eps < 0 or steps < 0 or step_size < 0:
        raise ValueError("pgd_attack: eps, step_size and steps must be >= 0")
    x0 = x.detach()
    if random_start and eps > 0:
        noise = torch.rand(x0.shape, generator=generator, device="cpu").to(x0.device) * 2 - 1
        adv = (x0 + eps * noise).clamp(0, 1)
    else:
        adv = x0.clone()
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            if norm == "linf":
                adv = adv + sign * step_size * grad.sign()
                adv = torch.min(torch.max(adv, x0 - eps), x0 + eps)
            else:
                g = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))
                adv = adv + sign * step_size * g
                delta = adv - x0
                factor = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                adv = x0 + delta * factor.view(-1, *[1] * (delta.ndim - 1))
            adv = adv.clamp(0, 1)
    return adv.detach()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge-distillation loss (Hinton et al. 2015): KL(teacher_T || student_T) * T^2 on softmax(logits / T)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    log_target=True, reduction="batchmean") * (t * t)


def universal_perturbation(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One input-agnostic L-inf perturbation ``v`` ([1, C, H, W], ``|v| <= eps``) that fools ``model`` on ``x``.

    Gradient-based universal adversarial perturbation: signed ascent on the mean cross-entropy of the labels
    ``y`` over shuffled mini-batches of ``x``, projected onto the eps ball, images kept in [0, 1]. This is the
    usual PGD simplification of Moosavi-Dezfooli et al.'s (CVPR 2017) DeepFool-based iteration: the same
    object (one perturbation for the whole distribution), found by a cheaper, batched search.
    """
    if eps < 0 or steps < 0 or step_size < 0 or batch_size < 1:
        raise ValueError("universal_perturbation: eps, step_size, steps must be >= 0 and batch_size >= 1")
    x = x.detach()
    v = torch.zeros((1, *x.shape[1:]), device=x.device)
    for _ in range(steps):
        order = torch.randperm(x.shape[0], generator=generator).to(x.device)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            v.requires_grad_(True)
            loss = F.cross_entropy(model((x[idx] + v).clamp(0, 1)), y[idx])
            (grad,) = torch.autograd.grad(loss, v)
            with torch.no_grad():
                v = (v + step_size * grad.sign()).clamp(-eps, eps)
    return v.detach()
