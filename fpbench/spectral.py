"""Singular-value math shared by the signature embedding, its verification and the attacks on it.

Ground floor: imports nothing of ours. A weight is seen as a matrix: a conv kernel [out, in, kh, kw]
is reshaped to out x (in*kh*kw), as the seed paper does for every "weight matrix".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def as_matrix(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1).float()


def top_singular_values(w: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest singular values of ``w`` as a matrix, zero-padded when its rank is below k.

    Computed as the square roots of the eigenvalues of the smaller Gram matrix in float64 rather than by
    ``torch.linalg.svdvals``: the same values to within 1e-5 relative (tested), about four times faster on a zoo's small
    matrices, and CMF verification makes one such call per weight matrix of every suspect.
    """
    a = as_matrix(w).detach().to(torch.float64)
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    try:
        s = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt()
    except torch.linalg.LinAlgError:  # LAPACK's eigh can fail to converge on a degenerate Gram matrix; SVD does not
        s = torch.linalg.svdvals(a)
    s = s.to(torch.float32).cpu()
    out = torch.zeros(k)
    out[: min(k, s.numel())] = s[:k]
    return out


def shift_singular_values(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``U (Σ + diag(delta)) Vᵀ`` reshaped like ``w``: adds ``delta`` to the leading singular values.

    ``delta`` may be shorter than the rank (the rest stay as they are). Computed in float64 so that the
    shift, which is tiny next to the singular values (α = 0.01), is not lost to rounding.
    """
    m = as_matrix(w).double()
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    n = min(delta.numel(), s.numel())
    s = s.clone()
    s[:n] += delta[:n].double()
    return ((u * s) @ vh).reshape(w.shape).to(w.dtype)


def rademacher(seed: int, n: int) -> torch.Tensor:
    """A ±1 vector drawn from ``seed`` (the embedded signature: every entry moves a σ by exactly α)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1


def match_one_to_one(
    owner: dict[str, torch.Tensor],
    suspect: dict[str, torch.Tensor],
    similarity: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
) -> dict[str, tuple[str, float]]:
    """Match the owner's units to the suspect's one-to-one, maximising the total similarity.

    The seed paper (eq. 6) pairs a parent's weight matrices with a child's by a spectral similarity; with
    top-k singular values as the units and cosine as the similarity (the default) this is that pairing.
    The assignment is the Hungarian algorithm's (scipy). Returns ``{owner unit: (suspect unit, similarity)}``.
    """
    if not owner or not suspect:
        return {}
    sim_fn = similarity or cosine
    o_names, s_names = list(owner), list(suspect)
    sim = np.array([[sim_fn(owner[a], suspect[b]) for b in s_names] for a in o_names], dtype=np.float64)
    rows, cols = linear_sum_assignment(-np.nan_to_num(sim, nan=-1.0))
    return {o_names[i]: (s_names[j], float(sim[i, j])) for i, j in zip(rows, cols, strict=True)}


def cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Cosine similarity of two vectors; 0 when either is zero (no evidence either way)."""
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    na, nb = a.norm(), b.norm()
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def matrix_layers(model: torch.nn.Module, include_head: bool = False) -> list[tuple[str, torch.nn.Module]]:
    """``(name, layer)`` of the Conv2d/Linear layers of ``model.trunk`` (names as in ``Subject.named_weights``
    without the ``.weight`` suffix); the classifier is left out unless ``include_head``."""
    trunk = model.trunk  # type: ignore[attr-defined]
    head = trunk.get_classifier() if hasattr(trunk, "get_classifier") and not include_head else None
    return [(n, m) for n, m in trunk.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m is not head]


def singular_directions(w: torch.Tensor, expected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left/right singular vectors ([m, n], [k, n]) of ``w`` whose singular values are ``expected`` (n values,
    in the caller's order, not necessarily sorted): each is paired with the nearest unused singular value, so a
    signature's index survives shifted values overtaking their neighbours."""
    u, s, vh = torch.linalg.svd(as_matrix(w).double(), full_matrices=False)
    free = list(range(s.numel()))
    cols = []
    for value in expected.double().tolist():
        j = min(free, key=lambda i: abs(float(s[i]) - value))
        free.remove(j)
        cols.append(j)
    return u[:, cols], vh[cols, :].T
