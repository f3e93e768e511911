"""Adversarial training, distillation and the transform-effects records do what they claim, on the ci zoo."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from fpbench.api import ConfigError, TransformContext
from fpbench.data import ImageSet
from fpbench.registry import transform_class
from fpbench.report.effects import effects_table
from fpbench.train import predict
from fpbench.zoo.effects import trunk_weights
from transforms.advtrain import robust_accuracy

# Small budgets for 16x16 digits: a few seconds per child on one core.
ADV = {"name": "advtrain_ci", "impl": "advtrain",
       "params": {"eps": 0.1, "step_size": 0.025, "pgd_steps": 3, "steps": 40, "lr": 0.01, "batch_size": 64,
                  "eval_n": 120, "eval_pgd_steps": 5}}
DISTILL_PARAMS = {"split": "train_c", "temperature": 4.0, "steps": 100, "lr": 0.05, "batch_size": 64}
DISTILL = {"name": "distill_ci", "impl": "distill", "params": DISTILL_PARAMS}
DISTILL_CROSS = {"name": "distill_cross_ci", "impl": "distill",
                 "params": {**DISTILL_PARAMS, "student_arch": ["effnet", "resnet"]}}


def _resnet_root(ci_zoo):
    return next(r for r in ci_zoo.roots() if r.arch == "resnet")


# ---------------------------------------------------------------- advtrain
def test_advtrain_raises_robust_accuracy_above_the_parents_on_held_out_data(ci_zoo):
    root = _resnet_root(ci_zoo)
    child = ci_zoo.child(root, ADV)
    info = child.meta["info"]
    for key in ("clean_accuracy", "robust_accuracy", "parent_clean_accuracy", "parent_robust_accuracy"):
        assert 0.0 <= info[key] <= 1.0, key
    # measured again here, on other held-out images and another random start than the transform used
    held_out = ci_zoo.data.split("test")
    held_out = ImageSet(held_out.images[120:], held_out.labels[120:], held_out.channels)
    def robust(m):
        return robust_accuracy(m, held_out, torch.device("cpu"), eps=0.1, step_size=0.025, steps=10, seed=7)
    parent_robust, child_robust = robust(ci_zoo.load_module(root)), robust(ci_zoo.load_module(child))
    assert child_robust > parent_robust + 0.08, (parent_robust, child_robust)
    assert info["robust_accuracy"] > info["parent_robust_accuracy"]
    assert child.accuracy > 0.7, f"adversarially trained child's clean accuracy {child.accuracy:.2f} is no evidence"


@pytest.mark.parametrize("params,field", [
    ({"eps": -0.1}, "eps"),
    ({"eps": 0}, "eps"),
    ({"step_size": -1}, "step_size"),
    ({"pgd_steps": 0}, "pgd_steps"),
    ({"steps": -5}, "steps"),
    ({"lr": 0}, "lr"),
    ({"split": "train_a"}, "split"),
])
def test_advtrain_rejects_bad_parameters_naming_the_field(params, field):
    with pytest.raises(ConfigError, match=field):
        transform_class("advtrain")(params)


# ---------------------------------------------------------------- distill
def test_distilled_student_agrees_with_its_teacher_and_is_not_a_copy(ci_zoo):
    root = _resnet_root(ci_zoo)
    child = ci_zoo.child(root, DISTILL)
    info = child.meta["info"]
    teacher, student = ci_zoo.load_module(root), ci_zoo.load_module(child)
    x = ci_zoo.data.split("test").tensor()
    agreement = float((predict(student, x).argmax(1) == predict(teacher, x).argmax(1)).float().mean())
    assert agreement == pytest.approx(info["agreement"], abs=1e-6)
    assert agreement > 0.6, f"agreement {agreement:.2f} is not far above chance (0.1)"
    assert info["queries"] == len(ci_zoo.data.split("train_c")) and info["temperature"] == 4.0
    assert child.arch == "resnet" and child.spec.arch == root.spec.arch
    # same architecture, fresh weights: the student's weights point elsewhere than the teacher's
    sw, tw = trunk_weights(student), trunk_weights(teacher)
    flat = lambda w: torch.cat([w[k].flatten() for k in sorted(w)])  # noqa: E731
    cosine = float(torch.nn.functional.cosine_similarity(flat(sw), flat(tw), dim=0))
    assert abs(cosine) < 0.2, f"student/teacher weight cosine {cosine:.2f}: the student copied weights"
    assert info["rel_change_norm"] > 0.8


def test_distillation_never_uses_true_labels(ci_zoo):
    """Poisoning every label of the query split changes nothing: the student is bit-for-bit the same."""
    root = _resnet_root(ci_zoo)
    data = ci_zoo.data
    clean_split = data.split("train_c")
    poisoned = ImageSet(clean_split.images, (clean_split.labels + 1 + torch.arange(len(clean_split)) % 7) % 10,
                        clean_split.channels)
    assert bool((poisoned.labels != clean_split.labels).all())
    poisoned_data = dataclasses.replace(data, splits={**data.splits, "train_c": poisoned})
    transform = transform_class("distill")({**DISTILL_PARAMS, "steps": 30})

    def student(bundle):
        teacher = ci_zoo.load_module(root)
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        ctx = TransformContext(data=bundle, device=torch.device("cpu"), seed=11, progress=False,
                               archs=ci_zoo.cfg["archs"])
        out = transform.apply(teacher, root.spec, ctx).model.state_dict()
        assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), "teacher was modified"
        return out

    clean, dirty = student(data), student(poisoned_data)
    assert clean.keys() == dirty.keys()
    for k in clean:
        assert torch.equal(clean[k], dirty[k]), f"{k} differs: the student saw the labels"


def test_cross_architecture_student_is_recorded_under_its_own_arch(ci_zoo):
    root = _resnet_root(ci_zoo)
    child = ci_zoo.child(root, DISTILL_CROSS)
    assert child.arch == "effnet" and child.spec.arch == ci_zoo.cfg["archs"]["effnet"]
    assert child.meta["info"]["student_arch"] == "effnet"
    assert child.meta["info"]["agreement"] > 0.6
    assert math.isnan(child.meta["info"]["rel_change_norm"])  # no name-aligned weights across architectures
    assert trunk_weights(ci_zoo.load_module(child)).keys() != trunk_weights(ci_zoo.load_module(root)).keys()


@pytest.mark.parametrize("params,field", [
    ({"split": "train_a"}, "split"),
    ({"temperature": 0}, "temperature"),
    ({"queries": 0}, "queries"),
    ({"student_arch": ""}, "student_arch"),
    ({"student_arch": []}, "student_arch"),
    ({"steps": 0}, "steps"),
])
def test_distill_rejects_bad_parameters_naming_the_field(params, field):
    with pytest.raises(ConfigError, match=field):
        transform_class("distill")(params)


def test_distill_unknown_student_arch_lists_the_zoos_archs(ci_zoo):
    with pytest.raises(ConfigError, match="student_arch.*valid: resnet, effnet"):
        ci_zoo.child(_resnet_root(ci_zoo), {"name": "distill_bad", "impl": "distill",
                                            "params": {**DISTILL_PARAMS, "student_arch": "vit"}})


# ---------------------------------------------------------------- transform effects
def test_every_child_records_accuracy_sparsity_and_weight_change(ci_zoo):
    root = _resnet_root(ci_zoo)
    same = ci_zoo.child(root, "identity").meta["info"]
    assert same["rel_change_norm"] == 0.0 and same["parent_accuracy"] == root.accuracy
    pruned = ci_zoo.child(root, "prune30_unstructured").meta["info"]
    assert pruned["weight_sparsity"] == pytest.approx(0.30, abs=0.03)  # classifier (unpruned) included
    assert 0 < pruned["rel_change_norm"] < 1
    quant = ci_zoo.child(root, "quant4").meta["info"]
    assert quant["bits"] == 4 and 0 < quant["rel_change_norm"] < 0.5
    for key in ("accuracy", "parent_accuracy", "weight_sparsity", "rel_change_norm"):
        assert key in ci_zoo.child(root, ADV).meta["info"], key


def test_a_chain_is_measured_against_its_root(ci_zoo):
    root = _resnet_root(ci_zoo)
    chained = ci_zoo.child(root, "chain")  # finetune -> prune30 -> quant4
    info = chained.meta["info"]
    last_step = ci_zoo.child(ci_zoo.child(ci_zoo.child(root, "finetune"), "prune30"), "quant4")
    assert info["parent_accuracy"] == root.accuracy != last_step.meta["info"]["parent_accuracy"]
    assert info["rel_change_norm"] > last_step.meta["info"]["rel_change_norm"]
    assert info["bits"] == 4 and info["weight_sparsity"] > 0.2


def test_effects_table_averages_each_transform_over_its_roots():
    rows = [
        {"id": "a-s0", "root": "a-s0", "transform": "", "accuracy": 0.9},
        {"id": "a-s0/quant4", "root": "a-s0", "transform": "quant4", "accuracy": 0.8, "parent_accuracy": 0.9,
         "bits": 4, "weight_sparsity": 0.0, "rel_change_norm": 0.1},
        {"id": "b-s0/quant4", "root": "b-s0", "transform": "quant4", "accuracy": 0.6, "parent_accuracy": 0.8,
         "bits": 4, "weight_sparsity": 0.2, "rel_change_norm": 0.3},
        {"id": "a-s0/distill", "root": "a-s0", "transform": "distill", "accuracy": 0.85, "parent_accuracy": 0.9,
         "weight_sparsity": 0.0, "rel_change_norm": float("nan")},
        # a child for another task is judged on that task, not on the zoo's own test split
        {"id": "a-s0/finetune_transfer", "root": "a-s0", "transform": "finetune_transfer", "accuracy": 0.1,
         "parent_accuracy": 0.9, "task_accuracy": 0.97, "parent_task_accuracy": 0.95},
        # a chain's intermediate step: not a child of its root, left out of the quant4 row
        {"id": "a-s0/finetune/quant4", "root": "a-s0", "transform": "quant4", "accuracy": 0.1,
         "parent_accuracy": 0.9, "bits": 4, "weight_sparsity": 0.9, "rel_change_norm": 9.0},
    ]
    table = effects_table(pd.DataFrame(rows)).set_index("transform")
    assert list(table.index) == ["distill", "finetune_transfer", "quant4"]
    t = table.loc["finetune_transfer"]
    assert t["accuracy before"] == pytest.approx(0.95) and t["accuracy after"] == pytest.approx(0.97)
    q = table.loc["quant4"]
    assert q["accuracy before"] == pytest.approx(0.85) and q["accuracy after"] == pytest.approx(0.7)
    assert q["accuracy delta"] == pytest.approx(-0.15) and q["sparsity"] == pytest.approx(0.1)
    assert q["bits"] == 4 and q["relative change norm"] == pytest.approx(0.2) and q["n"] == 2
    d = table.loc["distill"]
    assert d["bits"] == 32 and math.isnan(d["relative change norm"]) and d["n"] == 1


def test_distillation_loss_is_zero_only_when_the_student_matches_the_teacher():
    from fpbench.ops import distillation_loss

    teacher = torch.randn(8, 10)
    assert float(distillation_loss(teacher.clone(), teacher, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(teacher + 3.0, teacher, 4.0)) == pytest.approx(0.0, abs=1e-5)  # shift-invariant
    assert float(distillation_loss(torch.randn(8, 10), teacher, 4.0)) > 0.01


def test_training_that_diverges_is_refused_not_stored(ci_zoo):
    """A child whose training loss ends non-finite is no evidence: train() says so (a not-applicable reason that
    names the fix) instead of returning a broken model."""
    from torch import nn

    from fpbench.train import TrainConfig, TrainingDiverged, train

    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(TrainingDiverged, match="lower transform.params.lr"):
        train(model, ci_zoo.data.split("train_b"), TrainConfig(steps=3, lr=0.1, batch_size=16), seed=0,
              device=torch.device("cpu"), loss_fn=lambda m, x, y: m(x).sum() * float("nan"))
