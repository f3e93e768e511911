"""Verification metrics from (label, score) pairs, and threshold calibration on held-out negatives.

NaN or infinite scores are never averaged in: they are counted (``invalid``) and excluded; a
decision on an invalid score is "not derived". Every function here accepts empty input, all-invalid scores
and a single class, and answers NaN where a number is undefined: a broken cell must never crash a report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_curve


@dataclass
class CellMetrics:
    pairs: int
    positives: int
    negatives: int
    invalid: int
    accuracy: float
    tpr: float
    fpr: float
    auc: float
    tpr_at_1fpr: float
    mean_score: float
    mean_score_pos: float
    mean_score_neg: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _safe_mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def valid_pairs(labels: np.ndarray | list[int], scores: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The (labels, scores) whose score is finite and whose label is 0 or 1 (status rows carry label -1)."""
    labels = np.asarray(labels, dtype=int).reshape(-1)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    keep = np.isfinite(scores) & ((labels == 0) | (labels == 1))
    return labels[keep], scores[keep]


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and labels.min() != labels.max()


def tpr_at_fpr(labels: np.ndarray | list[int], scores: np.ndarray | list[float], target_fpr: float = 0.01) -> float:
    """Highest TPR whose FPR does not exceed ``target_fpr`` (ties broken conservatively); NaN without both
    classes among the valid pairs."""
    labels, scores = valid_pairs(labels, scores)
    if not _both_classes(labels):
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= target_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def auc(labels: np.ndarray | list[int], scores: np.ndarray | list[float]) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half), equal to sklearn's roc_auc_score.

    Written with ranks rather than calling sklearn because the report bootstraps it thousands of times and
    sklearn's input validation dominated the whole report's runtime.
    """
    labels, scores = valid_pairs(labels, scores)
    if not _both_classes(labels):
        return float("nan")
    ranks = rankdata(scores)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_ci(labels: np.ndarray | list[int], scores: np.ndarray | list[float],
                 stat: Callable[[np.ndarray, np.ndarray], float], n: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``stat`` over the valid pairs; (NaN, NaN) when it is undefined."""
    labels, scores = valid_pairs(labels, scores)
    if not _both_classes(labels):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = [v for _ in range(n) if np.isfinite(v := stat(*_resample(rng, labels, scores)))]
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def owner_bootstrap_ci(clusters: np.ndarray | pd.Series, stat: Callable[..., float], *columns: np.ndarray,
                       n: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``stat(*columns)`` resampling whole clusters (owners) with replacement.

    Pairs of one owner share its fingerprint, so they are not independent draws: resampling pairs one by one
    gives intervals that are too narrow. (NaN, NaN) when the statistic is undefined in every resample."""
    groups = list(pd.Series(np.asarray(clusters)).groupby(np.asarray(clusters), sort=True).indices.values())
    if not groups:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        v = stat(*(np.asarray(c)[idx] for c in columns))
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def binomial_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of a rate of k events in n trials; (NaN, NaN) when n == 0."""
    from scipy.stats import beta

    if n <= 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def quantile_rule_fpr(target_fpr: float, n: int) -> float:
    """The FPR the quantile rule of ``calibrate_threshold`` guarantees on a fresh exchangeable negative:
    (floor(target * n) + 1) / (n + 1) -- above the target when n is small (with 21 negatives and 1%, 1/22)."""
    return (math.floor(target_fpr * n + 1e-9) + 1) / (n + 1) if n > 0 else float("nan")


def effective_sample_size(scores: np.ndarray | list[float], clusters: np.ndarray | list[str] | pd.Series) -> float:
    """Kish's effective number of independent draws in clustered scores: ``n / (1 + (m - 1) * ICC)``, with the
    intra-cluster correlation from the one-way ANOVA estimator (clipped to [0, 1]) and ``m = sum(m_i^2) / n``, the
    size-weighted mean cluster size. Near n when clusters explain nothing, near the number of clusters when members
    score alike (a calibration root's children against one owner). Written here: scipy/statsmodels offer ICC only
    for rater designs. NaN when there are no finite scores."""
    s = np.asarray(scores, dtype=float)
    c = np.asarray(clusters).astype(str)
    keep = np.isfinite(s)
    s, c = s[keep], c[keep]
    n = s.size
    if n == 0:
        return float("nan")
    groups = pd.Series(s).groupby(c)
    k, sizes = groups.ngroups, groups.size().to_numpy(dtype=float)
    if k <= 1 or k == n:
        return float(k if k <= 1 else n)
    means = groups.mean().to_numpy()
    msb = float((sizes * (means - s.mean()) ** 2).sum() / (k - 1))
    msw = float(((s - groups.transform("mean").to_numpy()) ** 2).sum() / (n - k))
    m0 = (n - (sizes ** 2).sum() / n) / (k - 1)  # the ANOVA estimator's adjusted cluster size
    denom = msb + (m0 - 1) * msw
    icc = 1.0 if denom <= 0 else float(np.clip((msb - msw) / denom, 0.0, 1.0))
    m = float((sizes ** 2).sum() / n)
    return float(n / (1 + (m - 1) * icc))


def _resample(rng: np.random.Generator, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.integers(0, labels.size, labels.size)
    return labels[idx], scores[idx]


def compute(labels: np.ndarray | list[int], scores: np.ndarray | list[float], threshold: float,
            target_fpr: float = 0.01) -> CellMetrics:
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    valid = np.isfinite(scores)
    decisions = np.where(valid, scores >= threshold, False)
    pos, neg = labels == 1, labels == 0
    lv, sv = labels[valid], scores[valid]
    if labels.size and not valid.any():  # nothing was measured: no accuracy to report, only the invalid count
        decisions = np.full(labels.size, np.nan)
    return CellMetrics(
        pairs=int(labels.size),
        positives=int(pos.sum()),
        negatives=int(neg.sum()),
        invalid=int((~valid).sum()),
        accuracy=float((decisions == (labels == 1)).mean()) if valid.any() else float("nan"),
        tpr=float(decisions[pos].mean()) if pos.any() else float("nan"),
        fpr=float(decisions[neg].mean()) if neg.any() else float("nan"),
        auc=auc(lv, sv),
        tpr_at_1fpr=tpr_at_fpr(lv, sv, target_fpr),
        mean_score=_safe_mean(sv),
        mean_score_pos=_safe_mean(scores[valid & pos]),
        mean_score_neg=_safe_mean(scores[valid & neg]),
    )


def calibrate_threshold(negative_scores: np.ndarray | list[float], target_fpr: float = 0.01) -> float:
    """Smallest threshold whose FPR on these held-out negatives is <= ``target_fpr``.

    With n negatives the finest achievable FPR is 1/n; when ``target_fpr < 1/n`` this returns the
    threshold just above the largest negative (FPR 0 on the calibration set).
    """
    s = np.sort(np.asarray([v for v in negative_scores if math.isfinite(v)], dtype=float))
    if s.size == 0:
        return float("nan")
    allowed = int(math.floor(target_fpr * s.size + 1e-9))  # negatives allowed at or above the threshold
    pivot = s[s.size - 1 - allowed]
    return float(np.nextafter(pivot, np.inf))
