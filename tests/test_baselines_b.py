"""Baselines of part B (sac, sac_w, modeldiff, cka, cort, weightcos, agreement) on the ci zoo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fpbench.api import ConfigError, MethodContext
from fpbench.config import load_option
from fpbench.registry import method_class

NAMES = ["sac", "sac_w", "modeldiff", "cka", "cort", "weightcos", "agreement"]


def make(name: str, zoo, tmp: Path, **override):
    cfg = load_option("method", name)
    cls = method_class(cfg.get("impl", cfg["name"]))
    ctx = MethodContext(data=zoo.data, device=torch.device("cpu"), seed=0, workdir=tmp, progress=False)
    return cls({**cfg.get("params", {}), **override}, ctx)


@pytest.fixture(scope="module")
def trio(ci_zoo):
    """(owner, fine-tuned child, independent of the same architecture) as subjects."""
    roots = ci_zoo.roots()
    owner = roots[0]
    indep = next(r for r in roots if r.spec.arch == owner.spec.arch and r.id != owner.id)
    child = ci_zoo.child(owner, "finetune")
    return ci_zoo.subject(owner), ci_zoo.subject(child), ci_zoo.subject(indep)


@pytest.mark.parametrize("name", NAMES)
def test_child_scores_above_independent(name, ci_zoo, trio, tmp_path):
    owner, child, indep = trio
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
