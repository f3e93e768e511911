"""Tables from records: per-cell metrics, Tables I-III (with the paper's values beside ours), extended tables.

Every number here is computed from the parquet records alone. Thresholds: the method's fixed one (the
``threshold`` column) and one calibrated at the target FPR on the method's calibration rows only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fpbench import metrics as M
from fpbench.config import tagged_options
from fpbench.records import load_all

PAPER = yaml.safe_load((Path(__file__).with_name("paper_values.yaml")).read_text())
CALIBRATION = "_calibration"
BOOTSTRAP = 200


def split_records(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(scored pairs with status ok, calibration rows, status rows of failed / n/a cells)."""
    cal = df[(df["role"] == "calibration") & (df["status"] == "ok")]
    pairs = df[(df["role"] == "pair") & (df["transform"] != CALIBRATION)]
    ok = pairs[pairs["status"] == "ok"]
    bad = pairs[pairs["status"] != "ok"]
    return ok, cal, bad


def calibrated_thresholds(cal: pd.DataFrame, target_fpr: float) -> dict[str, float]:
    return {m: M.calibrate_threshold(g["score"].to_numpy(), target_fpr) for m, g in cal.groupby("method")}


def calibrated_decisions(frame: pd.DataFrame, cal_t: dict[str, float]) -> np.ndarray:
    """Decisions at each row's method's calibrated threshold (no calibration -> never verified)."""
    t = frame["method"].map(cal_t).fillna(np.inf).to_numpy(dtype=float)
    s = frame["score"].to_numpy(dtype=float)
    return np.isfinite(s) & (s >= t)


def _bootstrap_ci(labels: np.ndarray, scores: np.ndarray, stat, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, labels.size, labels.size)
        v = stat(labels[idx], scores[idx])
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def cell_table(df: pd.DataFrame, target_fpr: float = 0.01) -> pd.DataFrame:
    """One row per (method, transform): fixed- and calibrated-threshold metrics, AUC with a bootstrap CI, status."""
    ok, cal, bad = split_records(df)
    cal_t = calibrated_thresholds(cal, target_fpr)
    rows = []
    for (method, transform), g in ok.groupby(["method", "transform"]):
        labels, scores = g["label"].to_numpy(), g["score"].to_numpy()
        fixed = M.compute(labels, scores, float(g["threshold"].iloc[0]), target_fpr)
        t_cal = cal_t.get(method, float("nan"))
        calm = M.compute(labels, scores, t_cal, target_fpr) if np.isfinite(t_cal) else None
        finite = np.isfinite(scores)
        auc_lo, auc_hi = _bootstrap_ci(labels[finite], scores[finite], M.auc)
        rows.append({
            "method": method, "transform": transform, "status": "ok", "pairs": fixed.pairs,
            "positives": fixed.positives, "negatives": fixed.negatives, "invalid": fixed.invalid,
            "n/a pairs": 0, "threshold": float(g["threshold"].iloc[0]), "accuracy": fixed.accuracy,
            "tpr": fixed.tpr, "fpr": fixed.fpr, "mean_score": fixed.mean_score,
            "mean_score_pos": fixed.mean_score_pos, "mean_score_neg": fixed.mean_score_neg, "auc": fixed.auc,
            "auc_ci_low": auc_lo, "auc_ci_high": auc_hi, "tpr_at_1fpr": fixed.tpr_at_1fpr,
            "cal_threshold": t_cal, "cal_tpr": calm.tpr if calm else float("nan"),
            "cal_fpr": calm.fpr if calm else float("nan"),
            "fingerprint_seconds": float(g.drop_duplicates("owner")["fingerprint_seconds"].mean()),
            "verify_seconds": float(g["verify_seconds"].mean()), "error": "",
        })
    for (method, transform), g in bad.groupby(["method", "transform"]):
        if ((ok["method"] == method) & (ok["transform"] == transform)).any():
            for r in rows:
                if r["method"] == method and r["transform"] == transform:
                    r["n/a pairs"] = int((g["status"] == "n/a").sum())
            continue
        status = "FAILED" if (g["status"] == "error").any() else "n/a"
        first = str(g["error"].iloc[0]).splitlines()[0] if len(g) else ""
        rows.append({"method": method, "transform": transform, "status": status, "pairs": 0, "error": first})
    cols = ["method", "transform", "status", "pairs", "positives", "negatives", "invalid", "n/a pairs", "threshold",
            "accuracy", "tpr", "fpr", "mean_score", "mean_score_pos", "mean_score_neg", "auc", "auc_ci_low",
            "auc_ci_high", "tpr_at_1fpr", "cal_threshold", "cal_tpr", "cal_fpr", "fingerprint_seconds",
            "verify_seconds", "error"]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["method", "transform"]).reset_index(drop=True)


def _pooled(ok: pd.DataFrame, by: str, cal_t: dict[str, float], target_fpr: float) -> pd.DataFrame:
    rows = []
    for key, g in ok.groupby(by):
        labels, scores = g["label"].to_numpy(), g["score"].to_numpy()
        decisions = np.isfinite(scores) & (scores >= g["threshold"].to_numpy())
        truth = labels == 1
        finite = np.isfinite(scores)
        cal_dec = calibrated_decisions(g, cal_t)
        rows.append({
            by: key, "Acc": float((decisions == truth).mean()),
            "FPR": float(decisions[~truth].mean()) if (~truth).any() else float("nan"),
            "TPR": float(decisions[truth].mean()) if truth.any() else float("nan"),
            "Sim": float(scores[finite].mean()) if finite.any() else float("nan"),
            "Count": int(g.groupby(["method", "transform"]).ngroups), "Pairs": int(len(g)),
            "AUC": M.auc(labels[finite], scores[finite]) if g["method"].nunique() == 1 else float("nan"),
            "TPR@1%FPR": M.tpr_at_fpr(labels[finite], scores[finite], target_fpr) if g["method"].nunique() == 1
            else float("nan"),
            "Cal. TPR": float(cal_dec[truth].mean()) if truth.any() else float("nan"),
            "Cal. FPR": float(cal_dec[~truth].mean()) if (~truth).any() else float("nan"),
        })
    return pd.DataFrame(rows)


def _with_paper(table: pd.DataFrame, key: str, paper: dict) -> pd.DataFrame:
    for i, col in enumerate(["Acc", "FPR", "Sim", "Count"]):
        table[f"paper {col}"] = [paper.get(k, [np.nan] * 4)[i] for k in table[key]]
    return table


def _per_key_table(df: pd.DataFrame, key: str, target_fpr: float) -> pd.DataFrame:
    """Pooled metrics per ``key`` (method or transform) + the mean of its per-cell AUC and TPR@1%FPR."""
    ok, cal, _ = split_records(df)
    t = _pooled(ok, key, calibrated_thresholds(cal, target_fpr), target_fpr)
    if t.empty:
        return t
    cells = cell_table(df, target_fpr)
    per_cell = cells[cells["status"] == "ok"].groupby(key)[["auc", "tpr_at_1fpr"]].mean()
    t["AUC"] = t[key].map(per_cell["auc"])
    t["TPR@1%FPR"] = t[key].map(per_cell["tpr_at_1fpr"])
    return t


def table2(df: pd.DataFrame, target_fpr: float = 0.01) -> pd.DataFrame:
    """By method (paper's Table II) + AUC (mean of per-cell AUCs), TPR@1%FPR, calibrated TPR/FPR."""
    t = _per_key_table(df, "method", target_fpr)
    if t.empty:
        return t
    _, cal, _ = split_records(df)
    t["Cal. threshold"] = t["method"].map(calibrated_thresholds(cal, target_fpr))
    return _with_paper(t, "method", PAPER["table2"])


def table3(df: pd.DataFrame, target_fpr: float = 0.01) -> pd.DataFrame:
    """By transformation (paper's Table III) + mean per-cell AUC and TPR@1%FPR over methods."""
    t = _per_key_table(df, "transform", target_fpr)
    return t if t.empty else _with_paper(t, "transform", PAPER["table3"])


def table1(df: pd.DataFrame, lineage_rate: float | None, target_fpr: float = 0.01,
           lineage_by_method: dict[str, float] | None = None) -> pd.DataFrame:
    """Overall summary (paper's Table I); the lineage rate over every method's claims, then per method."""
    ok, cal, bad = split_records(df)
    cal_t = calibrated_thresholds(cal, target_fpr)
    scores, labels = ok["score"].to_numpy(), ok["label"].to_numpy()
    decisions = np.isfinite(scores) & (scores >= ok["threshold"].to_numpy())
    truth = labels == 1
    cells = ok.groupby(["method", "transform"]).ngroups
    cal_dec = calibrated_decisions(ok, cal_t)
    nan = float("nan")
    rows = [
        ("Total Experiments", cells),
        ("Failed / not-applicable cells", int(bad.groupby(["method", "transform"]).ngroups)),
        ("Scored pairs", int(len(ok))),
        ("Overall Verification Accuracy", float((decisions == truth).mean()) if len(ok) else nan),
        ("Overall False Positive Rate", float(decisions[~truth].mean()) if (~truth).any() else nan),
        ("Overall True Positive Rate", float(decisions[truth].mean()) if truth.any() else nan),
        ("Overall FPR at calibrated thresholds", float(cal_dec[~truth].mean()) if (~truth).any() else nan),
        ("Overall TPR at calibrated thresholds", float(cal_dec[truth].mean()) if truth.any() else nan),
        ("Average Similarity Score", float(np.nanmean(np.where(np.isfinite(scores), scores, np.nan))) if len(ok) else nan),
        ("Lineage Tracking Success Rate", lineage_rate if lineage_rate is not None else "n/a"),
        *[(f"Lineage Tracking Success Rate ({m})", r) for m, r in sorted((lineage_by_method or {}).items())],
        ("Average Runtime (seconds)", float(ok["verify_seconds"].mean()) if len(ok) else nan),
    ]
    t = pd.DataFrame([(m, f"{v:.4f}" if isinstance(v, float) else str(v)) for m, v in rows], columns=["Metric", "Value"])
    t["Paper"] = [PAPER["table1"].get(m, "") for m in t["Metric"]]
    return t


def runtime_table(df: pd.DataFrame) -> pd.DataFrame:
    ok, _, _ = split_records(df)
    if ok.empty:
        return pd.DataFrame()
    fp = ok.drop_duplicates(["method", "owner"]).groupby("method")["fingerprint_seconds"].mean()
    out = ok.groupby("method").agg(verify_seconds_per_pair=("verify_seconds", "mean"),
                                   queries_per_pair=("queries", "mean"), pairs=("score", "size"))
    out.insert(0, "fingerprint_seconds_per_owner", fp)
    return out.reset_index()


def load(runs_dir: Path, zoo: str | None) -> pd.DataFrame:
    return load_all(runs_dir, zoo)


def grid_records(df: pd.DataFrame) -> pd.DataFrame:
    """The records of the transformation grid: the attack study's cells (removal strengths, partial
    re-initialisation, the unmodified ``identity`` control) have their own table and would skew the grid's."""
    return df[~df["transform"].isin(tagged_options("transform", "attack_study"))].reset_index(drop=True)
