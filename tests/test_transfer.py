"""Fingerprint transfer (fpbench.transfer) on the ci tier: the vector's arithmetic, refusal of other structures,
the false-positive side, and the records, lineage edges and tables a run leaves behind."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from fpbench.api import ConfigError
from fpbench.config import load_option
from fpbench.transfer import attacks, report, results
from fpbench.transfer.__main__ import TRACKS, run
from fpbench.transfer.evaluate import WAYS, fingerprint_base
from fpbench.transfer.vector import FingerprintVector, StructureMismatch, state_tensors

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ci_transfer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs dir after `python -m fpbench.transfer transfer=ci` (both tracks, 3 downstream models each)."""
    runs = tmp_path_factory.mktemp("transfer_runs")
    run(load_option("transfer", "ci"), runs)
    return runs


def _track(name: str, runs: Path):
    cfg = load_option("transfer", "ci")
    return TRACKS.get(name)(cfg[name], runs, CPU, 0, False)


@pytest.mark.parametrize("name", ["vision", "language"])
def test_vector_is_exactly_fp_minus_base_and_base_plus_vector_is_fp(ci_transfer, name):
    track = _track(name, ci_transfer)
    base, fp, _ = fingerprint_base(track)  # cached by the run: loads, no training
    tau = FingerprintVector.between(fp, base)
    fp_p, base_p = state_tensors(fp), state_tensors(base)
    before = {k: v.clone() for k, v in base_p.items()}
    assert set(tau.tensors) == set(base_p) and any(".weight" in k for k in tau.tensors)
    for key, t in tau.tensors.items():
        assert torch.equal(t, fp_p[key].double() - base_p[key].double()), key
    assert tau.norm() > 0, "the injection changed nothing: no fingerprint to transfer"
    rebuilt = tau.apply(base, 1.0)
    for key, p in state_tensors(rebuilt).items():
        assert torch.equal(p, fp_p[key]), f"base + tau differs from theta_fp at {key}"
    assert all(torch.equal(before[k], v) for k, v in state_tensors(base).items()), "apply must not modify its input"
    # the rebuilt model answers the triggers as the fingerprinted base does, and the plain base does not
    assert track.fsr(rebuilt) == track.fsr(fp) == 1.0
    assert track.fsr(base) <= 0.25


def test_lambda_scales_the_vector(ci_transfer):
    track = _track("vision", ci_transfer)
    base, fp, _ = fingerprint_base(track)
    tau = FingerprintVector.between(fp, base)
    half = state_tensors(tau.apply(base, 0.5))
    for key, p in state_tensors(base).items():
        expected = (p.double() + 0.5 * tau.tensors[key]).float()
        assert torch.equal(half[key], expected), key


def test_transfer_to_another_structure_is_refused_naming_the_tensor(ci_transfer):
    vision = _track("vision", ci_transfer)
    base, fp, _ = fingerprint_base(vision)
    tau = FingerprintVector.between(fp, base)
    spec = copy.deepcopy(vision.root.spec)
    spec.num_classes = 5  # same trunk, another head: net.fc.weight is [5, 64], the vector's is [10, 64]
    from fpbench.models import build_module

    with pytest.raises(StructureMismatch, match=r"tensor 'net\.fc\.weight' has shape \[5, 64\].*\[10, 64\]"):
        tau.apply(build_module(spec), name="the 5-class model")
    lm = _track("language", ci_transfer).new_model()
    with pytest.raises(StructureMismatch, match=r"tensor 'net\.[^']+' is missing from the GPT-2"):
        tau.apply(lm, name="the GPT-2")


def test_never_fingerprinted_models_have_measured_low_fsr(ci_transfer):
    rows = results.load_rows(ci_transfer)
    none = rows[(rows["way"] == "none") & (rows["condition"] == "clean")]
    assert set(none["track"]) == {"vision", "language"} and len(none) == 2 * 4  # base + 3 downstream per track
    assert none["fsr"].notna().all() and (none["fsr"] <= 0.25).all(), none[["track", "model", "fsr"]]
    # an independent model (the ci zoo's other seed, never derived from the base) is measured too
    vision = _track("vision", ci_transfer)
    independent = vision.zoo_obj.load_module(vision.zoo_obj.root(vision.cfg["arch"], 1))
    assert vision.fsr(independent) <= 0.25
    lm_track = _track("language", ci_transfer)
    torch.manual_seed(123)
    assert lm_track.fsr(lm_track.new_model()) == 0.0  # a random GPT-2 never produces the secret response


def test_every_way_is_recorded_with_fsr_quality_robustness_and_cost(ci_transfer):
    rows = results.load_rows(ci_transfer)
    down = rows[rows["task"] != "base"]
    for track in ("vision", "language"):
        t = down[down["track"] == track]
        assert t["task"].nunique() == 3
        assert set(t["way"]) == set(WAYS)
        assert set(t[t["way"] == "transfer"]["condition"]) == {"clean", "finetune", "prune", "quantize", "merge"}
        assert set(t[t["way"] == "transfer"]["lam"].dropna()) == {0.5, 1.0}
        direct = t[(t["way"] == "direct") & (t["condition"] == "clean")]
        assert (direct["inject_seconds"] > 0).all() and (direct["fsr"] == 1.0).all()
        transfer = t[(t["way"] == "transfer") & (t["condition"] == "clean") & (t["lam"] == 1.0)]
        assert (transfer["retrain_seconds"] == 0).all() and (transfer["apply_seconds"] > 0).all()
    assert rows["seed"].eq(0).all() and rows["config"].eq("ci").all() and rows["git_commit"].str.len().gt(0).all()


def test_lineage_edges_record_both_relations_of_each_transferred_model(ci_transfer):
    edges = pd.read_parquet(results.edges_path(ci_transfer))
    assert {"parent", "child", "relation", "params", "confidence"} <= set(edges.columns)
    rows = results.load_rows(ci_transfer)
    transferred = rows[(rows["way"] == "transfer") & (rows["condition"] == "clean")]
    for r in transferred.itertuples():
        mine = edges[edges["child"] == r.model]
        assert set(mine["relation"]) == {"fingerprint_transfer", "carries_fingerprint_of"}, r.model
        child_of = mine[mine["relation"] == "fingerprint_transfer"].iloc[0]
        assert child_of["parent"] == r.model.split("+tau")[0]  # the downstream model it was added to
        carrier = mine[mine["relation"] == "carries_fingerprint_of"].iloc[0]
        assert carrier["parent"] == r.base and carrier["confidence"] == pytest.approx(r.fsr)
        assert json.loads(carrier["params"])["lambda"] == r.lam
    from fpbench.lineage.tracker import LineageTracker

    tracker = LineageTracker()
    assert tracker.add_relations(edges) == len(edges) == 2 * len(transferred)
    child = transferred.iloc[0]["model"]
    assert set(tracker.graph.in_edges(child, keys=True)) == {
        (child.split("+tau")[0], child, "fingerprint_transfer"), (transferred.iloc[0]["base"], child, "carries_fingerprint_of")}


def test_tables_are_rebuilt_from_records_alone(ci_transfer):
    from fpbench.report.extra import sections

    frames = {s.name: s.run(ci_transfer, "ci", ci_transfer / "tables") for s in sections() if s.name.startswith("transfer")}
    summary = frames["transfer"]
    assert summary is not None and len(summary) == 2 * len(WAYS)
    assert (summary["models"] == 3).all()
    for col in ("fsr", "quality_delta", "fsr_finetune", "fsr_prune", "fsr_quantize", "fsr_merge", "cost_seconds"):
        assert col in summary.columns
    assert not math.isnan(summary.set_index(["track", "way"]).loc[("vision", "transfer"), "fsr_prune"])
    assert len(frames["transfer_lambda"]) == 4  # 2 tracks x 2 lambdas
    assert (ci_transfer / "tables" / "transfer.md").exists()  # the run wrote them too
    assert report.summary(results.load_rows(ci_transfer)).equals(summary)


def test_attacks_prune_quantize_and_merge_what_they_claim(ci_transfer):
    lm = _track("language", ci_transfer)
    model = lm.base()
    layers = lm.attack_layers(model)
    assert layers and all("attn" in n or "mlp" in n for n in layers)
    pruned = dict(attacks.prune(model, layers, 0.3).named_modules())
    for n in layers:
        assert (pruned[n].weight == 0).float().mean().item() == pytest.approx(0.3, abs=0.01), n
    quant = dict(attacks.quantize(model, layers, 4).named_modules())
    for n in layers:  # GPT-2's Conv1D keeps out-features last: at most 2^4 - 1 levels per output column
        w = quant[n].weight.detach()
        assert max(w[:, j].unique().numel() for j in range(w.shape[1])) <= 15, n
    other = lm.new_model()
    merged = attacks.merge(model, other, 0.5)
    key = layers[0] + ".weight"
    expected = 0.5 * model.state_dict()[key] + 0.5 * other.state_dict()[key]
    assert torch.allclose(merged.state_dict()[key], expected)


def test_cli_rejects_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="'track'"):
        run(load_option("transfer", "ci"), tmp_path, track="audio")
    with pytest.raises(ConfigError, match="'lambda'"):
        run(load_option("transfer", "ci"), tmp_path, lam=-1.0)
    assert not any(tmp_path.iterdir())  # refused before anything ran
