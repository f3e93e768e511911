"""Verification metrics from (label, score) pairs, and threshold calibration on held-out negatives.

NaN or infinite scores are never averaged in: they are counted (``invalid``) and excluded; a
decision on an invalid score is "not derived".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
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


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, target_fpr: float = 0.01) -> float:
    """Highest TPR whose FPR does not exceed ``target_fpr`` (ties broken conservatively)."""
    if labels.min() == labels.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= target_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half), equal to sklearn's roc_auc_score.

    Written with ranks rather than calling sklearn because the report bootstraps it thousands of times and
    sklearn's input validation dominated the whole report's runtime.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=float))
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def compute(labels: np.ndarray | list[int], scores: np.ndarray | list[float], threshold: float,
            target_fpr: float = 0.01) -> CellMetrics:
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    valid = np.isfinite(scores)
    decisions = np.where(valid, scores >= threshold, False)
    pos, neg = labels == 1, labels == 0
    lv, sv = labels[valid], scores[valid]
    return CellMetrics(
        pairs=int(labels.size),
        positives=int(pos.sum()),
        negatives=int(neg.sum()),
        invalid=int((~valid).sum()),
        accuracy=float((decisions == (labels == 1)).mean()) if labels.size else float("nan"),
        tpr=float(decisions[pos].mean()) if pos.any() else float("nan"),
        fpr=float(decisions[neg].mean()) if neg.any() else float("nan"),
        auc=auc(lv, sv),
        tpr_at_1fpr=tpr_at_fpr(lv, sv, target_fpr) if lv.size else float("nan"),
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
