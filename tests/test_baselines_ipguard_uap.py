"""IPGuard and UAP fingerprinting on the ci zoo (small settings: points and steps cut to keep the tests fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from config_helpers import resolved_params
from method_helpers import make_method
from torch import nn

from baselines.ipguard import boundary_loss
from fpbench.api import ConfigError, ModelSpec, NotApplicable
from fpbench.subject import ModelSubject

FAST = {  # ipguard: a smaller margin than the reference's k = 10, which the ci zoo's small logits reach slowly
    "ipguard": {"points": 30, "steps": 200, "k": 3.0, "max_starts": 120, "batch": 60},
    "uap": {"points": 20, "uap_inputs": 200, "uap_steps": 5, "n_independent": 2, "shadow_steps": 120,
            "encoder_steps": 300},  # shadow_steps: as the ci zoo's roots
}


def make(name: str, zoo, workdir: Path, **override):
    return make_method(name, zoo, workdir, FAST[name], override)


@pytest.fixture(scope="module")
def fingerprints(ci_zoo, trio, tmp_path_factory):
    """One fingerprint of the owner per method, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("fp")
    return {name: make(name, ci_zoo, tmp).fingerprint(trio[0]) for name in FAST}


@pytest.mark.parametrize("name", list(FAST))
def test_child_scores_above_independent(name, ci_zoo, trio, fingerprints, tmp_path):
    owner, child, indep = trio
    m, fp = make(name, ci_zoo, tmp_path), fingerprints[name]
    s_child, s_indep = m.score(fp, child), m.score(fp, indep)
    assert s_child > s_indep, (name, s_child, s_indep)
    assert m.score(fp, owner) >= s_child - 1e-6  # the owner itself is the most similar


@pytest.mark.parametrize("name", list(FAST))
def test_fingerprint_deterministic(name, ci_zoo, trio, fingerprints, tmp_path):
    a = fingerprints[name]
    b = make(name, ci_zoo, tmp_path).fingerprint(trio[0])
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k


@pytest.mark.parametrize(("name", "override", "per_point"), [
    ("ipguard", {"points": 17, "steps": 100}, 1), ("uap", {"points": 9, "uap_steps": 1}, 2),
])
def test_query_budget_honoured(name, override, per_point, ci_zoo, trio, tmp_path):
    owner, child, _ = trio
    m = make(name, ci_zoo, tmp_path, **override)
    fp = m.fingerprint(owner)
    n = fp.tensors["x"].shape[0]
    assert 1 <= n <= override["points"]  # ipguard keeps only the points that converged
    before = child.query_count
    m.score(fp, child)
    assert child.query_count - before == per_point * n


@pytest.mark.parametrize(("name", "per_point"), [("ipguard", 1), ("uap", 2)])
def test_config_budget_is_what_score_sends(name, per_point):
    """The shipped config's query_budget is exactly what one verification needs (no slack, no refusal)."""
    p = resolved_params("method", name)
    assert p["query_budget"] == per_point * p["points"]


def test_ipguard_points_lie_on_the_owners_boundary(trio, fingerprints):
    """The owner labels the points with their label, by a margin of at least k but near it (not deep inside)."""
    owner = trio[0]
    fp = fingerprints["ipguard"]
    with torch.no_grad():
        logits = owner.model(fp.tensors["x"])
    assert torch.equal(logits.argmax(1), fp.tensors["y"])
    top2 = logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    k = FAST["ipguard"]["k"]
    assert float(margin.min()) >= k - 1e-4
    assert float(margin.median()) < 2 * k + 1  # near the boundary, not deep inside a class
    assert ((fp.tensors["x"] >= 0) & (fp.tensors["x"] <= 1)).all()


def test_boundary_loss_is_zero_only_on_the_target_side():
    logits = torch.tensor([[5.0, 2.0, 0.0], [2.0, 5.0, 0.0], [5.0, 0.0, 2.0]])
    i, j = torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1])
    loss = boundary_loss(logits, i, j, k=1.0)
    assert loss[0] == 0  # i wins by 3 > k, j is runner-up
    assert loss[1] > 0  # j wins
    assert loss[2] > 0  # i wins but another label, not j, is runner-up


def test_uap_perturbation_is_universal_and_bounded(trio, fingerprints):
    fp = fingerprints["uap"]
    eps = resolved_params("method", "uap")["eps"]
    v = fp.tensors["v"]
    assert v.shape[0] == 1 and float(v.abs().max()) <= eps + 1e-6
    assert fp.meta["fooling_rate"] > 0.2  # one perturbation changes the owner's label on many training inputs
    assert torch.allclose(fp.tensors["x_adv"], (fp.tensors["x"] + v).clamp(0, 1))
    assert len({tuple(r.flatten().tolist()) for r in fp.tensors["x"]}) == fp.tensors["x"].shape[0]  # distinct


class FiveWay(nn.Module):
    """A stand-in suspect whose head has 5 classes (e.g. a child re-headed for another label set)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("name", list(FAST))
def test_other_class_count_is_not_applicable(name, ci_zoo, trio, fingerprints, tmp_path):
    owner = trio[0]
    m, fp = make(name, ci_zoo, tmp_path), fingerprints[name]
    spec = ModelSpec(arch={"name": "fiveway"}, num_classes=5, class_names=list("abcde"), input=owner.spec.input)
    suspect = ModelSubject("fiveway", FiveWay(), spec, torch.device("cpu"))
    with pytest.raises(NotApplicable, match="5 classes"):
        m.check_applicable(owner, suspect)
    if m.access == "black-box labels":
        return  # labels carry no class count: the spec's, checked above, is all a label method can see
    liar = ModelSubject("liar", FiveWay(), owner.spec, torch.device("cpu"))  # spec says 10, head answers 5
    with pytest.raises(NotApplicable, match="5 classes"):
        m.score(fp, liar)


def test_bad_params_named(ci_zoo, tmp_path):
    with pytest.raises(ConfigError, match="init"):
        make("ipguard", ci_zoo, tmp_path, init="zeros")
    with pytest.raises(ConfigError, match="max_starts"):
        make("ipguard", ci_zoo, tmp_path, points=50, max_starts=10)
    with pytest.raises(ConfigError, match="pirates"):
        make("uap", ci_zoo, tmp_path, pirates=["shuffle"])
    with pytest.raises(ConfigError, match="k"):
        make("ipguard", ci_zoo, tmp_path, k=-1)
    with pytest.raises(ConfigError, match="eps"):
        make("uap", ci_zoo, tmp_path, eps=0)
    with pytest.raises(ConfigError, match="similarity"):
        make("uap", ci_zoo, tmp_path, similarity="l2")


def test_boundary_loss_with_two_classes():
    """With 2 classes there are no 'other' labels: only the margin term remains."""
    logits = torch.tensor([[3.0, 1.0], [1.0, 3.0]])
    loss = boundary_loss(logits, torch.tensor([0, 0]), torch.tensor([1, 1]), k=1.0)
    assert loss[0] == 0 and loss[1] == 3.0


def test_more_points_than_probe_inputs_is_a_named_error(ci_zoo, trio, tmp_path):
    n = len(ci_zoo.data.split("probe")) + 1
    with pytest.raises(ConfigError, match="points"):
        make("uap", ci_zoo, tmp_path, points=n, uap_steps=1).fingerprint(trio[0])
