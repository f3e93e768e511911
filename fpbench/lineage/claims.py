"""Ancestry claims over a zoo, decided from a method's scores: the "lineage tracking success rate" of Table I.

The reference graph (built from the zoo's recipes) says which claims are true; it never decides one. The
claims are every (ancestor, descendant) pair of the reference graph (chain intermediates included) and, as
false claims, every root against every descendant of another root. The tracker decides a claim from the
method's scores alone: its evidence graph has an edge u -> v wherever the method verifies v as derived from
u, and a claim is accepted when a path of verified steps leads from the claimed ancestor to the query
(``decision``; the paper's path-based ancestry verification). The direct check, the ancestor's signature
scored on the query (``direct_decision``), is recorded beside it, as are both at the calibrated threshold.
"""

from __future__ import annotations

import math

import pandas as pd

from fpbench.lineage.tracker import DERIVED, LineageTracker

CLAIM_COLUMNS = ["method", "ancestor", "query", "truth", "decision", "correct", "confidence", "persistence",
                 "direct_decision", "direct_correct", "paths", "hops", "best_path", "threshold", "cal_threshold",
                 "cal_decision", "cal_correct", "cal_direct_decision", "cal_direct_correct", "chain_confidence",
                 "true_hops"]


def ancestry_claims(reference: LineageTracker, models: list[str]) -> list[tuple[str, str, bool]]:
    """(claimed ancestor, query, truth) for every true ancestry and every root vs another root's descendants."""
    inside = set(models)
    claims = [(a, d, True) for a in models for d in sorted(reference.descendants(a) & inside)]
    roots = [r for r in reference.roots() if r in inside]
    for r in roots:
        own = reference.descendants(r)
        for other in roots:
            if other != r:
                claims += [(r, d, False) for d in sorted((reference.descendants(other) & inside) - own - {r})]
    return claims


def annotate(reference: LineageTracker, scores: dict[tuple[str, str], float]) -> None:
    """Set each reference edge's confidence to the method's score of the child against its parent."""
    for u, v, k in reference.graph.edges(keys=True):
        reference.set_confidence(u, v, scores.get((u, v), float("nan")), relation=k)


def decide_claims(reference: LineageTracker, models: list[str], scores: dict[tuple[str, str], float], method: str,
                  threshold: float, cal_threshold: float = float("nan"), max_hops: int = 3) -> pd.DataFrame:
    """One row per claim: the truth from the reference graph, the decisions from the method's scores."""
    def persistence(a: str, q: str) -> float:
        return scores.get((a, q), float("nan"))

    evidence = LineageTracker.from_scores(models, scores, threshold)
    cal_evidence = LineageTracker.from_scores(models, scores, cal_threshold) if math.isfinite(cal_threshold) else None
    annotate(reference, scores)
    rows = []
    for a, q, truth in ancestry_claims(reference, models):
        v = evidence.verify_ancestry(a, q, threshold, persistence=persistence, max_hops=max_hops)
        direct = math.isfinite(v.persistence) and v.persistence >= threshold
        cal_path = cal_direct = False
        if cal_evidence is not None:
            cal_path = cal_evidence.verify_ancestry(a, q, cal_threshold, max_hops=max_hops).path_verified
            cal_direct = math.isfinite(v.persistence) and v.persistence >= cal_threshold
        chain = reference.verify_ancestry(a, q, float("-inf"), relations=[DERIVED]) if truth else None
        rows.append({
            "method": method, "ancestor": a, "query": q, "truth": truth, "decision": v.decision,
            "correct": v.decision == truth, "confidence": v.path_confidence, "persistence": v.persistence,
            "direct_decision": direct, "direct_correct": direct == truth, "paths": v.paths,
            "hops": len(v.best_path) - 1 if v.best_path else -1, "best_path": " > ".join(v.best_path),
            "threshold": threshold, "cal_threshold": cal_threshold, "cal_decision": cal_path,
            "cal_correct": cal_path == truth, "cal_direct_decision": cal_direct, "cal_direct_correct": cal_direct == truth,
            "chain_confidence": chain.path_confidence if chain else float("nan"),
            "true_hops": len(chain.best_path) - 1 if chain and chain.best_path else -1,
        })
    frame = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    for c in ("confidence", "persistence", "threshold", "cal_threshold", "chain_confidence"):
        frame[c] = frame[c].astype("float64")
    return frame


def summarize_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """Per method: the success rate (Table I's) and its parts, for both rules and both thresholds."""
    rows = []
    for method, g in claims.groupby("method"):
        true, false = g[g["truth"]], g[~g["truth"]]
        rows.append({
            "method": method, "claims": len(g), "true claims": len(true), "false claims": len(false),
            "success rate (path)": g["correct"].mean(),
            "accepted true (path)": true["decision"].mean() if len(true) else float("nan"),
            "accepted false (path)": false["decision"].mean() if len(false) else float("nan"),
            "success rate (direct)": g["direct_correct"].mean(),
            "accepted true (direct)": true["direct_decision"].mean() if len(true) else float("nan"),
            "accepted false (direct)": false["direct_decision"].mean() if len(false) else float("nan"),
            "success rate (path, calibrated)": g["cal_correct"].mean() if g["cal_threshold"].notna().all()
            else float("nan"),
            "success rate (direct, calibrated)": g["cal_direct_correct"].mean() if g["cal_threshold"].notna().all()
            else float("nan"),
            "threshold": g["threshold"].iloc[0], "calibrated threshold": g["cal_threshold"].iloc[0],
            "mean chain confidence (true)": true["chain_confidence"].mean() if len(true) else float("nan"),
        })
    return pd.DataFrame(rows)
