"""Records are never lost silently: damaged files are named, good records survive a failed re-run, and
``_models.parquet`` loses no row when two processes write it at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest

from fpbench.records import (
    Record,
    cell_path,
    cell_state,
    failed_run_path,
    inspect_cell,
    load_records,
    merge_models,
    read_cell,
    read_models,
    to_frame,
    write_cell,
)


def _frame(n: int, transform: str = "t", status: str = "ok", config_hash: str = "h") -> pd.DataFrame:
    return to_frame([Record(zoo="z", method="m", transform=transform, owner=f"o{i}", suspect=f"s{i}", owner_arch="a",
                            suspect_arch="a", label=i % 2, score=0.1 * i, threshold=0.5, decision=0,
                            fingerprint_seconds=0.0, verify_seconds=0.0, owner_accuracy=0.9, suspect_accuracy=0.9,
                            seed=0, config_hash=config_hash, versions="{}", git_commit="", status=status,
                            error="" if status == "ok" else "ValueError: bad split") for i in range(n)])


def _writer(path: str, worker: int, n: int) -> None:
    for i in range(n):
        merge_models(Path(path), {f"w{worker}-{i:03d}": {"root": f"r{worker}", "accuracy": 0.5 + i / 1000}})


def test_models_file_written_from_two_processes_loses_no_row(tmp_path: Path) -> None:
    path = tmp_path / "records" / "z" / "_models.parquet"
    ctx = mp.get_context("spawn")  # a fresh interpreter each, as two launcher workers are
    procs = [ctx.Process(target=_writer, args=(str(path), w, 150)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    df = read_models(path)
    assert df is not None and len(df) == 300 and df["id"].is_unique


def test_damaged_models_file_is_rebuilt_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "_models.parquet"
    merge_models(path, {"a": {"root": "a"}, "b": {"root": "b"}})
    path.write_bytes(b"PAR1 garbage")
    merged = merge_models(path, {"c": {"root": "c"}})
    assert list(merged["id"]) == ["c"] and list(read_models(path)["id"]) == ["c"]
    merged = merge_models(path, {"c": {"root": "c2"}, "d": {"root": "d"}})  # same id replaced, not duplicated
    assert list(merged["id"]) == ["c", "d"] and merged.set_index("id").loc["c", "root"] == "c2"


@pytest.mark.parametrize("damage", ["truncated", "wrong column", "wrong dtype", "empty", "unknown status"])
def test_damaged_cell_files_are_told_apart_from_missing_and_stale(tmp_path: Path, damage: str) -> None:
    path = cell_path(tmp_path, "z", "m", "_calibration")
    assert cell_state(path, "h") == "missing"
    write_cell(path, _frame(4))
    assert cell_state(path, "h") == "done" and cell_state(path, "other") == "stale"
    df = _frame(4)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    else:
        if damage == "wrong column":
            df = df.drop(columns=["score"])
        elif damage == "wrong dtype":
            df["score"] = df["score"].astype(str)
        elif damage == "empty":
            df = df.iloc[:0]
        else:
            df["status"] = "maybe"
        df.to_parquet(path, index=False)
    assert cell_state(path, "h") == "damaged" and read_cell(path) is None
    assert inspect_cell(path)[1] not in ("", "missing")


def test_a_failed_rerun_keeps_the_good_records(tmp_path: Path) -> None:
    path = cell_path(tmp_path, "z", "m", "t")
    write_cell(path, _frame(16), keep_good=True)
    assert not write_cell(path, _frame(1, status="error", config_hash="new"), keep_good=True)
    kept = read_cell(path)
    assert kept is not None and len(kept) == 16 and (kept["status"] == "ok").all()
    loaded = load_records(tmp_path, "z")
    assert loaded.failed_runs[path]["error"] == "ValueError: bad split" and loaded.failed_runs[path]["kept_rows"] == 16
    assert cell_state(path, "new") == "stale"  # the next run retries the cell
    assert write_cell(path, _frame(8, config_hash="new"), keep_good=True)  # a run that succeeds replaces them
    assert len(read_cell(path)) == 8 and not failed_run_path(path).exists()
    # without good records to keep, the failure is the record
    other = cell_path(tmp_path, "z", "m", "u")
    assert write_cell(other, _frame(1, transform="u", status="error"), keep_good=True)
    assert cell_state(other, "h") == "failed"


def test_load_records_names_every_damaged_file_and_keeps_the_rest(tmp_path: Path) -> None:
    write_cell(cell_path(tmp_path, "z", "m", "good"), _frame(5, transform="good"))
    bad = cell_path(tmp_path, "z", "m", "bad")
    write_cell(bad, _frame(5, transform="bad"))
    bad.write_bytes(bad.read_bytes()[:30])
    (tmp_path / "records" / "z" / "_lineage").mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "records" / "z" / "_lineage" / "claims.parquet")  # not a cell
    loaded = load_records(tmp_path, "z")
    assert len(loaded.frame) == 5 and list(loaded.damaged) == [bad]
    assert "unreadable parquet" in loaded.damaged[bad]
