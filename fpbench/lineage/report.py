"""Report sections of the lineage stage, rebuilt from its records alone (``records/<zoo>/_lineage/``).

``claims_section``: per method, the lineage tracking success rate over all ancestry claims (Table I's).
``reconstruction_section``: per method, how much of the zoo's family tree Edmonds' arborescence recovers
from the pairwise scores, and ``family_tree.png``: true tree with the recovered parent links drawn over it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fpbench.lineage.claims import summarize_claims
from fpbench.lineage.reconstruct import edge_table, reconstruct, recovery, score_matrix
from fpbench.lineage.scoring import lineage_dir, read_scores
from fpbench.lineage.tracker import DERIVED

FAMILY_TREE = "family_tree.png"


def claims_path(runs_dir: Path | str, zoo: str) -> Path:
    return lineage_dir(runs_dir, zoo) / "claims.parquet"


def true_parents(runs_dir: Path | str, zoo: str, models: list[str]) -> dict[str, str | None]:
    """Each scored model's parent in the reference graph (derived edges), None for a root."""
    edges = pd.read_parquet(lineage_dir(runs_dir, zoo) / "edges.parquet")
    derived = edges[(edges["relation"] == DERIVED) & edges["child"].isin(models) & edges["parent"].isin(models)]
    parent = dict(zip(derived["child"], derived["parent"], strict=True))
    return {m: parent.get(m) for m in models}


def reconstructions(runs_dir: Path | str, zoo: str) -> list[tuple[str, str, float, dict[str, str | None],
                                                                   dict[str, str | None]]]:
    """(method, threshold kind, root weight, recovered parents, true parents) per method and threshold."""
    out = []
    for method, frame in read_scores(runs_dir, zoo).items():
        models = sorted(set(frame["owner"]) | set(frame["suspect"]))
        truth = true_parents(runs_dir, zoo, models)
        scores = score_matrix(frame[frame["status"] == "ok"])
        for kind, col in (("fixed", "threshold"), ("calibrated", "cal_threshold")):
            weight = float(frame[col].iloc[0])
            if np.isfinite(weight):
                out.append((method, kind, weight, reconstruct(models, scores, weight), truth))
    return out


def claims_section(runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
    path = claims_path(runs_dir, zoo)
    return summarize_claims(pd.read_parquet(path)) if path.exists() else None


def reconstruction_section(runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
    if not (lineage_dir(runs_dir, zoo) / "edges.parquet").exists():
        return None
    results = reconstructions(runs_dir, zoo)
    if not results:
        return None
    rows = [{"method": m, "threshold": kind, "root weight": w, **recovery(rec, truth)}
            for m, kind, w, rec, truth in results]
    fixed = [(m, rec, truth) for m, kind, _, rec, truth in results if kind == "fixed"]
    if fixed:
        draw_family_trees(fixed, Path(out_dir) / FAMILY_TREE)
    return pd.DataFrame(rows)


def tree_layout(truth: dict[str, str | None]) -> dict[str, tuple[float, float]]:
    """Positions of the true tree: leaves side by side, a parent above the middle of its children."""
    children: dict[str | None, list[str]] = {}
    for c, p in sorted(truth.items()):
        children.setdefault(p, []).append(c)
    pos: dict[str, tuple[float, float]] = {}
    next_x = [0.0]

    def place(node: str, depth: int) -> float:
        kids = children.get(node, [])
        xs = [place(k, depth + 1) for k in kids]
        x = float(np.mean(xs)) if xs else next_x[0]
        if not xs:
            next_x[0] += 1.0
        pos[node] = (x, -float(depth))
        return x

    for root in children.get(None, []):
        place(root, 0)
        next_x[0] += 0.5  # a gap between families
    return pos


def draw_family_trees(results: list[tuple[str, dict[str, str | None], dict[str, str | None]]], path: Path) -> Path:
    """One panel per method: true links in grey; recovered parent links green (right), orange (reversed), red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = results[0][2]
    pos = tree_layout(truth)
    width = max(8.0, 0.55 * max(x for x, _ in pos.values()) + 2)
    depth = -min(y for _, y in pos.values())
    fig, axes = plt.subplots(len(results), 1, figsize=(width, (depth + 1.8) * 1.3 * len(results)), squeeze=False)
    for ax, (method, rec, true) in zip(axes[:, 0], results, strict=True):
        for c, p in true.items():
            if p is not None:
                ax.plot(*zip(pos[p], pos[c], strict=True), color="0.85", lw=5, zorder=1, solid_capstyle="round")
        right = 0
        for c, r in rec.items():
            if r is None or r not in pos:
                continue
            color = "tab:green" if r == true.get(c) else "tab:orange" if true.get(r) == c else "tab:red"
            right += color == "tab:green"
            rad = 0.0 if color != "tab:red" else 0.25
            ax.annotate("", xy=pos[c], xytext=pos[r], zorder=2,
                        arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.4, "shrinkA": 6, "shrinkB": 6,
                                    "connectionstyle": f"arc3,rad={rad}"})
        for n, (x, y) in pos.items():
            is_root = rec.get(n) is None
            ax.scatter([x], [y], s=70, zorder=3, color="white" if not is_root else "gold", edgecolors="black")
            if true.get(n) is None:  # a root: its full id above it
                ax.text(x, y + 0.15, n, ha="center", va="bottom", fontsize=7)
            else:  # a child: the transform that made it, below it
                ax.text(x, y - 0.18, n.rsplit("/", 1)[-1], ha="center", va="top", fontsize=6, rotation=30)
        children = sum(p is not None for p in true.values())
        ax.set_title(f"{method}: {right}/{children} parents recovered (green right, orange reversed, red wrong; "
                     "gold: recovered as a root; grey: true tree)", fontsize=9)
        ax.set_ylim(-depth - 0.8, 0.7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def recovered_edges(runs_dir: Path | str, zoo: str) -> pd.DataFrame:
    """Every model's true and recovered parent per method and threshold kind (for inspection)."""
    frames = []
    for method, kind, _, rec, truth in reconstructions(runs_dir, zoo):
        frames.append(edge_table(rec, truth).assign(method=method, threshold=kind))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
