"""Figures: the accuracy (and AUC) heatmap, method x transformation, and the four-panel figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def _save(fig: plt.Figure, out: Path) -> Path:
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _nothing_scored(out: Path, what: str) -> Path:
    """A figure that says it is empty (no cell was scored), so the page never shows a stale one."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{what}: no cell has valid scores (see the cells table)", ha="center", va="center")
    return _save(fig, out)


def heatmap(cells: pd.DataFrame, out: Path) -> Path:
    """Verification accuracy at the held-out calibrated threshold beside ROC AUC (accuracy alone hides much)."""
    ok = cells[cells["status"] == "ok"]
    if ok.empty:
        return _nothing_scored(out, "heatmap")
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 0.7 * ok["transform"].nunique() * 2 + 4),
                                            1.0 + 0.5 * max(2, ok["method"].nunique())))
    for ax, col, title in ((axes[0], "cal_accuracy", "Verification accuracy (calibrated threshold)"),
                           (axes[1], "auc", "ROC AUC")):
        grid = ok.pivot_table(index="method", columns="transform", values=col)
        sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=True,
                    annot_kws={"size": 7})
        ax.set_title(title)
        ax.set_xlabel("transformation")
    fig.tight_layout()
    return _save(fig, out)


def panels(cells: pd.DataFrame, out: Path) -> Path:
    """(a) accuracy, (b) FPR, (c) mean similarity (positives vs negatives), (d) verify runtime, per method."""
    ok = cells[cells["status"] == "ok"]
    if ok.empty:
        return _nothing_scored(out, "panels")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    specs = [("cal_accuracy", "(a) Verification accuracy (calibrated threshold)"),
             ("cal_fpr", "(b) False positive rate (calibrated threshold)")]
    for ax, (col, title) in zip(axes[0], specs, strict=True):
        sns.barplot(data=ok, x="method", y=col, ax=ax, errorbar=None, color="#4C72B0")
        ax.set_title(title)
        ax.set_ylim(0, 1.05)
        ax.tick_params(axis="x", rotation=45)
    sim = ok.melt(id_vars=["method"], value_vars=["mean_score_pos", "mean_score_neg"], var_name="pairs",
                  value_name="score").replace({"mean_score_pos": "derived", "mean_score_neg": "independent"})
    sns.barplot(data=sim, x="method", y="score", hue="pairs", ax=axes[1][0], errorbar=None)
    axes[1][0].set_title("(c) Mean similarity score")
    axes[1][0].tick_params(axis="x", rotation=45)
    sns.barplot(data=ok, x="method", y="verify_seconds", ax=axes[1][1], errorbar=None, color="#55A868")
    if (ok["verify_seconds"] > 0).any():  # a log axis needs a positive value
        axes[1][1].set_yscale("log")
    axes[1][1].set_title("(d) Verify runtime (s per pair, log)")
    axes[1][1].tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return _save(fig, out)
