"""MetaFinger and CAE (shadow-model baselines) and their shared shadow helpers, on the ci zoo.

Small settings (few shadows, few steps) keep these to about a minute of CPU; the configs' defaults are larger.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from config_helpers import resolved_params
from method_helpers import make_method
from torch import nn

from fpbench.api import ConfigError, NotApplicable
from fpbench.shadows import independent_shadow, module_digest, pirated_shadow
from fpbench.subject import ModelSubject

SMALL = {
    # 40-step independent shadows are too weak to stand for the real independents (which then agree on every
    # query); 150 steps is the least that separated them on the ci zoo (its roots train 120 steps).
    "metafinger": {"queries": 20, "candidates": 40, "epochs": 8, "n_independent": 3, "shadow_steps": 150,
                   "finetune_steps": 20},
    "cae": {"queries": 30, "candidates": 60, "steps": 20, "n_surrogates": 2, "n_references": 2, "shadow_steps": 150,
            "finetune_steps": 20},
}


def make(name: str, zoo, workdir: Path, **override):
    return make_method(name, zoo, workdir, SMALL[name], override)


@pytest.fixture(scope="module")
def fingerprints(ci_zoo, trio, tmp_path_factory):
    """One fingerprint per method (built once for the module) and the method that made it."""
    out = {}
    for name in SMALL:
        m = make(name, ci_zoo, tmp_path_factory.mktemp(name))
        out[name] = (m, m.fingerprint(trio[0]))
    return out


@pytest.mark.parametrize("name", list(SMALL))
def test_child_scores_above_independent(name, trio, fingerprints):
    owner, child, indep = trio
    m, fp = fingerprints[name]
    s_owner, s_child, s_indep = m.score(fp, owner), m.score(fp, child), m.score(fp, indep)
    assert s_owner == 1.0  # the fingerprint's labels are the owner's own answers
    assert s_child > s_indep, (name, s_child, s_indep)


@pytest.mark.parametrize("name", list(SMALL))
def test_fingerprint_deterministic_from_scratch(name, ci_zoo, trio, fingerprints, tmp_path):
    """A fresh scratch dir retrains every shadow: same seed -> the same fingerprint, bit for bit."""
    again = make(name, ci_zoo, tmp_path).fingerprint(trio[0])
    fp = fingerprints[name][1]
    assert fp.tensors.keys() == again.tensors.keys()
    for k in fp.tensors:
        assert torch.equal(fp.tensors[k], again.tensors[k]), k


@pytest.mark.parametrize("name", list(SMALL))
def test_query_budget_is_what_score_sends(name, trio, fingerprints):
    _, child, _ = trio
    m, fp = fingerprints[name]
    n = len(fp.tensors["x"])
    assert 1 <= n <= SMALL[name]["queries"]  # rounds stop once `queries` passed; fewer if the rounds ran out
    before = child.query_count
    m.score(fp, child)
    assert child.query_count - before == n
    params = resolved_params("method", name)
    assert params["query_budget"] == params["queries"]  # the config declares exactly what score() sends


@pytest.mark.parametrize("name", list(SMALL))
def test_other_class_count_not_applicable(name, trio, fingerprints):
    owner, child, _ = trio
    m, _ = fingerprints[name]
    spec = dataclasses.replace(child.spec, num_classes=5, class_names=child.spec.class_names[:5])
    other = ModelSubject("five-classes", nn.Identity(), spec, torch.device("cpu"))
    with pytest.raises(NotApplicable, match="5 classes"):
        m.check_applicable(owner, other)
    m.check_applicable(owner, child)  # same class count: applicable


def test_bad_params_named(ci_zoo, tmp_path):
    with pytest.raises(ConfigError, match="eps"):
        make("cae", ci_zoo, tmp_path, eps=0)
    with pytest.raises(ConfigError, match="pirates"):
        make("metafinger", ci_zoo, tmp_path, pirates=["steal"])
    with pytest.raises(ConfigError, match="candidates"):
        make("metafinger", ci_zoo, tmp_path, candidates=2, queries=10)  # 2 x 4 rounds < 10


def test_pirated_shadows_modify_a_copy(trio):
    owner = trio[0]
    before = module_digest(owner.model)
    pruned = pirated_shadow(owner.model, owner.spec, "prune", seed=0, device=torch.device("cpu"), prune_fraction=0.3)
    for m in pruned.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() >= 100:
            assert (m.weight == 0).float().mean() >= 0.29
    noisy = pirated_shadow(owner.model, owner.spec, "noise", seed=0, device=torch.device("cpu"))
    assert module_digest(noisy) != before
    assert module_digest(owner.model) == before  # the owner itself is never touched


def test_independent_shadow_cached_and_seeded(ci_zoo, trio, tmp_path):
    owner = trio[0]
    data = ci_zoo.data.split("train_a")
    kw = {"steps": 5, "device": torch.device("cpu"), "cache_dir": tmp_path}
    a = independent_shadow(owner.spec, data, seed=7, **kw)
    files = list((tmp_path / "shadows").glob("*/*/weights.safetensors"))  # the checksummed store
    assert len(files) == 1
    b = independent_shadow(owner.spec, data, seed=7, **kw)  # loaded from the cache, not retrained
    assert module_digest(a) == module_digest(b)
    assert list((tmp_path / "shadows").glob("*/*/weights.safetensors")) == files
    c = independent_shadow(copy.deepcopy(owner.spec), data, seed=8, **kw)
    assert module_digest(c) != module_digest(a)
