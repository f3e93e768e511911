"""End to end on the ci zoo: a cell through the CLI, its typed records, then tables regenerated from records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fpbench.records import COLUMNS, cell_path


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def test_cell_then_tables(ci_zoo, ci_runs_dir: Path) -> None:
    proc = _run("-m", "fpbench.run", "zoo=ci", "method=cmf", "transform=finetune", f"runs_dir={ci_runs_dir}",
                "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [ln for ln in proc.stdout.splitlines() if ln.startswith("[ci] cmf x finetune")]
    assert len(summary) == 1 and "AUC" in summary[0] and "TPR@1%FPR" in summary[0], proc.stdout

    df = pd.read_parquet(cell_path(ci_runs_dir, "ci", "cmf", "finetune"))
    assert list(df.columns) == COLUMNS
    assert df["score"].dtype == "float64" and df["label"].dtype == "int64"
    n = len(ci_zoo.roots())
    assert (df["label"] == 1).sum() == n and (df["label"] == 0).sum() == n * (n - 1)
    # every model works: accuracy through the query pipeline far above chance (10 classes)
    assert df["owner_accuracy"].min() > 0.5 and df["suspect_accuracy"].min() > 0.5
    # a fine-tuned child scores above every independent of its own owner
    for owner, g in df.groupby("owner"):
        assert g.loc[g["label"] == 1, "score"].min() > g.loc[g["label"] == 0, "score"].max(), owner

    again = _run("-m", "fpbench.run", "zoo=ci", "method=cmf", "transform=finetune", f"runs_dir={ci_runs_dir}")
    assert again.returncode == 0 and "[cached]" in again.stdout

    tables = _run("-m", "fpbench.report", f"runs_dir={ci_runs_dir}", "zoo=ci", timeout=300)
    assert tables.returncode == 0, tables.stderr[-3000:]
    out = ci_runs_dir / "tables"
    for name in ("heatmap.png", "panels.png", "index.html", "table1.md", "table2.csv", "table3.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # the tables say what the records say: the cells table's cmf x finetune row holds this cell's pairs and AUC
    from fpbench import metrics as M

    cells = pd.read_csv(out / "cells.csv")
    row = cells[(cells["method"] == "cmf") & (cells["transform"] == "finetune")].iloc[0]
    ok = df[df["status"] == "ok"]
    # over the pairs the method could compare (cmf: same-architecture pairs; the others are n/a with a reason)
    assert row["pairs"] == len(ok) and row["positives"] == (ok["label"] == 1).sum() == n
    assert row["negatives"] == (ok["label"] == 0).sum() and row["n/a pairs"] == (df["status"] == "n/a").sum()
    assert row["auc"] == pytest.approx(M.auc(ok["label"].to_numpy(), ok["score"].to_numpy()), abs=1e-9)
    assert "cmf" in set(pd.read_csv(out / "table2.csv")["method"])
    html = (out / "index.html").read_text()
    assert "Table II" in html and "cmf" in html and "heatmap.png" in html
