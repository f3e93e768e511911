"""The language zoo's section: each LLM method's numbers as LeaFBench reports them, beside the harness's.

LeaFBench (shaoshuo-ss/LeaFBench, ``benchmark/``) scores a method by the AUC of its scores, the KS statistic
between derived and independent scores, their mean difference, and accuracy at the Youden threshold (the point of
the ROC curve that maximises TPR - FPR) -- chosen on the very pairs it then scores. The harness keeps that number
for comparison and labels it *in-sample*; its own verdicts use the threshold calibrated on held-out negatives
(``cal. TPR`` / ``cal. FPR``, the calibration roots and their children). Rows: every method pooled over the grid,
then by derivative type (transform) and by family (the owner's architecture).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.metrics import roc_curve

from fpbench import metrics as M
from fpbench import thresholds
from fpbench.config import zoo_modality
from fpbench.errors import ConfigError
from fpbench.records import load_records
from fpbench.report import tables

COLUMNS = ["method", "by", "group", "positives", "negatives", "auc", "ks", "mean_diff", "youden_t_in_sample",
           "youden_acc_in_sample", "cal_threshold", "cal_tpr", "cal_fpr"]


def youden(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) at the point of the ROC curve maximising TPR - FPR (the highest such threshold), chosen on these pairs."""
    fpr, tpr, ts = roc_curve(labels, scores, drop_intermediate=False)  # ties: the highest threshold
    j = tpr - fpr
    i = int(np.flatnonzero(j >= j.max() - 1e-12)[0])  # equal up to rounding: the first, highest threshold
    t = float(ts[i])
    return t, float(((scores >= t).astype(int) == labels).mean())


def leafbench_row(method: str, by: str, group: str, g: pd.DataFrame, cal_t: float) -> dict:
    labels, scores = g["label"].to_numpy(), g["score"].to_numpy(dtype=float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    row = {"method": method, "by": by, "group": group, "positives": len(pos), "negatives": len(neg),
           "auc": M.auc(labels, scores), "cal_threshold": cal_t}
    if len(pos) and len(neg):
        t, acc = youden(labels, scores)
        row |= {"ks": float(ks_2samp(pos, neg).statistic), "mean_diff": float(pos.mean() - neg.mean()),
                "youden_t_in_sample": t, "youden_acc_in_sample": acc}
    if np.isfinite(cal_t):
        row |= {"cal_tpr": float((pos >= cal_t).mean()) if len(pos) else np.nan,
                "cal_fpr": float((neg >= cal_t).mean()) if len(neg) else np.nan}
    return row


def llm_table(df: pd.DataFrame, target_fpr: float = 0.01) -> pd.DataFrame:
    ok, cal, _ = tables.split_records(df)
    ok = ok[np.isfinite(ok["score"].to_numpy(dtype=float))]
    cal_t = {m: t.value for m, t in thresholds.per_method(cal, target_fpr).items()}
    rows = []
    for method, g in ok.groupby("method"):
        t = cal_t.get(method, float("nan"))
        rows.append(leafbench_row(method, "all", "all", g, t))
        for by, column in (("derivative", "transform"), ("family", "owner_arch")):
            rows += [leafbench_row(method, by, str(k), sub, t) for k, sub in g.groupby(column)]
    return pd.DataFrame(rows, columns=COLUMNS)


def llm_section(runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
    """Report section builder (``fpbench.report.extra``): only for a language zoo."""
    try:
        language = zoo_modality(zoo) == "language"
    except ConfigError:  # a zoo name without a config (records from elsewhere): not a language zoo we know
        return None
    if not language:
        return None
    df = tables.grid_records(load_records(runs_dir, zoo).frame)
    return llm_table(df) if not df.empty else None
