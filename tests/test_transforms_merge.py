"""Merging: the soup is the average of two fine-tuned children, TIES keeps its density, every merge keeps the task."""

from __future__ import annotations

import copy

import pytest
import torch

from fpbench.api import ConfigError, TransformContext
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
