"""Tables from records: per-cell metrics, Tables I-III (with the paper's values beside ours), extended tables.

Every number here is computed from the parquet records alone. One threshold regime: Acc / TPR / FPR are at each
method's threshold calibrated at the target FPR on its held-out calibration rows only (their count is shown, with
the realised FPR's exact binomial interval and owner-clustered bootstrap intervals); the method's fixed threshold
(the ``threshold`` column, e.g. the paper's tau) is a secondary, labelled column. TPR@1%FPR chosen on the scored
pairs is an in-sample oracle and says so in its header.

Every cell is counted once, by its status in the cells table: ``ok`` (scored: an experiment), ``FAILED`` (an
error record, or a records file that could not be read), ``INVALID`` (every score NaN/inf: nothing was
measured, so it stays out of the pooled tables) or ``n/a``. A method or transform whose cells all failed still
has its row in Tables II-III, with the failures counted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fpbench import metrics as M
from fpbench import thresholds
from fpbench.config import tagged_options
from fpbench.records import LoadedRecords, Record, cell_of, load_all, rerun_command, to_frame
from fpbench.thresholds import CALIBRATION

PAPER = yaml.safe_load((Path(__file__).with_name("paper_values.yaml")).read_text())
BOOTSTRAP = 200
NO_INTERVAL = (float("nan"), float("nan"))
DAMAGED = "records file unreadable"


def split_records(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(scored pairs with status ok, calibration rows, rows of failed / invalid / n/a cells).

    The ok rows of a cell whose every score is invalid (NaN/inf) go with the bad rows: that cell measured nothing."""
    cal = df[(df["role"] == "calibration") & (df["status"] == "ok")]
    pairs = df[(df["role"] == "pair") & (df["transform"] != CALIBRATION)]
    ok = pairs[pairs["status"] == "ok"]
    finite = np.isfinite(ok["score"].to_numpy(dtype=float))
    measured = pd.Series(finite, index=ok.index).groupby([ok["method"], ok["transform"]]).transform("any")
    bad = pd.concat([pairs[pairs["status"] != "ok"], ok[~measured.astype(bool)]])
    return ok[measured.astype(bool)], cal, bad


def _share(label: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """The share of the pairs of this label decided 'derived' (TPR for 1, FPR for 0; NaN when there are none)."""
    def share(labels: np.ndarray, decisions: np.ndarray) -> float:
        d = decisions[labels == label]
        return float(d.mean()) if d.size else float("nan")
    return share


def _finite_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    finite = np.isfinite(scores)
    return M.auc(labels[finite], scores[finite])


def _mean_cell_auc(labels: np.ndarray, scores: np.ndarray, cells: np.ndarray) -> float:
    vals = [v for c in np.unique(cells) if np.isfinite(v := _finite_auc(labels[cells == c], scores[cells == c]))]
    return float(np.mean(vals)) if vals else float("nan")


def _decision_intervals(g: pd.DataFrame, decisions: np.ndarray) -> dict[str, tuple[float, float]]:
    """TPR and FPR intervals of these decisions, resampling owners, and the realised FPR's exact binomial one."""
    labels, owners = g["label"].to_numpy(), g["owner"].to_numpy()
    negatives = labels == 0
    return {"tpr": M.owner_bootstrap_ci(owners, _share(1), labels, decisions, n=BOOTSTRAP),
            "fpr": M.owner_bootstrap_ci(owners, _share(0), labels, decisions, n=BOOTSTRAP),
            "binomial": M.binomial_ci(int(decisions[negatives].sum()), int(negatives.sum()))}


def calibrated_thresholds(cal: pd.DataFrame, target_fpr: float) -> dict[str, float]:
    """Each method's threshold calibrated on its held-out negatives (``fpbench.thresholds``: the one definition)."""
    return {m: t.value for m, t in thresholds.per_method(cal, target_fpr).items()}


def calibrated_decisions(frame: pd.DataFrame, cal_t: dict[str, float]) -> np.ndarray:
    """Decisions at each row's method's calibrated threshold (no calibration -> never verified)."""
    t = frame["method"].map(cal_t).fillna(np.inf).to_numpy(dtype=float)
    s = frame["score"].to_numpy(dtype=float)
    return np.isfinite(s) & (s >= t)


def cell_table(df: pd.DataFrame, target_fpr: float = 0.01, intervals: bool = True) -> pd.DataFrame:
    """One row per (method, transform): fixed- and calibrated-threshold metrics, AUC with an owner-clustered
    bootstrap CI, status. ``intervals=False`` leaves the intervals NaN (a caller that reads only point values)."""
    ok, cal, bad = split_records(df)
    cal_thresholds = thresholds.per_method(cal, target_fpr)
    rows = []
    for (method, transform), g in ok.groupby(["method", "transform"]):
        labels, scores = g["label"].to_numpy(), g["score"].to_numpy()
        fixed = M.compute(labels, scores, float(g["threshold"].iloc[0]), target_fpr)
        held_out = cal_thresholds.get(method)
        t_cal = held_out.value if held_out else float("nan")
        calm = M.compute(labels, scores, t_cal, target_fpr) if np.isfinite(t_cal) else None
        # Intervals resample owners, not pairs: the pairs of one owner share its fingerprint.
        auc_lo, auc_hi = (M.owner_bootstrap_ci(g["owner"], _finite_auc, labels, scores.astype(float), n=BOOTSTRAP)
                          if intervals else NO_INTERVAL)
        ci = (_decision_intervals(g, np.isfinite(scores) & (scores >= t_cal)) if calm and intervals
              else dict.fromkeys(("tpr", "fpr", "binomial"), NO_INTERVAL))
        (tpr_lo, tpr_hi), (fpr_lo, fpr_hi), (binom_lo, binom_hi) = ci["tpr"], ci["fpr"], ci["binomial"]
        rows.append({
            "method": method, "transform": transform, "status": "ok", "pairs": fixed.pairs,
            "positives": fixed.positives, "negatives": fixed.negatives, "invalid": fixed.invalid,
            "n/a pairs": 0, "threshold": float(g["threshold"].iloc[0]), "accuracy": fixed.accuracy,
            "tpr": fixed.tpr, "fpr": fixed.fpr, "mean_score": fixed.mean_score,
            "mean_score_pos": fixed.mean_score_pos, "mean_score_neg": fixed.mean_score_neg, "auc": fixed.auc,
            "auc_ci_low": auc_lo, "auc_ci_high": auc_hi, "tpr_at_1fpr": fixed.tpr_at_1fpr,
            "cal_threshold": t_cal, "cal_negatives": held_out.negatives if held_out else 0,
            "cal_accuracy": calm.accuracy if calm else float("nan"),
            "cal_tpr": calm.tpr if calm else float("nan"), "cal_tpr_ci_low": tpr_lo, "cal_tpr_ci_high": tpr_hi,
            "cal_fpr": calm.fpr if calm else float("nan"), "cal_fpr_ci_low": fpr_lo, "cal_fpr_ci_high": fpr_hi,
            "cal_fpr_binom_low": binom_lo, "cal_fpr_binom_high": binom_hi,
            "fingerprint_seconds": float(g.drop_duplicates("owner")["fingerprint_seconds"].mean()),
            "verify_seconds": float(g["verify_seconds"].mean()), "error": "",
        })
    for (method, transform), g in bad.groupby(["method", "transform"]):
        if ((ok["method"] == method) & (ok["transform"] == transform)).any():
            for r in rows:
                if r["method"] == method and r["transform"] == transform:
                    r["n/a pairs"] = int((g["status"] == "n/a").sum())
            continue
        rows.append(_status_row(method, transform, g))
    cols = ["method", "transform", "status", "pairs", "positives", "negatives", "invalid", "n/a pairs", "threshold",
            "accuracy", "tpr", "fpr", "mean_score", "mean_score_pos", "mean_score_neg", "auc", "auc_ci_low",
            "auc_ci_high", "tpr_at_1fpr", "cal_threshold", "cal_negatives", "cal_accuracy", "cal_tpr", "cal_tpr_ci_low",
            "cal_tpr_ci_high", "cal_fpr", "cal_fpr_ci_low", "cal_fpr_ci_high", "cal_fpr_binom_low",
            "cal_fpr_binom_high", "fingerprint_seconds",
            "verify_seconds", "error"]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["method", "transform"]).reset_index(drop=True)


def _status_row(method: str, transform: str, g: pd.DataFrame) -> dict:
    """The cells-table row of a cell with no usable score: FAILED (errors), INVALID (only NaN/inf scores) or n/a."""
    if (g["status"] == "error").any():
        errors = g.loc[g["status"] == "error", "error"]
        return {"method": method, "transform": transform, "status": "FAILED", "pairs": 0,
                "error": (str(errors.iloc[0]).splitlines() or [""])[0]}
    if (g["status"] == "ok").all():
        return {"method": method, "transform": transform, "status": "INVALID", "pairs": len(g), "invalid": len(g),
                "positives": int((g["label"] == 1).sum()), "negatives": int((g["label"] == 0).sum()),
                "error": f"every score is NaN or infinite ({len(g)} pairs): nothing was measured; "
                         f"re-run: {rerun_command(str(g['zoo'].iloc[0]), method, transform)}"}
    first = g.loc[g["status"] == "n/a", "error"]
    return {"method": method, "transform": transform, "status": "n/a", "pairs": 0,
            "error": (str(first.iloc[0]).splitlines() or [""])[0] if len(first) else ""}


def status_counts(cells: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per ``key`` (method or transform): how many of its cells failed (FAILED or INVALID) and how many are n/a."""
    failed = cells["status"].isin(["FAILED", "INVALID"])
    return pd.DataFrame({"Failed cells": failed.groupby(cells[key]).sum(),
                         "n/a cells": (cells["status"] == "n/a").groupby(cells[key]).sum()}).astype(int)


def _pooled(ok: pd.DataFrame, by: str, cal: dict[str, thresholds.Threshold], target_fpr: float) -> pd.DataFrame:
    """One regime: Acc / TPR / FPR at each method's held-out calibrated threshold (with the FPR's exact binomial
    interval over the scored negatives and owner-clustered intervals); the fixed thresholds second, labelled."""
    cal_t = {m: t.value for m, t in cal.items()}
    rows = []
    for key, g in ok.groupby(by):
        labels, scores = g["label"].to_numpy(), g["score"].to_numpy()
        fixed_dec = np.isfinite(scores) & (scores >= g["threshold"].to_numpy())
        truth = labels == 1
        finite = np.isfinite(scores)
        dec = calibrated_decisions(g, cal_t)
        one_method = g["method"].nunique() == 1
        held_out = cal.get(str(g["method"].iloc[0])) if one_method else None
        n_neg = int((~truth).sum())
        ci = _decision_intervals(g, dec)
        cells = (g["method"] + "/" + g["transform"]).to_numpy()
        auc_ci = (M.owner_bootstrap_ci(g["owner"], _mean_cell_auc, labels, scores.astype(float), cells, n=BOOTSTRAP)
                  if one_method else NO_INTERVAL)
        rows.append({
            by: key, "Acc": float((dec == truth).mean()),
            "TPR": float(dec[truth].mean()) if truth.any() else float("nan"),
            "TPR CI": _interval(ci["tpr"]),
            "FPR": float(dec[~truth].mean()) if n_neg else float("nan"),
            "FPR CI (binomial)": _interval(ci["binomial"]), "FPR CI (owners)": _interval(ci["fpr"]),
            "AUC CI (owners)": _interval(auc_ci),
            "Cal. threshold": held_out.value if held_out else float("nan"),
            "Cal. negatives": held_out.negatives if held_out else 0,
            "Cal. root pairs": held_out.root_pairs if held_out else 0,
            "Cal. effective negatives": held_out.independent_negatives if held_out else float("nan"),
            "Supports target FPR": ("yes" if held_out.supported else "no") if held_out else "",
            "Guaranteed FPR": (M.quantile_rule_fpr(target_fpr, int(held_out.independent_negatives))
                               if held_out else float("nan")),
            "Sim": float(scores[finite].mean()) if finite.any() else float("nan"),
            "Count": int(g.groupby(["method", "transform"]).ngroups), "Pairs": int(len(g)),
            "Fixed-t Acc": float((fixed_dec == truth).mean()),
            "Fixed-t TPR": float(fixed_dec[truth].mean()) if truth.any() else float("nan"),
            "Fixed-t FPR": float(fixed_dec[~truth].mean()) if n_neg else float("nan"),
            "Fixed t": float(g["threshold"].iloc[0]) if one_method else float("nan"),
        })
    return pd.DataFrame(rows)


def _interval(ci: tuple[float, float]) -> str:
    lo, hi = ci
    return f"{lo:.2f}-{hi:.2f}" if np.isfinite(lo) and np.isfinite(hi) else ""


def _with_paper(table: pd.DataFrame, key: str, paper: dict) -> pd.DataFrame:
    for i, col in enumerate(["Acc", "FPR", "Sim", "Count"]):
        table[f"paper {col}"] = [paper.get(k, [np.nan] * 4)[i] for k in table[key]]
    return table


def _per_key_table(df: pd.DataFrame, key: str, target_fpr: float) -> pd.DataFrame:
    """Pooled metrics per ``key`` (method or transform) + the mean of its per-cell AUC and TPR@1%FPR."""
    ok, cal, _ = split_records(df)
    t = _pooled(ok, key, thresholds.per_method(cal, target_fpr), target_fpr)
    cells = cell_table(df, target_fpr, intervals=False)  # only its AUC, oracle TPR and statuses are read
    if cells.empty:
        return t
    # A key whose every cell failed keeps its row (no scores, its failures counted) instead of vanishing.
    absent = sorted(set(cells[key]) - set(t[key] if len(t) else []))
    if absent:
        filler = pd.DataFrame({key: absent, "Count": 0, "Pairs": 0})
        t = pd.concat([t, filler], ignore_index=True) if len(t) else filler
    per_cell = cells[cells["status"] == "ok"].groupby(key)[["auc", "tpr_at_1fpr"]].mean()
    t["AUC"] = t[key].map(per_cell["auc"])
    t["TPR@1%FPR (in-sample oracle)"] = t[key].map(per_cell["tpr_at_1fpr"])
    counts = status_counts(cells, key)
    for col in counts:
        t[col] = t[key].map(counts[col]).fillna(0).astype(int)
    t[["Count", "Pairs"]] = t[["Count", "Pairs"]].astype(int)
    return t.sort_values(key).reset_index(drop=True)


def shadow_seen_cells(method: str, transforms: list[str]) -> str:
    """The cells (transforms) whose transform family the method's shadow models were made with: there the method
    is scored on an attack it was trained against. "-" when none; "?" when the method's config is unknown."""
    from fpbench.config import load_option
    from fpbench.registry import method_class
    from fpbench.shadows import transform_families

    try:
        cfg = load_option("method", method)
        instance = method_class(cfg.get("impl", cfg["name"]))(cfg.get("params") or {}, None, name=method)
        seen = instance.shadow_families()
        hits = [t for t in transforms if transform_families(load_option("transform", t)) & seen]
    except Exception:  # a method or transform without a config (records written by hand): say so, don't guess
        return "?"
    return ", ".join(sorted(hits)) or "-"


def table2(df: pd.DataFrame, target_fpr: float = 0.01) -> pd.DataFrame:
    """By method (paper's Table II) + AUC (mean of per-cell AUCs), TPR@1%FPR, calibrated TPR/FPR, and the cells
    whose transform family the method's shadow models saw in training."""
    t = _per_key_table(df, "method", target_fpr)
    if t.empty:
        return t
    pairs = df[df["role"] == "pair"]
    t["Shadow-trained cells"] = [shadow_seen_cells(m, sorted(set(pairs.loc[pairs["method"] == m, "transform"])))
                                 for m in t["method"]]
    return _with_paper(t, "method", PAPER["table2"])


def table3(df: pd.DataFrame, target_fpr: float = 0.01) -> pd.DataFrame:
    """By transformation (paper's Table III) + mean per-cell AUC and TPR@1%FPR over methods."""
    t = _per_key_table(df, "transform", target_fpr)
    return t if t.empty else _with_paper(t, "transform", PAPER["table3"])


def table1(df: pd.DataFrame, lineage_rate: float | None, target_fpr: float = 0.01,
           lineage_by_method: dict[str, float] | None = None) -> pd.DataFrame:
    """Overall summary (paper's Table I); the lineage rate over every method's claims, then per method."""
    ok, cal, _ = split_records(df)
    cal_t = calibrated_thresholds(cal, target_fpr)
    scores, labels = ok["score"].to_numpy(), ok["label"].to_numpy()
    decisions = np.isfinite(scores) & (scores >= ok["threshold"].to_numpy())
    truth = labels == 1
    status = cell_table(df, target_fpr)["status"]  # each cell counted once, by its status
    failed, na = int(status.isin(["FAILED", "INVALID"]).sum()), int((status == "n/a").sum())
    cal_dec = calibrated_decisions(ok, cal_t)
    nan = float("nan")
    rows = [
        ("Total Experiments", int((status == "ok").sum())),
        ("Failed / not-applicable cells", failed + na),
        ("Failed cells (errors, invalid scores, unreadable records)", failed),
        ("Scored pairs", int(len(ok))),
        # One regime: every method at its held-out calibrated threshold; the fixed thresholds second, labelled.
        ("Overall Verification Accuracy", float((cal_dec == truth).mean()) if len(ok) else nan),
        ("Overall False Positive Rate", float(cal_dec[~truth].mean()) if (~truth).any() else nan),
        ("Overall True Positive Rate", float(cal_dec[truth].mean()) if truth.any() else nan),
        ("Overall Verification Accuracy (fixed thresholds, secondary)",
         float((decisions == truth).mean()) if len(ok) else nan),
        ("Overall False Positive Rate (fixed thresholds, secondary)",
         float(decisions[~truth].mean()) if (~truth).any() else nan),
        ("Overall True Positive Rate (fixed thresholds, secondary)",
         float(decisions[truth].mean()) if truth.any() else nan),
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


def with_damaged(loaded: LoadedRecords) -> pd.DataFrame:
    """The loaded records plus one error row per unreadable cell file, so each shows as a FAILED cell that says
    how to re-run it. (A damaged calibration file is reported by :func:`problems`: it is not a cell.)"""
    rows = []
    for path, why in loaded.damaged.items():
        zoo, method, transform = cell_of(path)
        if transform == CALIBRATION:
            continue
        rows.append(Record(zoo=zoo, method=method, transform=transform, owner="", suspect="", owner_arch="",
                           suspect_arch="", label=-1, score=float("nan"), threshold=float("nan"), decision=0,
                           fingerprint_seconds=float("nan"), verify_seconds=float("nan"),
                           owner_accuracy=float("nan"), suspect_accuracy=float("nan"), seed=-1, config_hash="",
                           versions="{}", git_commit="", status="error",
                           error=f"{DAMAGED} ({why}); re-run: {rerun_command(zoo, method, transform)}"))
    if not rows:
        return loaded.frame
    extra = to_frame(rows)
    return pd.concat([loaded.frame, extra], ignore_index=True) if len(loaded.frame) else extra


def problems(loaded: LoadedRecords) -> pd.DataFrame:
    """One row per records file the report could not use as it stands: damaged files, and cells whose last run
    failed while their good records were kept. Each says what to run."""
    rows = []
    for path, why in loaded.damaged.items():
        zoo, method, transform = cell_of(path)
        what = "calibration unreadable: calibrated thresholds missing" if transform == CALIBRATION else \
            "records unreadable: counted as a FAILED cell"
        rows.append({"file": "/".join(path.parts[-3:]), "problem": f"{what} ({why})",
                     "fix": rerun_command(zoo, method, "<any of its transforms>" if transform == CALIBRATION
                                          else transform)})
    for path, note in loaded.failed_runs.items():
        zoo, method, transform = cell_of(path)
        first = (str(note.get("error", "")).splitlines() or [""])[0]
        rows.append({"file": "/".join(path.parts[-3:]), "problem": f"last run failed (good records kept): {first}",
                     "fix": f"fix the cause, then {rerun_command(zoo, method, transform)}"})
    return pd.DataFrame(rows, columns=["file", "problem", "fix"])


def mark_failed_runs(cells: pd.DataFrame, loaded: LoadedRecords) -> pd.DataFrame:
    """Note in the cells table each cell whose last run failed while its good records were kept."""
    cells = cells.copy()
    for path, note in loaded.failed_runs.items():
        _, method, transform = cell_of(path)
        hit = (cells["method"] == method) & (cells["transform"] == transform)
        first = (str(note.get("error", "")).splitlines() or [""])[0]
        cells.loc[hit, "error"] = f"last run failed (good records kept): {first}"
    return cells


def grid_records(df: pd.DataFrame) -> pd.DataFrame:
    """The records of the transformation grid: the attack study's cells (removal strengths, partial
    re-initialisation, the unmodified ``identity`` control) have their own table and would skew the grid's."""
    return df[~df["transform"].isin(tagged_options("transform", "attack_study"))].reset_index(drop=True)
