"""Typed parameters: a bad key, type or value fails at construction naming the field (and the fix); the
dataclass is the one home of defaults, so a default changed in code changes the resolved parameters and the
keys of exactly the children that rely on it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fpbench.api import ConfigError, MethodContext
from fpbench.registry import method_class, transform_class
from fpbench.zoo.build import Zoo, resolved_transform
from transforms.prune import Prune, PruneParams


def _method(name: str, params: dict, tmp_path: Path):
    ctx = MethodContext(data=None, device=torch.device("cpu"), seed=0, workdir=tmp_path)  # type: ignore[arg-type]
    return method_class(name)(params, ctx, name=name)


@pytest.mark.parametrize("kind,impl,params,message", [
    ("method", "sac", {"querys": 10}, "unknown parameter 'querys' of method 'sac'. Did you mean 'queries'?"),
    ("method", "cmf", {"extracter": "svd"}, "unknown parameter 'extracter' of method 'cmf'. Did you mean 'extractor'?"),
    ("transform", "prune", {"amount": 0.3, "recover_step": 5},
     "unknown parameter 'recover_step' of transform 'prune'. Did you mean 'recover_steps'?"),
])
def test_unknown_key_is_named_with_a_close_match(kind, impl, params, message):
    cls = method_class(impl) if kind == "method" else transform_class(impl)
    with pytest.raises(ConfigError) as err:
        cls.resolve_params(params, impl)
    assert message in str(err.value)
    assert "Valid parameters:" in str(err.value)


@pytest.mark.parametrize("params,field", [
    ({"threshold": "abc"}, "threshold"),
    ({"threshold": math.nan}, "threshold"),
    ({"threshold": math.inf}, "threshold"),
    ({"queries": 2.5}, "queries"),
    ({"queries": True}, "queries"),  # a bool is no count
    ({"query_budget": "50"}, "query_budget"),
])
def test_wrong_type_or_non_finite_value_names_the_field(params, field):
    with pytest.raises(ConfigError, match=f"invalid parameter '{field}'"):
        method_class("sac").resolve_params(params, "sac")


def test_an_int_is_accepted_where_a_float_is_declared():
    assert method_class("sac").resolve_params({"threshold": 1}, "sac")["threshold"] == 1.0


@pytest.mark.parametrize("impl,params,field", [
    ("sac", {"queries": 1}, "queries"),
    ("cae", {"queries": 50, "candidates": 10}, "candidates"),  # 10 x 4 rounds can never fill 50
    ("uap", {"eps": 1.5}, "eps"),
    ("ipguard", {"k": -1.0}, "k"),
    ("metafinger", {"pirates": ["finetune", "distill"]}, "pirates"),
    ("cmf", {"mode": "embedded", "extractor": "cka"}, "extractor"),
    ("cmf", {"extractor": "pca"}, "extractor"),
    ("cmf", {"query_budget": -1}, "query_budget"),
])
def test_a_method_range_error_names_the_field(impl, params, field, tmp_path):
    with pytest.raises(ConfigError, match=f"invalid parameter '{field}'.*method '{impl}'"):
        _method(impl, params, tmp_path)


@pytest.mark.parametrize("impl,params,field", [
    ("prune", {"amount": 1.0}, "amount"),
    ("prune", {"amount": 0.3, "recover_steps": -1}, "recover_steps"),
    ("prune", {"amount": 0.3, "recover_split": "train_a"}, "recover_split"),
    ("cmf_remove", {"noise": -1}, "noise"),
    ("partial", {"fraction": 0}, "fraction"),
    ("finetune", {"split": "train_a"}, "split"),
    ("finetune", {"steps": 0}, "steps"),
    ("removal", {"noise": -0.1}, "noise"),
    ("rescale", {"low": 2.0, "high": 1.0}, "high"),
    ("cmf_embed", {"dim": 4, "matrices": 8}, "matrices"),
])
def test_a_transform_range_error_names_the_field(impl, params, field):
    with pytest.raises(ConfigError, match=f"invalid parameter '{field}'.*transform '{impl}'"):
        transform_class(impl)(params, name=impl)


@pytest.mark.parametrize("impl,params,field,valid", [
    ("sac", {"variant": "x"}, "variant", ["'m'", "'w'"]),
    ("uap", {"similarity": "l2"}, "similarity", ["'cosine'", "'delta'"]),
    ("cmf", {"correspondence": "names"}, "correspondence", ["'name'", "'spectral'", "'auto'"]),
    ("cmf", {"extractor": "pca"}, "extractor", ["svd", "cka", "activation"]),
])
def test_a_choice_error_lists_the_valid_values(impl, params, field, valid):
    with pytest.raises(ConfigError, match=f"'{field}'") as err:
        method_class(impl).resolve_params(params, impl)
    for value in valid:
        assert value in str(err.value)


def test_behaviour_that_follows_a_parameter_is_computed_from_it(tmp_path):
    assert _method("cmf", {}, tmp_path).access == "white-box weights"
    assert _method("cmf", {"extractor": "cka"}, tmp_path).access == "white-box features"
    assert transform_class("prune")({"amount": 0.3}).cheap  # no recovery: stored as its recipe
    assert not transform_class("prune")({"amount": 0.3, "recover_steps": 10}).cheap  # trained: stored
    assert not transform_class("quantize")({"bits": 8, "backend": "bitsandbytes"}).cheap
    assert transform_class("quantize")({"bits": 6, "backend": "torchao"}).cheap


@dataclass(frozen=True, kw_only=True)
class UnstructuredByDefault(PruneParams):
    structured: bool = False


def test_a_default_changed_in_code_changes_the_keys_of_exactly_the_children_relying_on_it(
        ci_zoo, ci_zoo_cfg, ci_runs_dir, monkeypatch):
    relies = {"name": "prune20_default", "impl": "prune", "params": {"amount": 0.2}}
    explicit = {"name": "prune20_explicit", "impl": "prune", "params": {"amount": 0.2, "structured": True}}
    root = ci_zoo.roots()[0]
    before = {c["name"]: ci_zoo.child(root, c) for c in (relies, explicit)}
    cell_before = {n: resolved_transform(n) for n in ("prune30", "prune30_unstructured")}

    monkeypatch.setattr(Prune, "Params", UnstructuredByDefault)
    assert transform_class("prune").resolve_params(relies["params"], "p")["structured"] is False
    fresh = Zoo(ci_zoo_cfg, ci_runs_dir, torch.device("cpu"), seed=0, progress=False)  # nothing memoised
    fresh_root = fresh.roots()[0]
    assert fresh_root.key == root.key
    after = {c["name"]: fresh.child(fresh_root, c) for c in (relies, explicit)}
    assert after["prune20_default"].key != before["prune20_default"].key  # rebuilt under the new default
    assert after["prune20_default"].meta["info"]["structured"] is False
    assert after["prune20_explicit"].key == before["prune20_explicit"].key  # sets it itself: reused
    # the cell hashes follow too: prune30 relies on the default, prune30_unstructured sets it
    assert resolved_transform("prune30") != cell_before["prune30"]
    assert resolved_transform("prune30_unstructured") == cell_before["prune30_unstructured"]
