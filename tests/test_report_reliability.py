"""The report survives broken inputs: an all-NaN cell, a damaged records file, a method whose every cell
failed, a failed re-run whose good records were kept, a deleted table file. Everything else is still written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fpbench.records import Record, cell_path, to_frame, write_cell
from fpbench.report.__main__ import build_report
from fpbench.report.tables import cell_table, load, table1

NAN = float("nan")


def _rec(method: str, transform: str, label: int, score: float, role: str = "pair", status: str = "ok",
         error: str = "") -> Record:
    return Record(zoo="syn", method=method, transform=transform, owner="o", suspect=f"s{label}{score}",
                  owner_arch="a", suspect_arch="a", label=label, score=score, threshold=0.5,
                  decision=int(score >= 0.5), fingerprint_seconds=1.0, verify_seconds=0.01, owner_accuracy=0.9,
                  suspect_accuracy=0.9, seed=0, config_hash="h", versions="{}", git_commit="x", role=role,
                  status=status, error=error)


def _good_cell(runs: Path, method: str = "m", transform: str = "ft") -> None:
    pairs = [_rec(method, transform, 1, s) for s in (0.9, 0.8)] + [_rec(method, transform, 0, s) for s in (0.1, 0.3)]
    write_cell(cell_path(runs, "syn", method, transform), to_frame(pairs))
    cal = [_rec(method, "_calibration", 0, s, role="calibration") for s in (0.2, 0.4)]
    write_cell(cell_path(runs, "syn", method, "_calibration"), to_frame(cal))


def _tables(index: Path) -> dict[str, pd.DataFrame]:
    t = {n: pd.read_csv(index.parent / f"{n}.csv") for n in ("table2", "table3", "cells")}
    return {**t, "table1": pd.read_csv(index.parent / "table1.csv", dtype=str)}


def test_an_all_nan_cell_is_flagged_and_every_table_is_written(tmp_path: Path) -> None:
    _good_cell(tmp_path)
    write_cell(cell_path(tmp_path, "syn", "m", "removal"),
               to_frame([_rec("m", "removal", 1, NAN), _rec("m", "removal", 0, NAN), _rec("m", "removal", 0, NAN)]))
    index = build_report(tmp_path, "syn")
    t = _tables(index)
    cells = t["cells"].set_index("transform")
    assert cells.loc["removal", "status"] == "INVALID" and cells.loc["removal", "invalid"] == 3
    assert "re-run: python -m fpbench.run zoo=syn method=m transform=removal force=true" in cells.loc["removal", "error"]
    assert cells.loc["ft", "status"] == "ok" and cells.loc["ft", "tpr"] == 1.0
    t2 = t["table2"].set_index("method")
    assert t2.loc["m", "Pairs"] == 4 and t2.loc["m", "Failed cells"] == 1  # the invalid cell is not averaged in
    t1 = t["table1"].set_index("Metric")["Value"]
    assert t1["Total Experiments"] == "1" and t1["Failed cells (errors, invalid scores, unreadable records)"] == "1"
    assert (index.parent / "heatmap.png").exists() and "INVALID" in index.read_text()


def test_only_invalid_cells_still_give_a_report(tmp_path: Path) -> None:
    write_cell(cell_path(tmp_path, "syn", "m", "removal"), to_frame([_rec("m", "removal", 1, NAN),
                                                                    _rec("m", "removal", 0, NAN)]))
    index = build_report(tmp_path, "syn")
    t = _tables(index)
    assert list(t["cells"]["status"]) == ["INVALID"] and list(t["table2"]["method"]) == ["m"]
    assert (index.parent / "panels.png").read_bytes()[:4] == b"\x89PNG"


def test_a_damaged_records_file_is_named_counted_failed_and_the_rest_written(tmp_path: Path, capsys) -> None:
    _good_cell(tmp_path)
    _good_cell(tmp_path, transform="quant8")
    bad = cell_path(tmp_path, "syn", "m", "quant8")
    bad.write_bytes(bad.read_bytes()[:100])
    index = build_report(tmp_path, "syn")
    err = capsys.readouterr().err
    assert "m/quant8.parquet" in err and "python -m fpbench.run zoo=syn method=m transform=quant8 force=true" in err
    t = _tables(index)
    cells = t["cells"].set_index("transform")
    assert cells.loc["quant8", "status"] == "FAILED" and "records file unreadable" in cells.loc["quant8", "error"]
    t1 = t["table1"].set_index("Metric")["Value"]
    assert t1["Total Experiments"] == "1" and t1["Failed / not-applicable cells"] == "1"
    page = index.read_text()
    assert "Warnings" in page and "m/quant8.parquet" in page and "transform=quant8 force=true" in page


def test_a_method_whose_every_cell_failed_keeps_its_rows_in_tables_ii_and_iii(tmp_path: Path) -> None:
    _good_cell(tmp_path)
    write_cell(cell_path(tmp_path, "syn", "broken", "ft"),
               to_frame([_rec("broken", "ft", -1, NAN, status="error", error="RuntimeError: boom")]))
    write_cell(cell_path(tmp_path, "syn", "broken", "prune"),
               to_frame([_rec("broken", "prune", -1, NAN, status="error", error="RuntimeError: boom")]))
    t = _tables(build_report(tmp_path, "syn"))
    t2 = t["table2"].set_index("method")
    assert t2.loc["broken", "Failed cells"] == 2 and t2.loc["broken", "Pairs"] == 0 and pd.isna(t2.loc["broken", "Acc"])
    t3 = t["table3"].set_index("transform")
    assert t3.loc["prune", "Failed cells"] == 1 and t3.loc["ft", "Failed cells"] == 1 and t3.loc["ft", "Pairs"] == 4


def test_a_cell_with_some_error_pairs_is_counted_once(tmp_path: Path) -> None:
    """Scored pairs plus a query-budget error pair: one experiment, not also a failed cell."""
    _good_cell(tmp_path)
    rows = [_rec("m", "lora", 1, 0.9), _rec("m", "lora", 0, 0.1),
            _rec("m", "lora", 0, NAN, status="error", error="QueryBudgetExceeded: 2000 > 1000")]
    write_cell(cell_path(tmp_path, "syn", "m", "lora"), to_frame(rows))
    df = load(tmp_path, "syn")
    t1 = table1(df, None).set_index("Metric")["Value"]
    assert t1["Total Experiments"] == "2" and t1["Failed / not-applicable cells"] == "0"
    assert len(cell_table(df)) == 2


def test_a_failed_rerun_shows_that_the_good_records_were_kept(tmp_path: Path) -> None:
    _good_cell(tmp_path)
    path = cell_path(tmp_path, "syn", "m", "ft")
    assert not write_cell(path, to_frame([_rec("m", "ft", -1, NAN, status="error", error="ValueError: bad split")]),
                          keep_good=True)
    index = build_report(tmp_path, "syn")
    cells = _tables(index)["cells"].set_index("transform")
    assert cells.loc["ft", "status"] == "ok" and cells.loc["ft", "pairs"] == 4
    assert cells.loc["ft", "error"] == "last run failed (good records kept): ValueError: bad split"
    assert "last run failed (good records kept)" in index.read_text()


def test_a_deleted_or_edited_table_is_rewritten_under_an_unchanged_digest(tmp_path: Path) -> None:
    _good_cell(tmp_path)
    index = build_report(tmp_path, "syn")
    first = index.stat().st_mtime_ns
    assert build_report(tmp_path, "syn").stat().st_mtime_ns == first  # unchanged: kept
    (index.parent / "table2.md").unlink()
    build_report(tmp_path, "syn")
    assert (index.parent / "table2.md").exists() and index.stat().st_mtime_ns > first
    (index.parent / "cells.csv").write_text("edited\n")
    build_report(tmp_path, "syn")
    assert pd.read_csv(index.parent / "cells.csv").columns[0] == "method"
