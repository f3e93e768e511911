"""The report on synthetic records: hand-computed metrics, calibration from calibration rows only, failed cells shown."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fpbench.records import Record, cell_path, to_frame, write_cell
from fpbench.report.__main__ import build_report
from fpbench.report.tables import cell_table, load, table1


def _rec(method: str, transform: str, label: int, score: float, role: str = "pair", status: str = "ok",
         error: str = "", zoo: str = "syn") -> Record:
    return Record(zoo=zoo, method=method, transform=transform, owner="o", suspect=f"s{score}", owner_arch="a",
                  suspect_arch="a", label=label, score=score, threshold=0.5, decision=int(score >= 0.5),
                  fingerprint_seconds=1.0, verify_seconds=0.01, owner_accuracy=0.9, suspect_accuracy=0.9, seed=0,
                  config_hash="h", versions="{}", git_commit="x", role=role, status=status, error=error)


def write_records(runs: Path, zoo: str = "syn") -> None:
    """Synthetic records of one zoo: an ok cell, its calibration pairs, a failed cell and a not-applicable one."""
    pairs = [_rec("m", "ft", 1, s, zoo=zoo) for s in (0.9, 0.8, 0.2)] + [_rec("m", "ft", 0, s, zoo=zoo)
                                                                        for s in (0.1, 0.3, 0.85)]
    write_cell(cell_path(runs, zoo, "m", "ft"), to_frame(pairs))
    cal = [_rec("m", "_calibration", 0, s, role="calibration", zoo=zoo) for s in (0.2, 0.4, 0.6)]
    write_cell(cell_path(runs, zoo, "m", "_calibration"), to_frame(cal))
    write_cell(cell_path(runs, zoo, "m", "boom"), to_frame([_rec("m", "boom", -1, float("nan"), status="error",
                                                               error="RuntimeError: boom\ntrace", zoo=zoo)]))
    write_cell(cell_path(runs, zoo, "m", "lora"), to_frame([_rec("m", "lora", -1, float("nan"), status="n/a",
                                                               error="no Linear layer to adapt", zoo=zoo)]))


def test_hand_computed_cell_and_calibration(tmp_path: Path) -> None:
    write_records(tmp_path)
    cells = cell_table(load(tmp_path, "syn")).set_index("transform")
    ft = cells.loc["ft"]
    assert ft["tpr"] == 2 / 3 and ft["fpr"] == 1 / 3 and math.isclose(ft["auc"], 6 / 9)
    # calibrated on the three calibration negatives only: just above 0.6 (not on the scored 0.85)
    assert 0.6 < ft["cal_threshold"] < 0.6 + 1e-9
    assert ft["cal_tpr"] == 2 / 3 and ft["cal_fpr"] == 1 / 3
    assert cells.loc["boom", "status"] == "FAILED" and cells.loc["boom", "error"] == "RuntimeError: boom"
    assert cells.loc["lora", "status"] == "n/a"
    t1 = table1(load(tmp_path, "syn"), None).set_index("Metric")
    assert t1.loc["Total Experiments", "Value"] == "1"
    assert t1.loc["Failed / not-applicable cells", "Value"] == "2"


def test_all_outputs_written(tmp_path: Path) -> None:
    write_records(tmp_path)
    index = build_report(tmp_path, "syn")
    out = index.parent
    for name in ("table1", "table2", "table3", "cells", "runtime"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    for png in ("heatmap.png", "panels.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    page = index.read_text()
    assert "Table I" in page and "heatmap.png" in page and "FAILED" in page


def test_tables_are_kept_while_their_records_are_unchanged_and_redrawn_when_one_changes(tmp_path: Path) -> None:
    write_records(tmp_path)
    index = build_report(tmp_path, "syn")
    first = index.stat().st_mtime_ns
    assert build_report(tmp_path, "syn").stat().st_mtime_ns == first  # nothing changed: not redrawn
    assert build_report(tmp_path, "syn", force=True).stat().st_mtime_ns > first
    forced = index.stat().st_mtime_ns
    write_cell(cell_path(tmp_path, "syn", "m", "ft"), to_frame([_rec("m", "ft", 1, 0.95), _rec("m", "ft", 0, 0.05)]))
    redrawn = build_report(tmp_path, "syn").stat().st_mtime_ns
    assert redrawn > forced  # a record changed: redrawn
    cells = pd.read_csv(index.parent / "cells.csv").set_index("transform")
    assert cells.loc["ft", "pairs"] == 2  # the redrawn tables hold the new records
    assert build_report(tmp_path, "syn", target_fpr=0.05).stat().st_mtime_ns > redrawn  # another option: redrawn


def test_attack_study_cells_stay_out_of_the_grid_tables(tmp_path: Path) -> None:
    """A removal-attack cell (made to break methods) has its own table; it must not drag Table II down."""
    write_records(tmp_path)
    broken = [_rec("m", "cmf_remove100", 1, 0.0) for _ in range(3)] + [_rec("m", "cmf_remove100", 0, 0.0)]
    write_cell(cell_path(tmp_path, "syn", "m", "cmf_remove100"), to_frame(broken))
    index = build_report(tmp_path, "syn")
    t2 = pd.read_csv(index.parent / "table2.csv").set_index("method")
    assert t2.loc["m", "Pairs"] == 6 and t2.loc["m", "TPR"] == 2 / 3  # the ft cell alone
    assert "cmf_remove100" not in set(pd.read_csv(index.parent / "cells.csv")["transform"])


def test_table2_is_one_regime_calibrated_first_fixed_second(tmp_path: Path) -> None:
    """Acc/TPR/FPR are at the held-out calibrated threshold; the fixed one is a labelled secondary column."""
    write_records(tmp_path)
    pairs = [_rec("m", "ft", 1, s, zoo="syn") for s in (0.9, 0.8, 0.55)] + [_rec("m", "ft", 0, s, zoo="syn")
                                                                           for s in (0.1, 0.3, 0.58)]
    write_cell(cell_path(tmp_path, "syn", "m", "ft"), to_frame(pairs))
    t2 = pd.read_csv(build_report(tmp_path, "syn").parent / "table2.csv").set_index("method")
    row = t2.loc["m"]
    assert row["Cal. negatives"] == 3 and 0.6 < row["Cal. threshold"] < 0.6 + 1e-9
    assert row["TPR"] == 2 / 3 and row["FPR"] == 0  # at the calibrated threshold (0.55 and 0.58 below it)
    assert row["Fixed t"] == 0.5 and row["Fixed-t TPR"] == 1 and row["Fixed-t FPR"] == 1 / 3
    assert row["FPR CI (binomial)"].startswith("0.00-0.7")  # 0 of 3: the exact interval is wide
    assert row["Guaranteed FPR"] == 1 / 4
    assert "TPR@1%FPR (in-sample oracle)" in t2.columns and "TPR@1%FPR" not in t2.columns
