"""SAC, ModelDiff, CKA and cmf as their reference code has them (issue 15), pinned on the ci zoo and small tensors.

What a user relies on: SAC and ModelDiff read raw outputs (a change of the logits that softmax cannot see changes
their score); SAC-m's samples are the reference's fixed corner box; SAC-w's samples are the owner's errors shared
by its surrogates; ModelDiff's 100 seeds are perturbed within the reference's radius in the direction of its
diversity objective; CKA reads REEF's intermediate layer, standardised; cmf says n/a, not 0, for a pair it
cannot compare.
"""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import make_method
from torch import nn

from baselines.cka import REEF_DEPTH, layer_at_depth, standardize
from baselines.modeldiff import diversity_objective, diversity_pgd
from baselines.sac import corner_box
from fpbench.evaluate import Evaluator, Provenance
from fpbench.ops import linear_cka
from fpbench.run import candidate
from fpbench.shadows import distilled_shadow, shadow_seeds
from fpbench.subject import ModelSubject, SuspectView
from fpbench.zoo.store import ArtefactStore


class _ShiftedLogits(nn.Module):
    """The owner's logits plus a per-input constant (the same for every class): softmax cannot tell it apart."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out + 3.0 * out.abs().mean(1, keepdim=True) * (1 + x.flatten(1).mean(1, keepdim=True))


def _shifted_view(owner: ModelSubject, access: str) -> SuspectView:
    return SuspectView(ModelSubject("shifted", _ShiftedLogits(owner.model), owner.spec, owner.device), access)


@pytest.mark.parametrize("name", ["sac", "modeldiff"])
def test_raw_outputs_are_compared_not_softmax(name, ci_zoo, trio, tmp_path):
    owner = trio[0]
    on_logits = make_method(name, ci_zoo, tmp_path)
    on_softmax = make_method(name, ci_zoo, tmp_path, outputs="softmax")
    s_logits = on_logits.score(on_logits.fingerprint(owner), _shifted_view(owner, on_logits.access))
    s_softmax = on_softmax.score(on_softmax.fingerprint(owner), _shifted_view(owner, on_softmax.access))
    assert s_softmax == pytest.approx(1.0, abs=1e-5)  # softmax outputs are unchanged
    assert s_logits < 1.0 - 1e-3, s_logits  # the reference's logits are not


def test_sac_m_pastes_the_reference_corner_box(ci_zoo, trio, tmp_path):
    side = int(0.2 * 32)
    for seed in range(50):
        y0, y1, x0, x1 = corner_box(32, 32, torch.Generator().manual_seed(seed))
        assert 0 < y1 - y0 <= side and 0 < x1 - x0 <= side
        near = 32 / 6 + side / 2 + 1  # the centre lies within a sixth of the border on both axes
        assert min(y1, 32 - y0) <= near and min(x1, 32 - x0) <= near, (y0, y1, x0, x1)
    m = make_method("sac", ci_zoo, tmp_path)
    x = m.fingerprint(trio[0]).tensors["x"]
    natural = ci_zoo.data.split("probe").tensor()[: len(x)]
    y0, y1, x0, x1 = corner_box(x.shape[-2], x.shape[-1], torch.Generator().manual_seed(0))  # the method's seed
    inside = torch.zeros(x.shape[-2:], dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    assert torch.equal(x[..., ~inside], natural[..., ~inside])  # one box for every sample, nothing else pasted
    patches = x[..., y0:y1, x0:x1].flatten(1)
    sources = natural[..., y0:y1, x0:x1].flatten(1)
    assert all(any(torch.equal(p, q) for q in sources) for p in patches)  # each box comes from another sample


def test_sac_w_takes_the_errors_the_owner_shares_with_its_surrogates_first(ci_zoo, trio, tmp_path):
    owner = trio[0]
    params = {"surrogates": 1, "surrogate_steps": 20}
    m = make_method("sac_w", ci_zoo, tmp_path, **params)
    assert m.shadow_families() == frozenset({"distill"})
    assert make_method("sac", ci_zoo, tmp_path).shadow_families() == frozenset()
    x = m.fingerprint(owner).tensors["x"]
    probe = ci_zoo.data.split("probe")
    surrogate = distilled_shadow(owner.model, owner.spec, ci_zoo.data.split("train_a"), steps=20,
                                 seed=shadow_seeds(0, "sac-surrogate", 1)[0], device=owner.device,
                                 cache_dir=tmp_path / "sac_w").eval()  # the method's own, from its cache
    with torch.no_grad():
        truth = {tuple(img.flatten().tolist()): int(y) for img, y in zip(probe.tensor(), probe.labels, strict=True)}
        labels = torch.tensor([truth[tuple(img.flatten().tolist())] for img in x])
        owner_wrong = owner.model(x).argmax(1) != labels
        common = owner_wrong & (surrogate(x).argmax(1) != labels)
        all_common = int(((owner.model(probe.tensor()).argmax(1) != probe.labels)
                          & (surrogate(probe.tensor()).argmax(1) != probe.labels)).sum())
    k = min(all_common, len(x))
    assert bool(common[:k].all()) and int(common.sum()) == k  # every common error, before anything else
    assert bool(owner_wrong[: int(owner_wrong.sum())].all())  # then the owner's other errors, then its correct ones


def test_modeldiff_uses_100_training_seeds_within_the_reference_radius(ci_zoo, trio, tmp_path):
    owner, child, _ = trio
    m = make_method("modeldiff", ci_zoo, tmp_path)
    fp = m.fingerprint(owner)
    x, x_adv = fp.tensors["x"], fp.tensors["x_adv"]
    assert len(x) == 100 and m.query_budget == 200
    train = {tuple(img.flatten().tolist()) for img in ci_zoo.data.split("train_a").tensor()}
    assert all(tuple(img.flatten().tolist()) in train for img in x)
    std = torch.tensor(owner.spec.input["std"]).view(1, -1, 1, 1)
    assert bool(((x_adv - x).abs() <= 0.06 * std + 1e-6).all()) and float((x_adv - x).abs().max()) > 0.01
    before = child.query_count
    m.score(fp, SuspectView(child, m.access))
    assert child.query_count - before == 200


def test_diversity_pgd_ascends_the_reference_objective():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).eval()
    x = torch.rand(8, 3, 4, 4)
    with torch.no_grad():
        clean = model(x)
    target = 1000.0 * (clean.mean(0, keepdim=True) - clean)
    eps = torch.full((1, 3, 1, 1), 0.05)
    adv = diversity_pgd(model, x, eps=eps, step=eps / 5, steps=20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gain = float(diversity_objective(model(adv), target) - diversity_objective(clean, target))
        spread = float((model(adv) - model(adv).mean(0)).norm() - (clean - clean.mean(0)).norm())
    assert gain > 0 and spread > 0  # outputs pushed away from the batch mean: more diverse decision distances
    assert bool(((adv - x).abs() <= 0.05 + 1e-6).all()) and bool(((adv >= 0) & (adv <= 1)).all())


def test_cka_standardises_each_feature_as_reef_does():
    torch.manual_seed(0)
    x = torch.randn(100, 6) @ torch.randn(6, 6)
    scaled = x * torch.tensor([1.0, 10.0, 0.1, 5.0, 1.0, 0.01])
    assert linear_cka(standardize(x), standardize(scaled)) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, scaled) < 0.99  # centring alone is not invariant to a per-feature scale
    dead = torch.cat([x, torch.ones(100, 1)], 1)
    assert standardize(dead).shape == (100, 6) and torch.isfinite(standardize(dead)).all()


def test_cka_reads_reefs_intermediate_layer(ci_zoo, trio, tmp_path):
    owner, child, _ = trio
    names = list(owner.activations(ci_zoo.data.split("probe").tensor()[:2]))
    assert layer_at_depth(list(range(32)), REEF_DEPTH) == 18  # REEF's layer 18 of 32
    m = make_method("cka", ci_zoo, tmp_path)
    fp = m.fingerprint(owner)
    assert fp.meta["layer"] == names[math.ceil(REEF_DEPTH * len(names)) - 1] != names[-1]
    old = make_method("cka_penultimate", ci_zoo, tmp_path)
    old_fp = old.fingerprint(owner)
    x = old_fp.tensors["x"]
    assert old_fp.meta["layer"] == "penultimate"
    assert old.score(old_fp, SuspectView(child, old.access)) == pytest.approx(
        linear_cka(owner.features(x), child.features(x)), abs=1e-6)
    assert m.score(fp, SuspectView(child, m.access)) != pytest.approx(old.score(old_fp, SuspectView(child, old.access)))


def test_cmf_records_na_not_zero_for_a_cross_architecture_pair(ci_zoo, tmp_path):
    method = make_method("cmf", ci_zoo, tmp_path)
    ev = Evaluator(method, ci_zoo.data, torch.device("cpu"), ArtefactStore(tmp_path / "fp"))
    roots = {r.id: candidate(ci_zoo, r) for r in ci_zoo.roots()}
    other_arch, same_arch = ev.evaluate([roots["resnet-s0"]], [(roots["effnet-s0"], None), (roots["resnet-s1"], None)],
                                        Provenance("ci", "cmf", "t", "h", 0))
    assert other_arch.status == "n/a" and "no unit of suspect effnet-s0" in other_arch.error
    assert other_arch.score != other_arch.score  # NaN: no score at all, not 0
    assert same_arch.status == "ok" and 0 < same_arch.score <= 1
    spectral = make_method("cmf", ci_zoo, tmp_path, correspondence="spectral")
    ev = Evaluator(spectral, ci_zoo.data, torch.device("cpu"), ArtefactStore(tmp_path / "fp2"))
    [rec] = ev.evaluate([roots["resnet-s0"]], [(roots["effnet-s0"], None)], Provenance("ci", "cmf", "t", "h", 0))
    assert rec.status == "ok"  # units matched across architectures: a score
