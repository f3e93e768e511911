"""The transform-effects table: what each transform did to the models, averaged over the zoo's roots.

Reads ``records/<zoo>/_models.parquet`` (one row per zoo model, written by the cell runner from each
child's info). One row per transform config: task accuracy before (the root's) and after, their
difference, weight sparsity, weight bits (32 = not quantized), the parameter change norm relative to
the root (NaN where the child has another architecture) and how many children were averaged. A child made
for another task (``finetune_transfer``) is judged on that task: its ``task_accuracy`` against the parent's
``parent_task_accuracy`` on the same classes, not its accuracy on the zoo's 10-way test split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fpbench.records import models_path, read_models

log = logging.getLogger(__name__)
COLUMNS = ["transform", "accuracy before", "accuracy after", "accuracy delta", "sparsity", "bits",
           "relative change norm", "n"]
FLOAT_BITS = 32.0  # an unquantized child keeps float32 weights


def _col(df: pd.DataFrame, name: str, default: float = np.nan) -> pd.Series:
    return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(default, index=df.index)


def effects_table(models: pd.DataFrame) -> pd.DataFrame:
    """Mean effect per transform over the children made directly from a root (chains count as one child)."""
    if models.empty or "transform" not in models:
        return pd.DataFrame(columns=COLUMNS)
    # A root's own child is "<root>/<transform>"; a chain's intermediate steps have longer ids and are skipped.
    kids = models[(models["transform"].fillna("") != "") & (models["id"] == models["root"] + "/" + models["transform"])]
    if kids.empty:
        return pd.DataFrame(columns=COLUMNS)
    before = _col(kids, "parent_task_accuracy").fillna(_col(kids, "parent_accuracy"))
    after = _col(kids, "task_accuracy").fillna(_col(kids, "accuracy"))
    frame = pd.DataFrame({
        "transform": kids["transform"],
        "accuracy before": before,
        "accuracy after": after,
        "accuracy delta": after - before,
        "sparsity": _col(kids, "weight_sparsity"),
        "bits": _col(kids, "bits").fillna(FLOAT_BITS),
        "relative change norm": _col(kids, "rel_change_norm"),
    })
    out = frame.groupby("transform", sort=True).mean().reset_index()
    out["n"] = frame.groupby("transform", sort=True).size().to_numpy()
    if (out["bits"] == out["bits"].round()).all():  # whole bit widths print as integers
        out["bits"] = out["bits"].astype(int)
    return out[COLUMNS]


def transform_effects(runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
    """Report section builder (see ``fpbench.report.extra``); None until a cell has recorded the zoo's models
    (or while that file is damaged: the next cell that runs rebuilds it)."""
    path = models_path(runs_dir, zoo)
    models = read_models(path)
    if models is None and path.exists():
        log.warning("%s is damaged: the transform-effects table is left out until a cell run rebuilds it", path)
    return None if models is None else effects_table(models)
