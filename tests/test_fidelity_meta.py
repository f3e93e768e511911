"""MetaFinger and CAE as their authors wrote them (issue 15), and the shadow-leakage rule, on the ci zoo.

What a user relies on: MetaFinger keeps only queries that passed the screen on its validation pool (disjoint from
the meta-training pool); CAE keeps only examples adversarial for the owner and conferrable above its cut-off;
by default neither trains on shadows made by a grid transform it is scored against, and each declares the
transform families its shadows did see, which a cell's transform config maps onto.
"""

from __future__ import annotations

import pytest
import torch
from test_baselines_meta_cae import SMALL, make
from torch import nn

from baselines.cae import hard_conferrability
from baselines.metafinger import passes_screen
from fpbench.config import list_options, load_option
from fpbench.shadows import module_digest, transform_families


@pytest.fixture(scope="module")
def built(ci_zoo, trio, tmp_path_factory):
    """Per method: the method, the owner's fingerprint and the method's scratch dir (its shadows cached there)."""
    out = {}
    for name in SMALL:
        work = tmp_path_factory.mktemp(f"fid-{name}")
        m = make(name, ci_zoo, work)
        out[name] = (m, m.fingerprint(trio[0]))
    return out


def _sparsity(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return float(sum((w == 0).sum() for w in weights) / sum(w.numel() for w in weights))


def test_metafinger_keeps_no_query_that_failed_its_validation_screen(built, trio):
    m, fp = built["metafinger"]
    pools = m.pools(trio[0])  # the same shadows (cached in the method's scratch dir)
    x, y = fp.tensors["x"], fp.tensors["y"]
    assert pools.val_pirates and pools.val_independents
    assert bool(passes_screen(x, y, pools.val_pirates, pools.val_independents).all())
    with torch.no_grad():
        assert torch.equal(trio[0].model(x).argmax(1), y)  # the labels are the owner's own answers
    # The validation pool is disjoint from the meta-training pool: no shadow is in both.
    train = {module_digest(s) for s in pools.train_pirates + pools.train_independents}
    assert not train & {module_digest(s) for s in pools.val_pirates + pools.val_independents}
    # The screen did reject candidates: without it the fingerprint would be the first `queries` candidates.
    assert fp.meta["passed_per_round"][0] < SMALL["metafinger"]["candidates"]


def test_metafinger_holds_prune_and_noise_pirates_out_by_default(built, trio, ci_zoo, tmp_path):
    m, fp = built["metafinger"]
    assert m.shadow_families() == frozenset({"finetune"})
    assert fp.meta["shadow_families"] == ["finetune"]
    pools = m.pools(trio[0])
    # No pruned shadow anywhere (a 30% magnitude prune leaves >= 29% zeros; trained models have almost none).
    assert max(_sparsity(s) for pool in vars(pools).values() for s in pool) < 0.05
    paper = make("metafinger", ci_zoo, tmp_path, pirates=["finetune", "prune", "noise"])
    assert paper.shadow_families() == frozenset({"finetune", "prune_unstructured", "removal"})


def test_cae_keeps_no_non_adversarial_or_unconferrable_example(built, trio):
    m, fp = built["cae"]
    x, t, y0 = fp.tensors["x"], fp.tensors["y"], fp.tensors["y_natural"]
    with torch.no_grad():
        assert torch.equal(trio[0].model(x).argmax(1), t)  # the target label is the owner's label on x'
    assert bool((t != y0).all())  # adversarial for the owner: the label moved away from the natural input's
    surrogates, references = m.ensemble(trio[0])
    assert bool((hard_conferrability(x, t, surrogates, references) >= m.p.min_conferrability).all())


def test_cae_surrogates_are_not_distilled_by_default(built, ci_zoo, tmp_path):
    m, fp = built["cae"]
    assert m.shadow_families() == frozenset({"finetune"})
    assert fp.meta["shadow_families"] == ["finetune"]
    assert make("cae", ci_zoo, tmp_path, surrogates="distill").shadow_families() == frozenset({"distill"})


@pytest.mark.parametrize("transform,families", [
    ("prune30_unstructured", {"prune_unstructured"}),
    ("prune30", {"prune_structured"}),
    ("removal", {"removal"}),
    ("distill", {"distill"}),
    ("distill_cross", {"distill"}),
    ("finetune_lastlayer", {"finetune"}),
    ("chain", {"finetune", "prune_structured", "quantize"}),
    ("quant8", {"quantize"}),
    ("merge_ties", {"merge", "finetune"}),
    ("merge_cross", {"merge", "finetune"}),
])
def test_a_transform_config_maps_to_its_families(transform, families):
    assert transform_families(load_option("transform", transform)) == frozenset(families)


def test_every_transform_yaml_has_a_family():
    for name in list_options("transform"):
        assert transform_families(load_option("transform", name)), name


MERGES = {"merge_soup", "merge_task_arithmetic", "merge_ties", "merge_dare", "merge_cross"}  # fine-tuned inside


@pytest.mark.parametrize("method,params,seen", [
    ("metafinger", {}, {"finetune", "finetune_lastlayer", "chain", *MERGES}),
    ("metafinger", {"pirates": ["finetune", "prune", "noise"]},
     {"finetune", "finetune_lastlayer", "chain", "prune30_unstructured", "removal", *MERGES}),
    ("cae", {}, {"finetune", "finetune_lastlayer", "chain", *MERGES}),
    ("cae", {"surrogates": "distill"}, {"distill", "distill_cross"}),
])
def test_the_cells_a_method_saw_in_training(method, params, seen, ci_zoo, tmp_path):
    """A cell is marked when its transform's families meet the method's shadow families (the grid's cells)."""
    grid = load_option("experiment", "full")["hydra"]["sweeper"]["params"]["transform"].split(",")
    m = make(method, ci_zoo, tmp_path, **params)
    marked = {t for t in grid if transform_families(load_option("transform", t)) & m.shadow_families()}
    assert marked == seen
