"""The calibration pool: held-out roots and their children, every root an owner, never a related pair."""

from __future__ import annotations

from pathlib import Path

from fpbench.config import load_option
from fpbench.run import CellRunner, CellSpec
from fpbench.zoo.__main__ import plan


def test_tiny_calibration_gives_every_method_200_negatives():
    """Counted from the tiny config: same-architecture-only methods (weightcos, cmf) get >= 200 negatives too."""
    zoo = plan("tiny", ["finetune"]).zoo_cfg
    per_root = 1 + len(zoo["calibration_transforms"])  # a calibration root and its children
    cal = {e["arch"]: len(e["seeds"]) for e in zoo["calibration"]}
    owners = {e["arch"]: len(e["seeds"]) for e in zoo["roots"]}
    # a root owner meets every same-arch calibration family; a calibration owner every one but its own
    same_arch = sum((owners.get(a, 0) * n + n * (n - 1)) * per_root for a, n in cal.items())
    assert same_arch >= 200


def test_calibration_pairs_cover_children_and_calibration_owners_but_never_a_related_pair(tmp_path: Path, ci_zoo_cfg):
    spec = CellSpec(zoo_cfg=ci_zoo_cfg, method_cfg=load_option("method", "weightcos"),
                    transform_cfg=load_option("transform", "finetune"), runs_dir=tmp_path, device="cpu")
    runner = CellRunner(spec)
    df = runner.calibration(runner.method(spec.method_cfg), spec.method_cfg)
    assert set(df["role"]) == {"calibration"} and set(df["label"]) == {0}
    cal_roots = {f"{e['arch']}-s{s}" for e in ci_zoo_cfg["calibration"] for s in e["seeds"]}
    assert cal_roots <= set(df["owner"])  # calibration roots are owners too
    assert any("/" in s for s in df["suspect"])  # ... and their children are suspects
    for owner, suspect in zip(df["owner"], df["suspect"], strict=True):
        assert suspect.split("/")[0] != owner  # never a calibration root against its own descendant
    ok = df[df["status"] == "ok"]
    n_owners = len(ci_zoo_cfg["roots"][0]["seeds"]) * 2 + len(cal_roots)
    per_root = 1 + len(ci_zoo_cfg["calibration_transforms"])
    # weightcos compares same-architecture pairs: 2 archs, each 2 roots x 3 models + 1 calibration owner x 0
    assert len(ok) == 2 * (2 * per_root) and len(df) == (n_owners * len(cal_roots) - len(cal_roots)) * per_root
