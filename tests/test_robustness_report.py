"""Robustness curves from records alone: one row per family x strength x method, the figure drawn."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fpbench.records import Record, cell_path, merge_models, models_path, to_frame, write_cell
from fpbench.report.__main__ import build_report


def _rec(transform: str, label: int, score: float, owner: str) -> Record:
    return Record(zoo="syn", method="m", transform=transform, owner=owner, suspect=f"{transform}{score}",
                  owner_arch="a", suspect_arch="a", label=label, score=score, threshold=0.5,
                  decision=int(score >= 0.5), fingerprint_seconds=1.0, verify_seconds=0.01, owner_accuracy=0.9,
                  suspect_accuracy=0.9, seed=0, config_hash="h", versions="{}", git_commit="x", role="pair")


def test_prune_curve_falls_with_strength_and_carries_the_child_accuracy(tmp_path: Path) -> None:
    # AUC 1 at prune10, 0.25 at prune50: the table must keep the order and each child's accuracy
    for transform, pos in (("prune10", (0.9, 0.8)), ("prune30", (0.6, 0.4)), ("prune50", (0.3, 0.2))):
        rows = [_rec(transform, 1, s, f"o{i}") for i, s in enumerate(pos)]
        rows += [_rec(transform, 0, s, f"o{i}") for i, s in enumerate((0.5, 0.25))]
        write_cell(cell_path(tmp_path, "syn", "m", transform), to_frame(rows))
    cal = [Record(**{**_rec("_calibration", 0, s, "o0").__dict__, "role": "calibration"}) for s in (0.1, 0.2, 0.3)]
    write_cell(cell_path(tmp_path, "syn", "m", "_calibration"), to_frame(cal))
    merge_models(models_path(tmp_path, "syn"), {
        f"r/{t}": {"id": f"r/{t}", "root": "r", "arch": "a", "parent": "r", "transform": t, "key": t,
                   "accuracy": acc, "parent_accuracy": 0.9}
        for t, acc in (("prune10", 0.88), ("prune30", 0.8), ("prune50", 0.6))})
    out = build_report(tmp_path, "syn").parent
    table = pd.read_csv(out / "robustness.csv")
    prune = table[table["family"] == "prune"].sort_values("strength")
    assert list(prune["transform"]) == ["prune10", "prune30", "prune50"]
    assert list(prune["AUC"]) == [1.0, 0.75, 0.25]
    assert list(prune["child accuracy"].round(2)) == [0.88, 0.8, 0.6]
    assert list(prune["Cal. TPR"]) == [1.0, 1.0, 0.0]  # calibrated just above 0.3
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"
