"""LoRA (peft), library quantization (bitsandbytes, torchao), transfer and last-layer fine-tuning do what they claim,
measured on the ci zoo's real children."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fpbench.api import ConfigError, MethodContext, NotApplicable
from fpbench.config import load_option
from fpbench.registry import method_class, transform_class
from fpbench.run import CellSpec, run_cell
from fpbench.train import predict
from fpbench.weights import dense_weight, effective_named_weights
from fpbench.zoo.build import transform_config
from transforms.lora import lora_targets


def _root(zoo):
    return zoo.roots()[0]


def _logits(model: nn.Module, zoo) -> torch.Tensor:
    return predict(model.eval(), zoo.data.split("test").tensor()[:64])


# ------------------------------------------------------------------ LoRA
def test_merged_lora_child_changes_exactly_the_target_layers(ci_zoo):
    root = _root(ci_zoo)
    child = ci_zoo.child(root, "peft_lora")
    model, parent = ci_zoo.load_module(child), ci_zoo.load_module(root)
    assert not child.spec.wrappers and not any(hasattr(m, "lora_A") for m in model.modules())  # merged: plain model
    targets = {f"net.{n}.weight" for n in lora_targets(parent.trunk, transform_config("peft_lora")["params"]
                                                        ["target_modules"])}
    # the targets include each block's last conv: a trained parent's last BN is not zero (zero_init_last), so
    # LoRA on them gets gradient and really moves them
    assert "net.layer1.0.conv2.weight" in targets
    cs, ps = model.state_dict(), parent.state_dict()
    assert cs.keys() == ps.keys()
    changed = {k for k in ps if not torch.equal(cs[k], ps[k])}
    assert changed == targets  # every adapted layer moved; nothing else did (no BatchNorm drift, head frozen)
    for k in targets:  # the change is a rank-r update
        delta = (cs[k] - ps[k]).reshape(cs[k].shape[0], -1)
        assert torch.linalg.matrix_rank(delta.double(), rtol=1e-6) <= child.meta["info"]["lora_rank"], k
    info = child.meta["info"]
    assert info["library"] == "peft" and info["merged"] is True and info["lora_layers"] == len(targets)
    lora_params = sum(info["lora_rank"] * (ps[k].shape[0] + ps[k][0].numel()) for k in targets)
    assert info["trainable_params"] == lora_params
    assert child.accuracy > 0.8 and abs(child.accuracy - info["parent_accuracy"]) < 0.1


def test_unmerged_lora_child_reloads_with_peft_layers_and_effective_weights_under_parent_names(ci_zoo):
    from peft.tuners.lora import LoraLayer

    root = _root(ci_zoo)
    child = ci_zoo.child(root, "peft_lora_unmerged")
    assert [w["kind"] for w in child.spec.wrappers] == ["lora"]
    model = ci_zoo.load_module(child)  # rebuilt through ModelSpec.wrappers, then load_state_dict(strict=True)
    lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(lora_layers) == child.meta["info"]["lora_layers"] > 0
    # peft's own merge gives the dense weights white-box methods must see, under the parent's names
    merged = copy.deepcopy(model)
    for layer in merged.modules():
        if isinstance(layer, LoraLayer):
            layer.merge()
    seen = ci_zoo.subject(child).named_weights()
    parent_names = set(effective_named_weights(ci_zoo.load_module(root).trunk))
    assert set(seen) == parent_names
    for name, w in seen.items():
        layer = merged.trunk.get_submodule(name.removesuffix(".weight"))
        ref = layer.base_layer.weight if isinstance(layer, LoraLayer) else layer.weight
        torch.testing.assert_close(w, ref.detach().float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_logits(model, ci_zoo), _logits(merged, ci_zoo), rtol=1e-4, atol=1e-4)
    assert ci_zoo.subject(child).features(ci_zoo.data.split("probe").tensor()[:4]).shape[0] == 4


def test_lora_with_no_matching_layer_is_not_applicable_and_the_cell_says_so(ci_zoo, ci_zoo_cfg, ci_runs_dir):
    cfg = {"name": "lora_nomatch", "impl": "lora",
           "params": {"target_modules": ["no_such_layer"], "r": 2, "alpha": 4, "steps": 5}}
    root = _root(ci_zoo)
    with pytest.raises(NotApplicable, match="target_modules"):
        ci_zoo.child(root, cfg)
    spec = CellSpec(zoo_cfg=ci_zoo_cfg, method_cfg=load_option("method", "cmf"), transform_cfg=cfg,
                    runs_dir=ci_runs_dir / "lora_na", device="cpu", progress=False)
    df, summary, _ = run_cell(spec)
    assert (df["status"] == "n/a").all() and df["error"].str.contains("no_such_layer").all()


# ------------------------------------------------------------------ quantization
def _max_levels_per_row(w: torch.Tensor) -> int:
    return max(int(row.unique().numel()) for row in w.reshape(w.shape[0], -1))


@pytest.mark.parametrize("name,bits,layer_cls,per_block", [
    ("quant8", 8, "Linear8bitLt", None),
    ("quant4", 4, "Linear4bit", 64),
    ("quant4_fp4", 4, "Linear4bit", 64),
    ("quant6", 6, None, None),
])
def test_library_quantized_child_really_uses_the_library_and_has_k_bit_levels(ci_zoo, name, bits, layer_cls,
                                                                             per_block):
    import bitsandbytes as bnb

    root = _root(ci_zoo)
    child = ci_zoo.child(root, name)
    model, parent = ci_zoo.load_module(child), ci_zoo.load_module(root)
    parent_modules = dict(parent.named_modules())
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs
    for n, conv in convs:  # our symmetric quantizer: at most 2^bits - 1 levels per output channel
        assert _max_levels_per_row(conv.weight.detach()) <= 2**bits - 1, n
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert linears
    for n, lin in linears:
        if layer_cls is not None:
            assert isinstance(lin, getattr(bnb.nn, layer_cls)), (n, type(lin))
            assert lin.weight.dtype in (torch.int8, torch.uint8)  # real codes, not fake-quantized floats
        else:  # torchao keeps nn.Linear and swaps the weight for its quantized tensor subclass
            assert type(lin.weight).__module__.startswith("torchao"), type(lin.weight)
        w = dense_weight(lin)
        ref = parent_modules[n].weight.detach()
        assert w.shape == ref.shape
        if per_block:  # NF4/FP4: 16 codes per block of 64 weights (one absmax each)
            blocks = w.reshape(-1, per_block)
            assert max(int(b.unique().numel()) for b in blocks) <= 2**bits
        else:  # int8 / int6: per output channel
            assert _max_levels_per_row(w) <= 2**bits
        rel = float((w - ref).norm() / ref.norm())
        assert 0 < rel < {8: 0.02, 6: 0.06, 4: 0.25}[bits], (n, rel)  # quantized, and still the parent's layer
    info = child.meta["info"]
    assert info["bits"] == bits and info["backend"] == ("torchao" if layer_cls is None else "bitsandbytes")
    assert info["accuracy"] > 0.5 and "parent_accuracy" in info


@pytest.mark.parametrize("name", ["quant8", "quant4"])
def test_bitsandbytes_child_round_trips_through_the_store(ci_zoo, name):
    root = _root(ci_zoo)
    child = ci_zoo.child(root, name)
    assert [w["kind"] for w in child.spec.wrappers] == ["quantize"] and ci_zoo.store.load(child.key)[1] is not None
    stored = ci_zoo.load_module(child)  # rebuilt via rewrap_quantize, loaded strictly from safetensors
    cfg = transform_config(name)
    fresh = ci_zoo.apply(transform_class(cfg["impl"])(cfg["params"]), root, child.meta["recipe"]["seed"]).model
    torch.testing.assert_close(_logits(stored, ci_zoo), _logits(fresh, ci_zoo), rtol=1e-5, atol=1e-5)


def test_quantizing_unmerged_lora_adapters_is_not_applicable(ci_zoo):
    child = ci_zoo.child(_root(ci_zoo), "peft_lora_unmerged")
    with pytest.raises(NotApplicable, match="peft_lora"):
        ci_zoo.child(child, "quant4")


def test_own_backend_keeps_plain_layers_everywhere(ci_zoo):
    model = ci_zoo.load_module(ci_zoo.child(_root(ci_zoo), "quant4_own"))
    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert type(m) in (nn.Conv2d, nn.Linear), n
            assert _max_levels_per_row(m.weight.detach()) <= 15, n


# ------------------------------------------------------------------ fine-tuning variants
def test_transfer_child_has_a_new_head_and_its_new_task_accuracy_recorded(ci_zoo, tmp_path):
    roots = ci_zoo.roots()
    root = roots[0]
    indep = next(r for r in roots if r.spec.arch == root.spec.arch and r.id != root.id)
    child = ci_zoo.child(root, "finetune_transfer")
    classes = transform_config("finetune_transfer")["params"]["classes"]
    assert child.spec.num_classes == len(classes) and child.spec.class_names == [root.spec.class_names[c]
                                                                                  for c in classes]
    info = child.meta["info"]
    assert info["task_accuracy"] > 0.8 and 0 < info["parent_task_accuracy"] <= 1
    suspect = ci_zoo.subject(child)
    assert suspect.logits(ci_zoo.data.split("probe").tensor()[:8]).shape == (8, len(classes))
    ctx = MethodContext(data=ci_zoo.data, device=torch.device("cpu"), seed=0, workdir=tmp_path, progress=False)
    # white-box: the trunk is compared (the head differs in shape) and the derived child stands out
    cmf = method_class("cmf")(load_option("method", "cmf").get("params", {}), ctx)
    s_child = cmf.score(cmf.fingerprint(ci_zoo.subject(root)), suspect)
    s_indep = cmf.score(cmf.fingerprint(ci_zoo.subject(indep)), suspect)
    assert s_child > s_indep
    # black-box labels from another label space are not evidence: a clean NotApplicable
    agreement = method_class("agreement")({}, ctx)
    with pytest.raises(NotApplicable, match="label"):
        agreement.check_applicable(ci_zoo.subject(root), suspect)


def test_last_layer_finetune_changes_only_the_head(ci_zoo):
    root = _root(ci_zoo)
    model, parent = ci_zoo.load_module(ci_zoo.child(root, "finetune_lastlayer")), ci_zoo.load_module(root)
    cs, ps = model.state_dict(), parent.state_dict()
    head_name = next(n for n, m in parent.trunk.named_modules() if m is parent.trunk.get_classifier())
    head = {k for k in ps if k.startswith(f"net.{head_name}.")}
    assert head
    assert {k for k in ps if not torch.equal(cs[k], ps[k])} == head  # BatchNorm statistics included


@pytest.mark.parametrize("impl,params,field", [
    ("quantize", {"bits": 6, "backend": "bitsandbytes"}, "bits"),
    ("quantize", {"bits": 4, "backend": "gptq"}, "backend"),
    ("quantize", {"bits": 4, "backend": "bitsandbytes", "quant_type": "int4"}, "quant_type"),
    ("lora", {"target_modules": [], "r": 4}, "target_modules"),
    ("lora", {"target_modules": "all", "r": 0}, "r"),
    ("lora", {"target_modules": "all", "split": "train_a"}, "split"),
    ("finetune_transfer", {"classes": [3]}, "classes"),
    ("finetune_transfer", {"classes": [1, 2], "split": "train_a"}, "split"),
])
def test_bad_parameters_are_rejected_naming_the_field(impl, params, field):
    with pytest.raises(ConfigError, match=field):
        transform_class(impl)(params)
