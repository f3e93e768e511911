"""The attacks table and the ambiguity figure, from the rows ``python -m fpbench.cmf.attacks`` stored under
``records/<zoo>/_attacks/``. Reads records only (pandas, matplotlib); a section of the report.

Per method: TPR at the method's fixed threshold under each removal strength with the mean task-accuracy cost
it took; the accuracy cost at which verification fails (per owner, the cost of the weakest removal attack that
made its child unverified; the median over owners, and how many owners were broken at all); the forgery
false-claim rates; and TPR / AUC as a function of the fraction of layers replaced (ambiguity).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fpbench import metrics as M
from fpbench.config import load_option, tagged_options


def removal_transforms() -> list[str]:
    """The removal study's transforms (``tags: [attack_study, removal]``), weakest first: the table's columns
    read from no attack (identity) to the strongest noise, a recovery fine-tune after the same noise last."""
    def strength(name: str) -> tuple[float, float]:
        params = load_option("transform", name).get("params") or {}
        return float(params.get("noise", 0)), float(params.get("recover_steps", 0))

    return sorted(tagged_options("transform", "removal"), key=strength)


def ambiguity_transforms() -> list[str]:
    """The ambiguity study's transforms (``tags: [attack_study, ambiguity]``), by fraction of layers changed."""
    return sorted(tagged_options("transform", "ambiguity"),
                  key=lambda name: float(load_option("transform", name)["params"]["fraction"]))


# The attack study's cells (``python -m fpbench.cmf.attacks``; every transform tagged ``attack_study``). They are
# made to break methods and are reported here; Tables I-III, the heatmap and the panels leave them out.
REMOVAL = removal_transforms()
AMBIGUITY = ambiguity_transforms()


def _load(runs_dir: Path, zoo: str, part: str) -> pd.DataFrame | None:
    path = Path(runs_dir) / "records" / zoo / "_attacks" / f"{part}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def _removal(df: pd.DataFrame) -> pd.DataFrame:
    pos = df[df["label"] == 1]
    order = list(dict.fromkeys(df["attack"]))
    out = {}
    for method, g in pos.groupby("method", sort=False):
        row: dict[str, object] = {}
        for attack in order:
            a = g[g["attack"] == attack]
            row[f"TPR {attack}"] = float(a["verified"].mean()) if len(a) else float("nan")
            row[f"acc cost {attack}"] = float(a["accuracy_cost"].mean()) if len(a) else float("nan")
        # The cheapest attack (in accuracy) that left each owner's child unverified.
        broken = g[(g["attack"] != "identity") & (g["verified"] == 0)].groupby("owner")["accuracy_cost"].min()
        owners = g["owner"].nunique()
        row["acc cost to break (median)"] = float(broken.median()) if len(broken) else float("nan")
        row["owners broken"] = f"{len(broken)}/{owners}"
        out[method] = row
    return pd.DataFrame.from_dict(out, orient="index")


def _forgery(df: pd.DataFrame) -> pd.DataFrame:
    rates = df.groupby(["method", "scenario"], sort=False)["claim_accepted"].mean().unstack("scenario")
    return rates.rename(columns=lambda c: f"claim accepted: {c}")


def _ambiguity(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (method, fraction), g in df.groupby(["method", "fraction"], sort=False):
        pos = g[g["label"] == 1]
        rows.append({"method": method, "fraction": float(fraction), "tpr": float(pos["verified"].mean()),
                     "auc": M.auc(g["label"].to_numpy(), g["score"].to_numpy()),
                     "acc_cost": float(pos["accuracy_cost"].mean())})
    return pd.DataFrame(rows)


def ambiguity_figure(curve: pd.DataFrame, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for method, g in curve.groupby("method", sort=False):
        g = g.sort_values("fraction")
        axes[0].plot(g["fraction"], g["tpr"], marker="o", label=method)
        axes[1].plot(g["fraction"], g["auc"], marker="o", label=method)
    axes[0].set(xlabel="fraction of layers replaced", ylabel="TPR at the fixed threshold", ylim=(-0.05, 1.05))
    axes[1].set(xlabel="fraction of layers replaced", ylabel="AUC (derived vs independent)", ylim=(-0.05, 1.05))
    axes[1].legend(fontsize=7)
    fig.suptitle("Ambiguity: partial transformations")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def attacks_table(runs_dir: Path, zoo: str, out_dir: Path | None) -> pd.DataFrame | None:
    """One row per method: removal (TPR, cost), cost to break, forgery false-claim rates, ambiguity TPR."""
    parts = []
    removal, forgery, ambiguity = (_load(runs_dir, zoo, p) for p in ("removal", "forgery", "ambiguity"))
    if removal is not None and len(removal):
        parts.append(_removal(removal))
    if forgery is not None and len(forgery):
        parts.append(_forgery(forgery))
    if ambiguity is not None and len(ambiguity):
        curve = _ambiguity(ambiguity)
        parts.append(curve.pivot(index="method", columns="fraction", values="tpr")
                     .rename(columns=lambda f: f"TPR {int(round(100 * f))}% layers replaced"))
        if out_dir is not None:
            ambiguity_figure(curve, Path(out_dir) / "ambiguity.png")
    if not parts:
        return None
    table = pd.concat(parts, axis=1)
    table.index.name = "method"
    return table.reset_index()
