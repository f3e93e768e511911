"""The out-of-zoo check: each method's per-transform AUC on the external case set (models made outside the zoo by
``scripts/external_cases.py`` with plain timm code, on coloured 32x32 digits) beside the same method's AUC on the
zoo's grid cell that makes the same kind of child, so a reader sees whether the grid's numbers carry over.

The case set and its scores live under ``<runs_dir>/external`` (``make external``); this section reads the
summary ``scripts/xcheck_ours.py`` writes there, ``external/ours/summary.csv``, and the zoo's cell records.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fpbench.records import load_records
from fpbench.report import tables

# external cell -> the zoo transform that makes the same kind of child (what each does: EXTERNAL.md)
COUNTERPART = {
    "finetune:light": "finetune",  # a few SGD steps at a low learning rate
    "finetune:heavy": "finetune_heavy",  # Adam(W) at the root's own learning rate for several epochs
    "prune:0.3": "prune30_unstructured",  # 30% magnitude pruning of the weights, then recovery
    "distill": "distill",  # a fresh student of the same architecture on the parent's soft labels
}
COLUMNS = ["method", "external cell", "zoo transform", "zoo AUC", "external AUC", "external - zoo",
           "external positives", "external negatives", "external cal. TPR", "external cal. FPR",
           "external cal. negatives"]


def _kind(cell: str) -> str:
    """The COUNTERPART key of an external cell: the cell itself, or its transform without the strength
    (``distill:T=4,150 steps`` -> ``distill``)."""
    return cell if cell in COUNTERPART else cell.split(":")[0]


def counterpart(cell: str) -> str:
    return COUNTERPART.get(_kind(cell), "")


def summary_path(runs_dir: Path | str) -> Path:
    return Path(runs_dir) / "external" / "ours" / "summary.csv"


def external_table(external: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """One row per method x external cell that has a zoo counterpart (the zoo AUC is NaN where that cell was not
    run); the pooled ``all`` row of the external set is kept with no counterpart."""
    ours = external[external["source"] == "ours"] if "source" in external else external
    zoo_auc = {(r.method, r.transform): r.auc for r in cells[cells["status"] == "ok"].itertuples()}
    rows = []
    for r in ours.itertuples():
        transform = counterpart(r.cell)
        if not transform and r.cell != "all":
            continue
        grid = zoo_auc.get((r.method, transform), float("nan")) if transform else float("nan")
        rows.append({"method": r.method, "external cell": r.cell, "zoo transform": transform or "(pooled)",
                     "zoo AUC": grid, "external AUC": r.auc, "external - zoo": r.auc - grid,
                     "external positives": r.positives, "external negatives": r.negatives,
                     "external cal. TPR": getattr(r, "tpr_cal", float("nan")),
                     "external cal. FPR": getattr(r, "fpr_cal", float("nan")),
                     "external cal. negatives": r.cal_negatives})
    order = {c: i for i, c in enumerate([*COUNTERPART, "all"])}
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["method", "external cell"], key=lambda s: s.map(lambda c: order[_kind(c)])
                             if s.name == "external cell" else s, kind="stable").reset_index(drop=True)


def external_section(runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
    """Report section builder (see ``fpbench.report.extra``): None until ``make external`` has scored the set."""
    path = summary_path(runs_dir)
    if not path.exists():
        return None
    df = tables.grid_records(load_records(runs_dir, zoo).frame)
    cells = tables.cell_table(df, intervals=False) if not df.empty else pd.DataFrame(columns=["method", "transform",
                                                                                              "status", "auc"])
    return external_table(pd.read_csv(path), cells)
