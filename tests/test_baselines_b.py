"""Baselines of part B (sac, sac_w, modeldiff, cka, cort, weightcos, agreement) on the ci zoo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from method_helpers import make_method

from fpbench.api import ConfigError

NAMES = ["sac", "sac_w", "modeldiff", "cka", "cort", "weightcos", "agreement"]


def make(name: str, zoo, workdir: Path, **override):
    return make_method(name, zoo, workdir, override)


# ModelDiff compares decision-distance profiles. On the ci zoo a full fine-tune (150 steps on train_b) of the
# 120-step owner (accuracy 0.92 -> 0.94) reshapes its boundaries as much as another seed does: child 0.58-0.59 vs
# independent 0.59-0.61 over four method seeds (measured 2026-12-02). The method is not at fault there: a last-layer
# fine-tune scores 0.96 vs 0.61, and on the tiny zoo (500-step owners) ModelDiff separates full fine-tunes perfectly
# (finetune cell AUC 1.000, baselines/METHODS.md). So on ci it is held to the child it should recognise.
CHILD = {"modeldiff": "finetune_lastlayer"}


@pytest.mark.parametrize("name", NAMES)
def test_child_scores_above_independent(name, ci_zoo, trio, tmp_path):
    owner, child, indep = trio
    if name in CHILD:
        child = ci_zoo.subject(ci_zoo.child(ci_zoo.roots()[0], CHILD[name]))
    m = make(name, ci_zoo, tmp_path)
    fp = m.fingerprint(owner)
    s_child, s_indep = m.score(fp, child), m.score(fp, indep)
    assert s_child > s_indep, (name, s_child, s_indep)
    assert m.score(fp, owner) >= s_child - 1e-6  # the owner itself is the most similar


@pytest.mark.parametrize("name", ["sac", "sac_w", "modeldiff", "cort"])
def test_fingerprint_deterministic(name, ci_zoo, trio, tmp_path):
    owner = trio[0]
    a = make(name, ci_zoo, tmp_path).fingerprint(owner)
    b = make(name, ci_zoo, tmp_path).fingerprint(owner)
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k


@pytest.mark.parametrize(("name", "budget", "expected"), [
    ("sac", {"queries": 17}, 17), ("modeldiff", {"pairs": 9}, 18), ("agreement", {"queries": 23}, 23),
])
def test_query_budget_honoured(name, budget, expected, ci_zoo, trio, tmp_path):
    owner, child, _ = trio
    m = make(name, ci_zoo, tmp_path, **budget)
    fp = m.fingerprint(owner)
    before = child.query_count
    m.score(fp, child)
    assert child.query_count - before == expected


def test_bad_params_named(ci_zoo, tmp_path):
    with pytest.raises(ConfigError, match="variant"):
        make("sac", ci_zoo, tmp_path, variant="x")
    with pytest.raises(ConfigError, match="eps"):
        make("modeldiff", ci_zoo, tmp_path, eps=0)
