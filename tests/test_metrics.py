"""Metrics on hand-computed examples; calibration never looks at scored pairs."""

from __future__ import annotations

import math

import numpy as np

from fpbench.metrics import calibrate_threshold, compute, tpr_at_fpr


def test_hand_computed_cell() -> None:
    labels = [1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.8, 0.2, 0.1, 0.3, 0.85]
    m = compute(labels, scores, threshold=0.5)
    assert m.tpr == 2 / 3 and m.fpr == 1 / 3
    assert math.isclose(m.accuracy, 4 / 6)
    # AUC: of 9 (pos, neg) pairs the positive wins 6 (0.9>all 3, 0.8>0.1,0.3, 0.2>0.1)
    assert math.isclose(m.auc, 6 / 9)
    assert math.isclose(m.mean_score, np.mean(scores))


def test_tpr_at_1pct_fpr_is_conservative() -> None:
    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.5, 0.6, 0.1, 0.2])
    assert tpr_at_fpr(labels, scores, 0.01) == 0.5  # only 0.9 is above every negative


def test_nan_scores_are_counted_not_averaged() -> None:
    m = compute([1, 0, 0], [float("nan"), 0.2, float("inf")], threshold=0.5)
    assert m.invalid == 2
    assert m.mean_score == 0.2
    assert m.tpr == 0.0  # an invalid score never verifies


def test_calibration_reaches_target_fpr_on_its_own_negatives() -> None:
    rng = np.random.default_rng(0)
    neg = rng.normal(size=1000)
    t = calibrate_threshold(neg, 0.01)
    assert (neg >= t).mean() <= 0.01
    assert (neg >= t).mean() >= 0.009
    # fewer negatives than 1/target: the threshold sits just above the largest one
    small = [0.1, 0.4, 0.3]
    t_small = calibrate_threshold(small, 0.01)
    assert t_small > 0.4 and t_small - 0.4 < 1e-9


def test_rank_auc_equals_sklearn_with_ties() -> None:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from fpbench.metrics import auc

    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 40)
        labels[:2] = [0, 1]
        scores = rng.integers(0, 6, 40).astype(float)  # many ties
        assert abs(auc(labels, scores) - roc_auc_score(labels, scores)) < 1e-12


def test_owner_clustered_interval_is_wider_than_the_pairwise_one_when_owners_differ():
    """Pairs of one owner move together: resampling owners must show that spread, resampling pairs hides it."""
    import pandas as pd

    from fpbench import metrics as M

    rng = np.random.default_rng(0)
    rows = []
    for owner in range(6):
        shift = 0.6 if owner % 2 else 0.0  # half the owners separate well, half do not
        rows += [{"owner": owner, "label": 1, "score": shift + rng.normal(0.5, 0.05)} for _ in range(20)]
        rows += [{"owner": owner, "label": 0, "score": rng.normal(0.5, 0.05)} for _ in range(20)]
    frame = pd.DataFrame(rows)

    lo_c, hi_c = M.owner_bootstrap_ci(frame["owner"], M.auc, frame["label"].to_numpy(), frame["score"].to_numpy(),
                                      n=200)
    lo_p, hi_p = M.bootstrap_ci(frame["label"], frame["score"], M.auc, n=200)
    assert hi_c - lo_c > 1.5 * (hi_p - lo_p)


def test_binomial_interval_and_the_quantile_rule_guarantee():
    from fpbench import metrics as M

    lo, hi = M.binomial_ci(0, 42)
    assert lo == 0.0 and abs(hi - (1 - 0.025 ** (1 / 42))) < 1e-9  # the exact upper bound of 0 events in 42
    lo, hi = M.binomial_ci(3, 100)
    assert 0.006 < lo < 0.007 and 0.085 < hi < 0.086
    assert M.quantile_rule_fpr(0.01, 21) == 1 / 22  # 21 negatives cannot support 1%
    assert M.quantile_rule_fpr(0.01, 220) == 3 / 221
