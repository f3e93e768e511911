"""The transforms do what their names claim, measured on the ci zoo's real children."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fpbench.api import ConfigError
from fpbench.registry import transform_class
from transforms.prune import prunable_layers


def _root(ci_zoo):
    return ci_zoo.roots()[0]


def test_prune30_zeroes_30_percent_of_channels_of_every_pruned_layer(ci_zoo):
    child = ci_zoo.child(_root(ci_zoo), "prune30")
    model = ci_zoo.load_module(child)
    for name, layer in prunable_layers(model):
        rows = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        dead = int((rows.abs().sum(dim=1) == 0).sum())
        expected = round(0.30 * rows.shape[0])
        assert dead >= expected, f"{name}: {dead} of {rows.shape[0]} channels zero, expected {expected}"
    assert child.meta["info"]["sparsity"] == pytest.approx(0.30, abs=0.05)
    # the recovery fine-tune kept the channels at zero and the child still does its task
    assert child.meta["info"]["recover_steps"] > 0
    assert child.accuracy > 0.5, f"pruned+recovered child accuracy {child.accuracy:.2f} is no evidence"


def test_unstructured_prune_zeroes_weights_not_channels(ci_zoo):
    model = ci_zoo.load_module(ci_zoo.child(_root(ci_zoo), "prune30_unstructured"))
    for name, layer in prunable_layers(model):
        w = layer.weight.detach()
        assert (w == 0).float().mean().item() == pytest.approx(0.30, abs=0.02), name


@pytest.mark.parametrize("name,bits", [("quant8", 8), ("quant6", 6), ("quant4", 4)])
def test_quantized_child_has_at_most_2_pow_bits_levels_per_channel(ci_zoo, name, bits):
    child = ci_zoo.child(_root(ci_zoo), name)
    model = ci_zoo.load_module(child)
    parent = ci_zoo.load_module(_root(ci_zoo))
    checked = 0
    # convolutions go through our quantizer; library-quantized linears are checked in test_transforms_lora_quant.py
    for (n, m), (_, p) in zip(model.named_modules(), parent.named_modules(), strict=True):
        if isinstance(m, nn.Conv2d):
            rows = m.weight.detach().reshape(m.weight.shape[0], -1)
            for row in rows:
                assert row.unique().numel() <= 2**bits - 1, n
            assert not torch.equal(m.weight, p.weight) or bits == 8, n
            checked += 1
    assert checked > 0
    assert child.meta["info"]["bits"] == bits


def test_chain_stores_each_step_and_shares_prefix_with_single_transforms(ci_zoo):
    root = _root(ci_zoo)
    ft = ci_zoo.child(root, "finetune")
    chained = ci_zoo.child(root, "chain")
    assert chained.lineage[:2] == [root.id, ft.id]  # the chain's first step is the finetune child itself
    assert [s.split("/")[-1] for s in chained.lineage[1:]] == ["finetune", "prune30", "quant4"]
    assert chained.meta["info"]["bits"] == 4


@pytest.mark.parametrize("impl,params,field", [
    ("prune", {"amount": 1.2}, "amount"),
    ("prune", {"amount": 0}, "amount"),
    ("quantize", {"bits": 0}, "bits"),
    ("quantize", {"bits": 9}, "bits"),
])
def test_out_of_range_parameters_are_rejected_naming_the_field(impl, params, field):
    with pytest.raises(ConfigError, match=field):
        transform_class(impl)(params)
