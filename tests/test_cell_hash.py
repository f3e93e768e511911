"""A cell re-runs when anything that made its children changes, including a step inside a chain."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fpbench.config import load_option
from fpbench.run import CellSpec


def _hash(transform: str) -> str:
    return CellSpec(zoo_cfg={"name": "ci"}, method_cfg=load_option("method", "cmf"),
                    transform_cfg=load_option("transform", transform), runs_dir=Path("unused")).config_hash


def test_chain_cell_hash_follows_its_steps_implementation(monkeypatch):
    import transforms.prune

    chain, finetune = _hash("chain"), _hash("finetune")
    monkeypatch.setattr(transforms.prune.Prune, "version", "test-changed")
    assert _hash("chain") != chain  # prune30 is a step of the chain
    assert _hash("finetune") == finetune  # a cell that does not use pruning is untouched


def test_chain_cell_hash_follows_its_steps_parameters(monkeypatch):
    import fpbench.zoo.build as build

    chain = _hash("chain")
    original = build.load_option

    def with_other_prune(group: str, name):
        cfg = original(group, name)
        if group == "transform" and name == "prune30":
            cfg = {**cfg, "params": {**cfg["params"], "amount": 0.31}}
        return cfg

    monkeypatch.setattr(build, "load_option", with_other_prune)
    assert _hash("chain") != chain


def test_cell_hash_follows_the_methods_implementation(monkeypatch):
    from fpbench.cmf.fingerprinter import CrossModalFingerprinter

    before = _hash("finetune")
    monkeypatch.setattr(CrossModalFingerprinter, "version", "test-changed")
    assert _hash("finetune") != before


def test_more_calibration_models_change_thresholds_not_cells():
    """Adding calibration roots or their children re-runs the calibration pairs only, never a scored cell."""
    from fpbench.run import calibration_hash

    zoo = load_option("zoo", "ci")
    more = {**zoo, "calibration_transforms": [*zoo["calibration_transforms"], "rescale"]}
    method = load_option("method", "cmf")

    def cell(z: dict) -> str:
        return CellSpec(zoo_cfg=z, method_cfg=method, transform_cfg=load_option("transform", "finetune"),
                        runs_dir=Path("unused")).config_hash

    assert cell(more) == cell(zoo)
    assert calibration_hash(more, method, 0) != calibration_hash(zoo, method, 0)
    assert cell({**zoo, "train": {**zoo["train"], "steps": 121}}) != cell(zoo)  # the scored models do change cells


def test_a_changed_fixed_threshold_re_decides_the_stored_pairs_without_re_scoring(tmp_path: Path, ci_zoo_cfg):
    """The fixed threshold decides, it does not score: changing it keeps the cell's scores and rewrites its
    threshold and decisions, so the records match the config again."""
    from fpbench.run import run_cell

    method = load_option("method", "weightcos")

    def spec(threshold: float) -> CellSpec:
        cfg = {**method, "params": {**method.get("params", {}), "threshold": threshold}}
        return CellSpec(zoo_cfg=ci_zoo_cfg, method_cfg=cfg, transform_cfg=load_option("transform", "quant8"),
                        runs_dir=tmp_path, device="cpu", progress=False)

    first, _, cached = run_cell(spec(0.5))
    assert not cached and set(first.loc[first["status"] == "ok", "threshold"]) == {0.5}
    again, summary, cached = run_cell(spec(0.999999))
    assert cached  # nothing re-scored
    ok, ok_first = again[again["status"] == "ok"], first[first["status"] == "ok"]
    assert list(ok["score"]) == list(ok_first["score"]) and set(ok["threshold"]) == {0.999999}
    assert list(ok["decision"]) == [int(s >= 0.999999) for s in ok["score"]]
    assert summary["threshold"] == 0.999999
    stored = pd.read_parquet(next((tmp_path / "records").rglob("quant8.parquet")))
    assert set(stored.loc[stored["status"] == "ok", "threshold"]) == {0.999999}  # written back, not only returned
