"""The one definition of a calibrated threshold: chosen on held-out negatives at a target FPR, never on the
pairs it scores. Used by the run summary, the tables, ``verify`` and lineage.

Calibration records are the rows of the pseudo-cell ``_calibration`` of each method (owners vs held-out
calibration models, ``role='calibration'``). A threshold carries the number of negatives it came from, so a
reader sees whether that supports the FPR it claims (n >= 1/FPR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fpbench.metrics import calibrate_threshold, effective_sample_size
from fpbench.records import cell_path, read_cell

CALIBRATION = "_calibration"  # the cell name under which a method's calibration records are stored


@dataclass(frozen=True)
class Threshold:
    """A threshold calibrated at ``target_fpr`` on ``negatives`` held-out negative scores."""

    value: float
    target_fpr: float
    negatives: int
    source: str = ""  # where the negatives came from, in words
    # distinct (owner root, suspect root) pairs the negatives come from: a root's children score almost alike
    # against one owner, so this, not ``negatives``, bounds how finely the threshold can resolve an FPR (0: unknown)
    root_pairs: int = 0
    # Kish's effective number of independent negatives over those root-pair clusters (NaN: clusters unknown)
    effective_negatives: float = float("nan")

    @property
    def independent_negatives(self) -> float:
        """The negatives as independent draws: the effective count where the clusters are known, else all."""
        return self.effective_negatives if math.isfinite(self.effective_negatives) else float(self.negatives)

    @property
    def supported(self) -> bool:
        """Whether the calibration set is large enough for the FPR it claims (n >= 1/FPR, n counted as
        independent draws: 204 negatives from 20 root pairs whose children score alike are ~20 draws, not 204)."""
        return self.independent_negatives >= math.ceil(1.0 / self.target_fpr - 1e-9)

    def describe(self) -> str:
        eff = (f" (~{self.effective_negatives:.0f} independent over {self.root_pairs} root pairs)"
               if math.isfinite(self.effective_negatives) else "")
        warn = "" if self.supported else (f"; too few to support FPR {self.target_fpr:g} "
                                          f"(needs >= {math.ceil(1 / self.target_fpr)})")
        return f"calibrated at FPR {self.target_fpr:g} on {self.negatives} negative pairs{eff}{warn}" + (
            f": {self.source}" if self.source else "")


def from_scores(negative_scores: np.ndarray | list[float], target_fpr: float, source: str = "",
                root_pairs: int = 0, effective_negatives: float = float("nan")) -> Threshold | None:
    """The threshold of these negatives' finite scores, or None when there are none."""
    scores = np.asarray([s for s in negative_scores if math.isfinite(s)], dtype=float)
    if scores.size == 0:
        return None
    return Threshold(calibrate_threshold(scores, target_fpr), target_fpr, int(scores.size), source, root_pairs,
                     effective_negatives)


def root_pairs_of(rows: pd.DataFrame) -> pd.Series | None:
    """Each row's (owner root, suspect root) pair as one label (a zoo model's id names its root first); None when
    the rows do not name owners and suspects."""
    if rows.empty or not {"owner", "suspect"} <= set(rows.columns):
        return None
    roots = lambda col: rows[col].astype(str).str.split("/").str[0]  # noqa: E731
    return roots("owner") + " | " + roots("suspect")


def conformal_from_scores(null: np.ndarray | list[float], target_fpr: float, source: str = "") -> Threshold | None:
    """The threshold that agrees with the empirical p-value: a score at or above it has
    ``(1 + #null >= score) / (1 + n) <= target_fpr``, so a new negative exchangeable with the null is accepted
    with probability at most ``target_fpr``. (The quantile rule of :func:`from_scores` lets ``floor(fpr * n)``
    negatives above the threshold, whose FPR on a new negative is ``(floor(fpr * n) + 1) / (n + 1)``: 2/21 at
    n = 20, fpr = 0.05.) Infinite when n is too small for any score to reach ``target_fpr``."""
    scores = np.sort(np.asarray([v for v in null if math.isfinite(v)], dtype=float))[::-1]
    if scores.size == 0:
        return None
    allowed = int(math.floor(target_fpr * (scores.size + 1) + 1e-9)) - 1  # null scores allowed >= the threshold
    value = float("inf") if allowed < 0 else float(np.nextafter(scores[allowed], np.inf))
    return Threshold(value, target_fpr, int(scores.size), source)


def from_records(calibration: pd.DataFrame | None, target_fpr: float, source: str = "") -> Threshold | None:
    """The threshold of a calibration frame's ok rows (None when it has none)."""
    if calibration is None or calibration.empty:
        return None
    ok = calibration[calibration["status"] == "ok"]
    finite = ok[np.isfinite(ok["score"].to_numpy(dtype=float))]
    scores, clusters = finite["score"].to_numpy(dtype=float), root_pairs_of(finite)
    if clusters is None:
        return from_scores(scores, target_fpr, source)
    return from_scores(scores, target_fpr, source, int(clusters.nunique()), effective_sample_size(scores, clusters))


def per_method(calibration: pd.DataFrame, target_fpr: float) -> dict[str, Threshold]:
    """Each method's threshold from a frame of calibration rows of several methods."""
    out = {}
    for method, rows in calibration.groupby("method"):
        t = from_records(rows, target_fpr)
        if t is not None:
            out[str(method)] = t
    return out


def calibration_path(runs_dir: Path | str, zoo: str, method: str) -> Path:
    return cell_path(runs_dir, zoo, method, CALIBRATION)


def stored_null(runs_dir: Path | str, zoo: str, method: str) -> tuple[np.ndarray, str]:
    """Scores of a method's stored calibration pairs on a zoo (owners vs held-out calibration models) and where
    they come from, in words; empty when there are none."""
    df = read_cell(calibration_path(runs_dir, zoo, method))
    if df is None:
        return np.array([]), ""
    ok = df[df["status"] == "ok"]
    roots = sorted({str(s).split("/")[0] for s in ok["suspect"]})  # a calibration child names its root first
    return ok["score"].to_numpy(dtype=float), (f"zoo '{zoo}' owners vs {ok['suspect'].nunique()} held-out "
                                               f"calibration models (roots {', '.join(roots)} and their children)")


def empirical_p_value(score: float, null: np.ndarray | list[float]) -> float:
    """P(a negative scores >= ``score``) estimated from a null sample, ``(1 + #null >= score) / (1 + n)``: never
    0, so a p-value is only as small as the null is large."""
    null = np.asarray([v for v in null if math.isfinite(v)], dtype=float)
    return float((1 + int((null >= score).sum())) / (1 + null.size))
