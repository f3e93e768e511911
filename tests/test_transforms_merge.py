"""Merging: the soup is the average of two fine-tuned children, TIES keeps its density, every merge keeps the task."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from fpbench.api import ConfigError, NotApplicable, TransformContext
from fpbench.registry import transform_class


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_soup_is_the_average_of_the_two_children_and_keeps_the_task(ci_zoo):
    root = ci_zoo.roots()[0]
    parent = ci_zoo.load_module(root)
    Merge = transform_class("merge")
    merge = Merge({"combine": "soup", "steps": 20})
    ctx = TransformContext(data=ci_zoo.data, device=torch.device("cpu"), seed=3, progress=False)
    merged = merge.apply(copy.deepcopy(parent), root.spec, ctx).model
    # the two children the soup averages, made as the transform makes them
    from fpbench.train import train

    kids = []
    for i, split in enumerate(("train_b", "train_c")):
        kid = copy.deepcopy(parent)
        train(kid, ci_zoo.data.split(split), merge.p.train_config(), seed=3 + i, device=torch.device("cpu"),
              progress=False)
        kids.append(_flat(kid))
    assert torch.allclose(_flat(merged), (kids[0] + kids[1]) / 2, atol=1e-5)
    assert not torch.allclose(_flat(merged), _flat(parent))


def test_ties_trims_each_task_vector_and_the_merged_child_is_a_positive(ci_zoo):
    root = ci_zoo.roots()[0]
    child = ci_zoo.child(root, "merge_ties")
    parent, merged = _flat(ci_zoo.load_module(root)), _flat(ci_zoo.load_module(child))
    changed = (merged != parent).float().mean().item()
    assert 0.3 < changed < 0.8  # two task vectors trimmed to 50% each: their union, not every weight
    assert child.accuracy > root.accuracy - 0.15
    other = next(r for r in ci_zoo.roots() if r.arch == root.arch and r.id != root.id)
    indep = _flat(ci_zoo.load_module(other))
    cos = torch.nn.functional.cosine_similarity
    assert cos(merged, parent, dim=0) > cos(merged, indep, dim=0) + 0.2


@pytest.mark.parametrize("params,field", [({"combine": "mean"}, "combine"), ({"density": 0.0}, "density"),
                                          ({"second_split": "train_b"}, "second_split")])
def test_bad_merge_parameters_name_the_field(params, field):
    with pytest.raises(ConfigError, match=field):
        transform_class("merge")(params)


def test_weight_matching_aligns_a_permuted_copy_and_keeps_the_partner_function(ci_zoo):
    """A root whose hidden channels were shuffled is matched back onto the original: same weights, same outputs."""
    from transforms.merge import match_hidden_channels
    from transforms.permute import permutable_blocks, permute_hidden

    root = ci_zoo.roots()[0]
    model, shuffled = ci_zoo.load_module(root), ci_zoo.load_module(root)
    gen = torch.Generator().manual_seed(0)
    for b in permutable_blocks(shuffled):
        permute_hidden(b, torch.randperm(b.conv1.out_channels, generator=gen))
    x = ci_zoo.data.split("test").tensor(slice(0, 32), torch.device("cpu"))
    with torch.no_grad():
        out = shuffled(x)
    assert not torch.allclose(_flat(model), _flat(shuffled))
    assert match_hidden_channels(model, shuffled) == len(permutable_blocks(model))
    assert torch.allclose(_flat(model), _flat(shuffled))  # every shuffled channel found its original place
    with torch.no_grad():
        assert torch.allclose(shuffled(x), out, atol=1e-5)


def test_a_cross_root_merge_has_two_parents_and_is_a_positive_for_both_roots(ci_zoo):
    from fpbench.evaluate import Provenance, pair_label
    from fpbench.lineage.tracker import LineageTracker
    from fpbench.run import candidate, model_row

    first, second = [r for r in ci_zoo.roots() if r.arch == "resnet"]
    child = ci_zoo.child(first, {"name": "merge_cross_test", "impl": "merge_cross", "params": {"steps": 60}})
    assert child.partner_id == second.id and child.root_ids == (first.id, second.id)
    info = child.meta["info"]
    assert info["accuracy"] > info["accuracy_before_recovery"] and info["accuracy"] > 0.6  # recovered the task
    prov = Provenance("ci", "m", "merge_cross_test", "h", 0)
    suspect = candidate(ci_zoo, child)
    other_arch = next(r for r in ci_zoo.roots() if r.arch != "resnet")
    assert [pair_label(candidate(ci_zoo, r), suspect, prov) for r in (first, second, other_arch)] == [1, 1, 0]
    tracker = LineageTracker.from_zoo(ci_zoo, ids=[first.id, second.id, child.id])
    assert sorted(tracker.parents(child.id)) == [first.id, second.id]
    table = LineageTracker.from_models_table(pd.DataFrame([model_row(m) for m in (first, second, child)]))
    assert sorted(table.parents(child.id)) == [first.id, second.id]  # from the cell runner's records too
    # the partner is part of the child's identity: a calibration root's merge takes a calibration partner
    cal = ci_zoo.calibration_roots()[0]
    with pytest.raises(NotApplicable, match="second resnet root"):
        ci_zoo.child(cal, "merge_cross")


def test_cross_merge_rejects_a_partner_share_outside_0_1():
    with pytest.raises(ConfigError, match="weight"):
        transform_class("merge_cross")({"weight": 1.0})
