"""Calibrated thresholds: the verdict's threshold agrees with its p-value and holds its false-positive rate."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fpbench.thresholds import conformal_from_scores, empirical_p_value, from_records, from_scores


def test_decision_at_the_threshold_is_the_decision_of_the_p_value() -> None:
    rng = np.random.default_rng(0)
    for n in (5, 19, 20, 57, 200):
        null = rng.normal(size=n)
        for fpr in (0.01, 0.05, 0.1, 0.3):
            t = conformal_from_scores(null, fpr)
            assert t is not None and t.negatives == n
            for s in np.concatenate([null, rng.normal(size=50), [t.value]]):
                if math.isfinite(s):
                    assert (s >= t.value) == (empirical_p_value(s, null) <= fpr + 1e-12), (n, fpr, s)


def test_a_new_negative_is_accepted_at_most_at_the_target_rate() -> None:
    """Exchangeable negatives: over many draws the conformal threshold's FPR stays <= target; the quantile
    rule's does not at small n (its FPR is (floor(fpr n) + 1) / (n + 1))."""
    rng = np.random.default_rng(1)
    n, fpr, trials = 20, 0.05, 4000
    conformal = quantile = 0
    for _ in range(trials):
        draw = rng.normal(size=n + 1)
        null, new = draw[:n], draw[n]
        conformal += new >= conformal_from_scores(null, fpr).value
        quantile += new >= from_scores(null, fpr).value
    assert conformal / trials <= fpr + 0.01
    assert quantile / trials > 0.08  # 2/21 = 0.095: the reason verify uses the conformal rule


def test_too_few_negatives_can_declare_nothing() -> None:
    t = conformal_from_scores([0.1, 0.2, 0.3], 0.01)
    assert t is not None and t.value == math.inf and not t.supported


def test_a_threshold_counts_the_root_pairs_its_negatives_come_from() -> None:
    """A calibration root's children are not independent negatives: the threshold says how many owner/suspect
    root pairs its negatives span, beside how many negatives there are (NaN scores count for neither)."""
    rows = pd.DataFrame({"owner": ["a", "a", "a", "b", "b"],
                         "suspect": ["c1", "c1/prune10", "c1/quant8", "c1", "c2/finetune"],
                         "score": [0.1, 0.2, 0.15, 0.05, float("nan")], "status": "ok"})
    t = from_records(rows, 0.01)
    assert t is not None and t.negatives == 4 and t.root_pairs == 2


def test_negatives_from_few_root_pairs_count_as_few_independent_draws() -> None:
    """204 negatives from 20 root pairs whose children score alike (weightcos, cmf on tiny) are ~20 draws: such a
    threshold does not support a 1% FPR; the same number of negatives drawn independently does."""
    rng = np.random.default_rng(0)
    pair_level = np.repeat(rng.normal(size=20), 10)
    alike = pd.DataFrame({"owner": np.repeat([f"o{i}" for i in range(20)], 10),
                          "suspect": [f"c{i}/child{j}" for i in range(20) for j in range(10)],
                          "score": pair_level + 0.01 * rng.normal(size=200), "status": "ok"})
    t = from_records(alike, 0.01)
    assert t is not None and t.negatives == 200 and t.root_pairs == 20
    assert 19 <= t.effective_negatives <= 22 and not t.supported
    assert "~2" in t.describe() and "too few" in t.describe()
    independent = alike.assign(score=rng.normal(size=200))
    u = from_records(independent, 0.01)
    assert u is not None and u.effective_negatives > 150 and u.supported


def test_effective_sample_size_is_the_count_for_singletons_and_the_clusters_for_copies() -> None:
    from fpbench.metrics import effective_sample_size

    assert effective_sample_size([0.1, 0.5, 0.3], ["a", "b", "c"]) == 3
    assert math.isclose(effective_sample_size([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], list("aabbcc")), 3.0)
    assert math.isnan(effective_sample_size([float("nan")], ["a"]))
