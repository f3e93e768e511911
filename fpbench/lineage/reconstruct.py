"""Lineage reconstruction: recover every model's parent from a method's pairwise scores alone.

Beyond the seed paper. The score graph has an edge u -> v weighted by score(fingerprint(u), v) for every
ordered pair, plus a virtual super-root with an edge to every model weighted by the method's threshold: a
model whose best candidate parent scores below the threshold is cheaper as a root. Edmonds' maximum
spanning arborescence (networkx) over that graph picks one parent per model; the super-root's children
are the recovered roots. Symmetric scores cannot orient an edge, so recovery is reported both directed
(the exact parent) and undirected (the parent-child link, in either direction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import networkx as nx
import pandas as pd

SUPER_ROOT = "<super-root>"


def score_matrix(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    """{(owner, suspect): score} of the finite scores of a pairwise-scores frame."""
    ok = frame[frame["score"].notna()]
    return {(o, s): float(v) for o, s, v in zip(ok["owner"], ok["suspect"], ok["score"], strict=True) if math.isfinite(v)}


def reconstruct(nodes: Iterable[str], scores: dict[tuple[str, str], float], root_weight: float) -> dict[str, str | None]:
    """Each model's recovered parent (None: recovered as a root)."""
    nodes = list(nodes)
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_node(SUPER_ROOT)
    for n in nodes:
        graph.add_edge(SUPER_ROOT, n, weight=float(root_weight))
    for (u, v), s in scores.items():
        if u != v and u in graph and v in graph and v != SUPER_ROOT and math.isfinite(s):
            graph.add_edge(u, v, weight=float(s))
    tree = nx.maximum_spanning_arborescence(graph, attr="weight")
    return {n: (None if (p := next(iter(tree.predecessors(n)))) == SUPER_ROOT else p) for n in nodes}


def recovery(recovered: dict[str, str | None], truth: dict[str, str | None]) -> dict[str, float]:
    """How much of the true tree came back: parents (directed), links (undirected) and roots."""
    models = sorted(truth)
    true_links = {frozenset((c, p)) for c, p in truth.items() if p is not None}
    found_links = {frozenset((c, p)) for c, p in recovered.items() if p is not None}
    true_roots = {c for c, p in truth.items() if p is None}
    found_roots = {c for c, p in recovered.items() if p is None}
    children = [c for c in models if truth[c] is not None]
    return {
        "models": len(models),
        "true_edges": len(true_links),
        "parents_recovered": sum(recovered.get(c) == truth[c] for c in children) / len(children) if children
        else float("nan"),
        "edges_recovered_undirected": len(true_links & found_links) / len(true_links) if true_links else float("nan"),
        "roots_recovered": len(true_roots & found_roots) / len(true_roots) if true_roots else float("nan"),
        "recovered_roots": len(found_roots),
        "true_roots": len(true_roots),
    }


def edge_table(recovered: dict[str, str | None], truth: dict[str, str | None]) -> pd.DataFrame:
    """One row per model: true parent, recovered parent, and whether the link came back (either way round)."""
    rows = []
    for c in sorted(truth):
        p, r = truth[c], recovered.get(c)
        link = p is not None and (r == p or recovered.get(p) == c)
        rows.append({"model": c, "true_parent": p or "", "recovered_parent": r or "", "correct": r == p,
                     "link_recovered": bool(link)})
    return pd.DataFrame(rows)
