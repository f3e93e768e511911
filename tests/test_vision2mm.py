"""vision2mm makes a real open_clip CLIP child from a parent's trunk, and methods can query it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fpbench.api import ConfigError, MethodContext, ModelSpec, NotApplicable, TransformContext
from fpbench.clip_model import ClipClassifier, build_clip_classifier
from fpbench.models import build_module
from fpbench.registry import method_class, transform_class
from fpbench.weights import effective_named_weights
from transforms.vision2mm import VisionToMultimodal, copy_trunk

ROOT = Path(__file__).resolve().parents[1]


def _roots(ci_zoo):
    """(the parent, an independent of the same architecture and data, another seed)."""
    by_id = {r.id: r for r in ci_zoo.roots()}
    return by_id["resnet-s0"], by_id["resnet-s1"]


@pytest.fixture(scope="module")
def child(ci_zoo):
    parent, _ = _roots(ci_zoo)
    return ci_zoo.child(parent, "vision2mm")


def test_child_is_an_open_clip_model_with_zero_shot_accuracy_above_chance(ci_zoo, child):
    import open_clip

    info = child.meta["info"]
    assert child.spec.modality == "vision-language"
    assert child.spec.arch["builder"] == "clip"
    model = ci_zoo.load_module(child)
    assert isinstance(model, ClipClassifier) and isinstance(model.clip, open_clip.CLIP)
    assert isinstance(model.clip.visual, open_clip.timm_model.TimmModel)
    chance = 1.0 / child.spec.num_classes
    assert info["zero_shot_accuracy"] > chance + 0.4, f"zero-shot {info['zero_shot_accuracy']:.2f}, chance {chance:.2f}"
    assert info["steps"] == 150 and info["freeze_vision_steps"] == 30
    assert info["parent_accuracy"] == pytest.approx(_roots(ci_zoo)[0].accuracy)
    # the zero-shot head answers through the same Subject pipeline black-box methods use
    subject = ci_zoo.subject(child)
    test = ci_zoo.data.split("test")
    logits = subject.logits(test.tensor())
    assert logits.shape == (len(test), child.spec.num_classes)
    assert int((logits.argmax(1) == test.labels).sum()) / len(test) == pytest.approx(child.accuracy, abs=1e-12)
    assert subject.features(test.tensor(slice(0, 8))).shape == (8, child.spec.arch["open_clip"]["embed_dim"])


def test_vision_tower_started_as_exact_copy_of_parent_trunk_and_then_moved(ci_zoo, child):
    parent, _ = _roots(ci_zoo)
    parent_model = ci_zoo.load_module(parent)
    spec = VisionToMultimodal({}).child_spec(parent.spec)
    fresh = build_clip_classifier(spec.arch, spec)
    dropped = copy_trunk(fresh, parent_model.trunk)
    assert dropped == ["fc.bias", "fc.weight"]  # only the classifier stays behind: CLIP's projection replaces it
    parent_sd = parent_model.trunk.state_dict()
    for name, tensor in fresh.trunk.state_dict().items():
        assert torch.equal(tensor, parent_sd[name]), name
    x = ci_zoo.data.split("probe").tensor(slice(0, 16))
    fresh.eval()
    assert torch.equal(fresh.trunk.forward_features(fresh.normalize(x)),
                       parent_model.trunk.forward_features(parent_model.normalize(x)))
    # the stored child records the same provenance, and its trunk really moved during contrastive training
    info = child.meta["info"]
    assert info["trunk_init_max_abs_diff"] == 0.0
    assert 0.0 < info["trunk_rel_change"] < 0.5
    trained = ci_zoo.load_module(child).trunk.state_dict()
    assert any(not torch.equal(trained[k], parent_sd[k]) for k in trained)


def test_trunk_weights_are_named_as_in_the_parent(ci_zoo, child):
    parent, _ = _roots(ci_zoo)
    child_w = effective_named_weights(ci_zoo.load_module(child).trunk)
    parent_w = effective_named_weights(ci_zoo.load_module(parent).trunk)
    assert set(child_w) == set(parent_w) - {"fc.weight"}
    assert all(child_w[n].shape == parent_w[n].shape for n in child_w)


def test_store_round_trip_rebuilds_the_child_in_a_fresh_process(ci_zoo, child, tmp_path):
    model = ci_zoo.load_module(child)
    rebuilt = build_module(ModelSpec.from_dict(child.spec.to_dict()))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = ci_zoo.data.split("probe").tensor(slice(0, 32))
    assert torch.equal(rebuilt.eval()(x), model(x))
    # a new process has no timm registration of the parent's trunk yet: build_module must make it from the spec
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "child.safetensors")
    (tmp_path / "spec.json").write_text(json.dumps(child.spec.to_dict()))
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(x), tmp_path / "y.pt")
    code = (
        "import json, sys, torch; from safetensors.torch import load_file;"
        "from fpbench.api import ModelSpec; from fpbench.models import build_module;"
        "d = sys.argv[1]; m = build_module(ModelSpec.from_dict(json.load(open(d + '/spec.json'))));"
        "m.load_state_dict(load_file(d + '/child.safetensors'), strict=True); m.eval();"
        "assert torch.equal(m(torch.load(d + '/x.pt')), torch.load(d + '/y.pt'))"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=ROOT)


def test_cmf_scores_the_child_of_its_parent_above_the_child_of_an_independent(ci_zoo, child):
    parent, independent = _roots(ci_zoo)
    ctx = MethodContext(data=ci_zoo.data, device=torch.device("cpu"), seed=0, workdir=Path("."), progress=False)
    cmf = method_class("cmf")({"top_k": 20, "threshold": 0.7}, ctx)
    suspect = ci_zoo.subject(child)
    own = cmf.score(cmf.fingerprint(ci_zoo.subject(parent)), suspect)
    other = cmf.score(cmf.fingerprint(ci_zoo.subject(independent)), suspect)
    assert own > other, f"cmf: parent {own:.4f} vs independent {other:.4f}"
    assert own > cmf.threshold


def test_vgg_style_parent_is_hosted_by_open_clip(ci_zoo):
    # The tiny tier's VGG-style net (timm's VGG class with a custom layer list) at the ci input size.
    spec = ModelSpec(arch={"builder": "timm_vgg", "kwargs": {"cfg": [8, "M", 16, "M"], "mlp_ratio": 0.0625}},
                     num_classes=10, class_names=list(ci_zoo.data.class_names), input=ci_zoo.data.input_spec())
    torch.manual_seed(0)
    parent = build_module(spec).eval()
    transform = VisionToMultimodal({})
    transform.check(spec, parent)
    child_spec = transform.child_spec(spec)
    clip = build_clip_classifier(child_spec.arch, child_spec).eval()
    dropped = copy_trunk(clip, parent.trunk)
    assert dropped and all(k.startswith("head.fc") for k in dropped)
    parent_sd = parent.trunk.state_dict()
    assert all(torch.equal(v, parent_sd[k]) for k, v in clip.trunk.state_dict().items())
    assert set(effective_named_weights(clip.trunk)) <= set(effective_named_weights(parent.trunk))
    assert clip(ci_zoo.data.split("probe").tensor(slice(0, 4))).shape == (4, 10)


def test_a_parent_open_clip_cannot_host_is_not_applicable(ci_zoo, child):
    transform = transform_class("vision2mm")({})
    with pytest.raises(NotApplicable, match="vision-language"):  # a CLIP child is no vision trunk to host again
        transform.check(child.spec, ci_zoo.load_module(child))
    parent, _ = _roots(ci_zoo)
    wrapped = ModelSpec.from_dict({**parent.spec.to_dict(), "wrappers": [{"kind": "lora"}]})
    with pytest.raises(NotApplicable, match="wrapped"):
        transform.check(wrapped, ci_zoo.load_module(parent))
    ctx = TransformContext(data=ci_zoo.data, device=torch.device("cpu"), seed=0, progress=False)
    with pytest.raises(NotApplicable):  # apply refuses too, before any training
        transform.apply(ci_zoo.load_module(child), child.spec, ctx)


@pytest.mark.parametrize("params,field", [
    ({"split": "train_a"}, "split"),
    ({"steps": 10, "freeze_vision_steps": 20}, "freeze_vision_steps"),
    ({"text_width": 64, "text_heads": 5}, "text_heads"),
    ({"train_templates": ["a photo"]}, "train_templates"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ConfigError, match=field):
        VisionToMultimodal(params)


def test_recorded_config_is_an_open_clip_model_config(child, tmp_path):
    """The arch's ``open_clip`` entry is a real open_clip model config: registered with add_model_config,
    open_clip.create_model builds the same architecture the store rebuilds."""
    import open_clip

    from fpbench.clip_model import register_trunk

    arch = child.spec.arch
    register_trunk(arch["open_clip"]["vision_cfg"]["timm_model_name"], arch["trunk"], child.spec.num_classes,
                   child.spec.input)
    name = "fpbench-test-" + child.key[:8]
    (tmp_path / f"{name}.json").write_text(json.dumps(arch["open_clip"]))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    made = open_clip.create_model(name, pretrained=None)
    ours = build_module(child.spec).clip
    assert {k: v.shape for k, v in made.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert open_clip.get_tokenizer(name).context_length == arch["open_clip"]["text_cfg"]["context_length"]
