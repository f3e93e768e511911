"""Robustness curves: per method, AUC and calibrated TPR against each transform family's strength, beside what the
transform cost the child (task accuracy, relative weight change) -- the robustness-utility picture.

The families and their strengths are listed in ``curves.yaml``; a strength whose cell was not run is left out (the
table says which cells exist). Built from the records and ``_models.parquet`` alone.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from fpbench.records import load_records, models_path, read_models  # noqa: E402
from fpbench.report import tables  # noqa: E402
from fpbench.report.effects import effects_table  # noqa: E402

CURVES: dict[str, list[str]] = yaml.safe_load(Path(__file__).with_name("curves.yaml").read_text())
COLUMNS = ["family", "strength", "transform", "method", "AUC", "Cal. TPR", "Cal. FPR", "child accuracy",
           "relative change norm"]


def robustness_table(cells: pd.DataFrame, effects: pd.DataFrame, curves: dict[str, list[str]] = CURVES) -> pd.DataFrame:
    """One row per (family, strength, method) whose cell was scored."""
    ok = cells[cells["status"] == "ok"].set_index(["method", "transform"])
    eff = effects.set_index("transform") if len(effects) else pd.DataFrame(columns=["accuracy after",
                                                                                   "relative change norm"])
    rows = []
    for family, steps in curves.items():
        for strength, transform in enumerate(steps, start=1):
            for method in sorted({m for m, t in ok.index if t == transform}):
                cell = ok.loc[(method, transform)]
                rows.append({"family": family, "strength": strength, "transform": transform, "method": method,
                             "AUC": cell["auc"], "Cal. TPR": cell["cal_tpr"], "Cal. FPR": cell["cal_fpr"],
                             "child accuracy": eff["accuracy after"].get(transform, float("nan")),
                             "relative change norm": eff["relative change norm"].get(transform, float("nan"))})
    return pd.DataFrame(rows, columns=COLUMNS)


def draw(table: pd.DataFrame, out: Path) -> Path:
    """Per family: AUC (top) and calibrated TPR (bottom) against strength, one line per method; the child's task
    accuracy on the right axis (black, dashed)."""
    families = [f for f in CURVES if f in set(table["family"])]
    fig, axes = plt.subplots(2, len(families), figsize=(3.4 * len(families), 6.4), squeeze=False)
    for col, family in enumerate(families):
        g = table[table["family"] == family]
        acc = g.drop_duplicates("transform")
        for row, metric in enumerate(("AUC", "Cal. TPR")):
            ax = axes[row][col]
            for method, m in g.groupby("method"):
                ax.plot(m["strength"], m[metric], marker="o", label=method)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xticks(range(1, len(CURVES[family]) + 1), CURVES[family], rotation=30, fontsize=7)
            ax.set_title(f"{family}: {metric}", fontsize=9)
            twin = ax.twinx()
            twin.plot(acc["strength"], acc["child accuracy"], "k--", marker="s", label="child accuracy")
            twin.set_ylim(0, 1.02)
            if col == len(families) - 1:
                twin.set_ylabel("child task accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def robustness_section(runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
    """Report section builder (see ``fpbench.report.extra``): None until a curve has a scored cell."""
    df = tables.grid_records(load_records(runs_dir, zoo).frame)
    if df.empty:
        return None
    models = read_models(models_path(runs_dir, zoo))
    table = robustness_table(tables.cell_table(df, intervals=False), effects_table(models if models is not None else pd.DataFrame()))
    if table.empty:
        return None
    draw(table, Path(out_dir) / "robustness.png")
    return table
