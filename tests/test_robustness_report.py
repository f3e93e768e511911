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


def test_the_out_of_zoo_section_sets_external_aucs_beside_the_zoo_cell_of_the_same_kind(tmp_path: Path) -> None:
    from fpbench.report.external import summary_path

    # the zoo's finetune cell separates perfectly (AUC 1); the external light fine-tune AUC 0.75, heavy 0.5
    rows = [_rec("finetune", 1, s, f"o{i}") for i, s in enumerate((0.9, 0.8))]
    rows += [_rec("finetune", 0, s, f"o{i}") for i, s in enumerate((0.5, 0.25))]
    write_cell(cell_path(tmp_path, "syn", "m", "finetune"), to_frame(rows))
    assert "Out-of-zoo" not in build_report(tmp_path, "syn").read_text()  # no external set scored yet: no section
    path = summary_path(tmp_path)
    path.parent.mkdir(parents=True)
    pd.DataFrame([
        {"source": "ours", "method": "m", "cell": c, "positives": 4, "negatives": 12, "auc": a, "cal_negatives": 48,
         "tpr_cal": 0.5, "fpr_cal": 0.0}
        for c, a in (("all", 0.6), ("distill:T=4,150 steps", 0.9), ("finetune:light", 0.75), ("finetune:heavy", 0.5),
                     ("odd:cell", 0.1))
    ] + [{"source": "qurd", "method": "m", "cell": "finetune:light", "auc": 0.2, "positives": 4, "negatives": 12,
          "cal_negatives": 0}]).to_csv(path, index=False)
    out = build_report(tmp_path, "syn").parent  # a new external summary alone makes the report stale
    table = pd.read_csv(out / "external.csv")
    # in the counterparts' order, no peer rows, no stray cells; a strength after the transform name is matched
    assert list(table["external cell"]) == ["finetune:light", "finetune:heavy", "distill:T=4,150 steps", "all"]
    assert list(table["zoo transform"]) == ["finetune", "finetune_heavy", "distill", "(pooled)"]
    light = table.iloc[0]
    assert (light["zoo AUC"], light["external AUC"], light["external - zoo"]) == (1.0, 0.75, -0.25)
    assert pd.isna(table.iloc[1]["zoo AUC"])  # finetune_heavy was not run in this zoo: said, not invented
