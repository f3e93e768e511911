"""The one evaluation path: suspects reached only at the method's declared access, one fingerprint cache for
every caller, the same score from a grid cell and from ``verify``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fpbench.api import Fingerprint, Method
from fpbench.config import load_option
from fpbench.errors import AccessViolation
from fpbench.evaluate import Evaluator, Provenance, make_method
from fpbench.run import CellSpec, candidate, run_cell
from fpbench.subject import ModelSubject, SuspectView
from fpbench.zoo.build import transform_config
from fpbench.zoo.store import ArtefactStore


def _subject(ci_zoo, model_id: str = "resnet-s0") -> ModelSubject:
    zm = next(r for r in ci_zoo.roots() if r.id == model_id)
    return ci_zoo.subject(zm)


def test_a_label_only_suspect_answers_labels_and_nothing_more(ci_zoo) -> None:
    x = ci_zoo.data.split("probe").tensor()[:4]
    view = SuspectView(_subject(ci_zoo), "black-box labels", query_budget=10)
    assert view.labels(x).shape == (4,)
    for query in (lambda: view.logits(x), lambda: view.probs(x), lambda: view.features(x), view.named_weights):
        with pytest.raises(AccessViolation, match="black-box labels"):
            query()
    with pytest.raises(AccessViolation, match="never as a module"):
        _ = view.model
    assert view.query_count == 4  # refused queries cost nothing


def test_white_box_access_reaches_weights_and_activations(ci_zoo) -> None:
    x = ci_zoo.data.split("probe").tensor()[:3]
    view = SuspectView(_subject(ci_zoo), "white-box weights")
    assert view.named_weights() and all(a.shape[0] == 3 for a in view.activations(x).values())
    with pytest.raises(AccessViolation):
        SuspectView(_subject(ci_zoo), "black-box probabilities").activations(x)


class _Peeker(Method):
    """A black-box method that reaches for the suspect's weights: must be refused, not scored."""

    access = "black-box labels"

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001
        return Fingerprint(meta={"n": sum(p.numel() for p in owner.model.parameters())})  # the owner: full access

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        return float(sum(w.sum() for w in suspect.model.parameters()))


def test_a_method_over_its_access_gets_an_error_record_not_a_score(ci_zoo, tmp_path: Path) -> None:
    from fpbench.api import MethodContext

    method = _Peeker({"threshold": 0.5}, MethodContext(ci_zoo.data, torch.device("cpu"), 0, tmp_path), name="peeker")
    ev = Evaluator(method, ci_zoo.data, torch.device("cpu"), ArtefactStore(tmp_path / "fp"))
    owner, other = (candidate(ci_zoo, r) for r in ci_zoo.roots()[:2])
    [rec] = ev.evaluate([owner], [(other, None)], Provenance("ci", "peeker", "t", "h", 0))
    assert rec.status == "error" and "never as a module" in rec.error and rec.score != rec.score  # NaN


def test_cell_and_verify_share_one_fingerprint_and_give_the_same_score(ci_zoo, ci_zoo_cfg: dict, ci_runs_dir: Path,
                                                                       tmp_path: Path) -> None:
    from fpbench.verify import export, verify

    runs = ci_runs_dir
    df, _, _ = run_cell(CellSpec(zoo_cfg=ci_zoo_cfg, method_cfg=load_option("method", "cmf"),
                                 transform_cfg=transform_config("finetune"), runs_dir=runs, device="cpu",
                                 progress=False))
    cell = df[(df["owner"] == "resnet-s0") & (df["suspect"] == "resnet-s0/finetune")].iloc[0]
    owner = export("ci", "resnet-s0", tmp_path / "owner.safetensors", runs)
    child = export("ci", "resnet-s0/finetune", tmp_path / "child.safetensors", runs)
    before = set((runs / "cache" / "fingerprints").iterdir())
    v = verify("cmf", owner, child, zoo="ci", runs_dir=runs, device="cpu")
    assert v.score == pytest.approx(float(cell["score"]), abs=1e-6)
    assert set((runs / "cache" / "fingerprints").iterdir()) == before  # the cell's fingerprint was reused


def test_make_method_names_the_instance_after_its_config(ci_zoo, tmp_path: Path) -> None:
    m = make_method(load_option("method", "sac_w"), ci_zoo.data, torch.device("cpu"), 0, tmp_path)
    assert m.name == "sac_w" and m.params["variant"] == "w" and (tmp_path / "sac_w").is_dir()


class _Picky(Method):
    """Fingerprints every owner but one (as IPGuard when none of an owner's starts converges)."""

    access = "white-box weights"

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001
        from fpbench.errors import NotApplicable

        if owner.id.endswith("-s1"):
            raise NotApplicable("no start converged on this owner")
        return Fingerprint()

    def score(self, fp, suspect) -> float:  # noqa: ANN001
        return 1.0


def test_an_owner_that_cannot_be_fingerprinted_makes_its_own_pairs_n_a_and_the_rest_are_scored(ci_zoo, tmp_path):
    from fpbench.api import MethodContext

    method = _Picky({"threshold": 0.5}, MethodContext(ci_zoo.data, torch.device("cpu"), 0, tmp_path), name="picky")
    ev = Evaluator(method, ci_zoo.data, torch.device("cpu"), ArtefactStore(tmp_path / "fp"))
    roots = [candidate(ci_zoo, r) for r in ci_zoo.roots()]
    records = ev.evaluate(roots, [(r, None) for r in roots], Provenance("ci", "picky", "t", "h", 0))
    assert len(records) == len(roots) ** 2
    for rec in records:
        if rec.owner.endswith("-s1"):
            assert rec.status == "n/a" and "cannot be fingerprinted: no start converged" in rec.error
        else:
            assert rec.status == "ok" and rec.score == 1.0
