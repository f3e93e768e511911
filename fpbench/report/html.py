"""index.html: every table and figure of one report on one page (plain HTML, relative links)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

HOW_TO_READ = (
    "Every row is computed from the stored records alone. Each cell (method x transformation) scores every "
    "root's child against every root: the child of its own root is a positive, every other pair a negative. "
    "Acc/TPR/FPR are at each method's threshold calibrated at 1% FPR on held-out calibration models that are never "
    "scored (Cal. negatives: how many pairs it rests on; Cal. root pairs: how many distinct owner-root/suspect-root "
    "pairs they come from, since a root's children score almost alike against one owner; Cal. effective negatives: "
    "Kish's count of independent draws over those clusters; Supports target FPR: whether that count reaches "
    "1/FPR; Guaranteed FPR: what the quantile rule promises with that many independent draws); FPR CI (binomial) is the exact interval of the realised FPR, the (owners) intervals resample owners. "
    "The fixed thresholds (the paper's tau) are the secondary Fixed-t columns. TPR@1%FPR (in-sample oracle) picks "
    "its threshold on the scored pairs themselves. The paper's values "
    "stand beside ours where it reports them; its 100% false-positive baselines are a harness bug, not a target."
)


def render(sections: list[tuple[str, pd.DataFrame | None, list[str]]], out: Path, title: str) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "th{background:#eee}img{max-width:100%}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(HOW_TO_READ)}</p>"]
    for heading, frame, images in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if frame is not None:
            parts.append(frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="–", border=0))
        for img in images:
            parts.append(f"<p><img src='{html.escape(img)}' alt='{html.escape(img)}'></p>")
    parts.append("</body></html>")
    out.write_text("\n".join(parts))
    return out
