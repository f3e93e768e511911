"""Killing a sweep half way and re-running it completes the grid with no duplicate and no missing records."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd

from fpbench.zoo.store import ArtefactStore

CELLS = ["finetune", "prune30", "quant8"]


def _sweep(runs_dir):
    return [sys.executable, "-m", "fpbench.run", "-m", "zoo=ci", "method=sac", f"transform={','.join(CELLS)}",
            f"runs_dir={runs_dir}", "progress=false"]


def test_killed_sweep_resumes_without_duplicates_or_gaps(tmp_path, ci_zoo, ci_runs_dir):
    # the session's built roots, so the kill lands in this sweep's own work (calibration, children, cells)
    shutil.copytree(ci_runs_dir / "cache" / "zoo", tmp_path / "cache" / "zoo")
    records = tmp_path / "records" / "ci" / "sac"
    proc = subprocess.Popen(_sweep(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600  # generous: a loaded 2-core machine
    while time.time() < deadline and not (records / f"{CELLS[0]}.parquet").exists():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep: the first cell is written, the others are not (all) done
    proc.wait()
    assert (records / f"{CELLS[0]}.parquet").exists(), "the first cell never finished"
    first_cell = pd.read_parquet(records / f"{CELLS[0]}.parquet")

    out = subprocess.run(_sweep(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[cached]" in out.stdout  # the finished cell is skipped, not recomputed
    for cell in CELLS:
        df = pd.read_parquet(records / f"{cell}.parquet")
        assert len(df) == 16 and not df.duplicated(["owner", "suspect"]).any(), cell
        assert (df["status"] == "ok").all(), cell
    assert pd.read_parquet(records / f"{CELLS[0]}.parquet").equals(first_cell)
    # every artefact a reader can find is whole (a killed write leaves at most a hidden temp dir, never a key)
    store = ArtefactStore(tmp_path / "cache" / "zoo")
    keys = [d.name for d in (tmp_path / "cache" / "zoo").glob("*/*") if d.is_dir() and not d.name.startswith(".")]
    assert keys
    for key in keys:
        store.load(key)  # raises CorruptArtefact on a partial or altered artefact
