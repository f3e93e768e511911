"""scripts/external_cases.py: the case set made outside the zoo is what its manifest says it is.

Run once at ``--quick`` sizes (one architecture, a few dozen steps): every model is well above chance when
re-evaluated from its saved file alone, fine-tuned and pruned children really derive from their parent (their
weights moved, but stay closer to the parent than another seed's model), and the manifest's labels follow the
lineage the sidecars record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
CHANCE = 0.1  # ten digit classes


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("external")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "external_cases.py"), "--out", str(out), "--quick"],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    return out


def sidecars(cases: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in cases.glob("*.json") if p.name != "summary.json"}


def weights(cases: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(cases / f"{name}.safetensors"))


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Relative L2 distance of two state dicts of one architecture (float tensors)."""
    num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in b if b[k].is_floating_point())
    den = sum(float(b[k].double().pow(2).sum()) for k in b if b[k].is_floating_point())
    return (num / den) ** 0.5


def test_every_model_is_above_chance_from_its_file_alone(cases: Path) -> None:
    data = np.load(cases / "data.npz")
    x = torch.from_numpy(data["x_test"]).float() / 255.0
    y = torch.from_numpy(data["y_test"]).long()
    metas = sidecars(cases)
    assert len(metas) >= 8
    for name, meta in metas.items():
        net = timm.create_model(meta["arch"]["name"], num_classes=meta["num_classes"], in_chans=3,
                                **meta["arch"]["kwargs"])
        net.load_state_dict(weights(cases, name), strict=True)  # a plain timm state dict: no wrapper prefix
        mean = torch.tensor(meta["input"]["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(meta["input"]["std"]).view(1, -1, 1, 1)
        with torch.no_grad():
            acc = float((net.eval()((x - mean) / std).argmax(1) == y).float().mean())
        assert acc == pytest.approx(meta["test_accuracy"], abs=1e-6), name  # the recorded accuracy is real
        assert acc > 2.5 * CHANCE, f"{name}: accuracy {acc:.3f} is near chance"


def test_fine_tuned_and_pruned_children_derive_from_their_parent(cases: Path) -> None:
    metas = sidecars(cases)
    roots = [n for n, m in metas.items() if m["transform"] == "none"]
    for name, meta in metas.items():
        if meta["transform"] not in ("finetune", "prune"):
            continue
        parent = weights(cases, meta["parent"])
        to_parent = distance(weights(cases, name), parent)
        others = [r for r in roots if r != meta["parent"] and metas[r]["arch_key"] == meta["arch_key"]]
        assert others, "the quick set needs another seed of the same architecture"
        to_independent = min(distance(weights(cases, r), parent) for r in others)
        assert to_parent > 1e-4, f"{name} did not move from its parent"
        assert to_parent < 0.5 * to_independent, f"{name}: {to_parent:.3f} from its parent, {to_independent:.3f} " \
                                                 "from another seed"
        assert meta["relative_weight_change"] == pytest.approx(to_parent, rel=1e-3)
        if meta["transform"] == "prune":
            assert meta["sparsity"] == pytest.approx(0.3, abs=0.01)


def test_manifest_labels_follow_the_recorded_lineage(cases: Path) -> None:
    metas = sidecars(cases)
    m = pd.read_csv(cases / "manifest.csv", keep_default_na=False)
    owners = set(m["owner"])
    assert owners == {n for n, v in metas.items() if v["role"] == "owner" and v["transform"] == "none"}
    for _, r in m.iterrows():
        assert r["label"] == int(metas[r["suspect"]]["root"] == r["owner"])
        assert r["role"] == ("calibration" if metas[r["suspect"]]["role"] == "calibration" else "pair")
    pairs = m[m["role"] == "pair"]
    for transform in ("finetune", "prune", "distill"):  # every cell has positives and negatives for every owner
        cell = pairs[pairs["transform"] == transform]
        assert (cell.groupby("owner")["label"].agg(["min", "max"]).values == [0, 1]).all(), transform
    assert (m.loc[m["role"] == "calibration", "label"] == 0).all() and (m["role"] == "calibration").any()
