"""LineageTracker (seed paper, sec. III-C): a directed graph of models and the transformations between them.

Vertices are models (id, arch, key, task accuracy); edges are transformations annotated with their type,
parameters, timestamp and confidence (a method's verification score of the child against the parent).
The graph is a ``networkx.MultiDiGraph`` keyed by relation type, so one model may have several incoming
edges of different kinds (``derived``: made by a transform; e.g. ``carries_fingerprint``: holds another
owner's transferred fingerprint).

Ancestry verification follows the paper's four steps: locate both models, find all paths from the claimed
ancestor to the query, take the product of edge confidences as a path's confidence, and check that the
signature persists along the path (every step verified at the method's threshold).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import pandas as pd

from fpbench.api import ConfigError, FpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from fpbench.zoo.build import Zoo

DERIVED = "derived"
MAX_PATHS = 100  # paths counted per claim (a dense evidence graph has combinatorially many)
NODE_COLUMNS = ["id", "arch", "key", "accuracy", "root", "transform", "aliases"]
EDGE_COLUMNS = ["parent", "child", "relation", "transform", "type", "params", "timestamp", "confidence"]
RELATION_COLUMNS = ["parent", "child", "relation", "params", "confidence"]


class UnknownModel(FpbenchError, KeyError):
    """A model named in an ancestry claim is not a vertex of the lineage graph."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


@dataclass
class AncestryVerdict:
    """The tracker's answer to "does ``query`` descend from ``ancestor``?"."""

    ancestor: str
    query: str
    paths: int  # simple paths ancestor -> query (counted up to MAX_PATHS)
    best_path: list[str] = field(default_factory=list)  # the verified path of highest confidence
    path_confidence: float = float("nan")  # product of the best path's edge confidences
    persistence: float = float("nan")  # the ancestor's signature scored directly on the query
    path_verified: bool = False  # some path has every step verified at the threshold
    decision: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"ancestor": self.ancestor, "query": self.query, "paths": self.paths,
                "best_path": " > ".join(self.best_path), "path_confidence": self.path_confidence,
                "persistence": self.persistence, "path_verified": self.path_verified, "decision": self.decision}


def _nan_if_none(x: Any) -> float:
    return float("nan") if x is None else float(x)


class LineageTracker:
    """Models as vertices, transformations as annotated edges; ancestry claims checked along paths."""

    def __init__(self) -> None:
        self.graph = nx.MultiDiGraph()

    # ---------------------------------------------------------------- building
    def add_model(self, id: str, arch: str = "", key: str = "", accuracy: float = float("nan"), **attrs: Any) -> None:
        self.graph.add_node(id, arch=arch, key=key, accuracy=float(accuracy), **attrs)

    def add_transformation(self, parent: str, child: str, relation: str = DERIVED, transform: str = "",
                           type: str = "", params: dict[str, Any] | str | None = None,
                           timestamp: float = float("nan"), confidence: float | None = None) -> None:
        """An edge parent -> child; unknown endpoints become vertices with no attributes yet."""
        for node in (parent, child):
            if node not in self.graph:
                self.add_model(node)
        text = params if isinstance(params, str) else json.dumps(params or {}, sort_keys=True)
        self.graph.add_edge(parent, child, key=relation, relation=relation, transform=transform, type=type,
                            params=text, timestamp=float(timestamp), confidence=_nan_if_none(confidence))

    def set_confidence(self, parent: str, child: str, confidence: float, relation: str = DERIVED) -> None:
        self.graph.edges[parent, child, relation]["confidence"] = float(confidence)

    def add_relations(self, frame: pd.DataFrame) -> int:
        """Edges from a relation table (columns parent, child, relation, params (JSON), confidence)."""
        missing = set(RELATION_COLUMNS) - set(frame.columns)
        if missing:
            raise ConfigError(f"lineage relation table lacks column(s) {', '.join(sorted(missing))}; "
                              f"expected {', '.join(RELATION_COLUMNS)}")
        for row in frame.itertuples(index=False):
            self.add_transformation(str(row.parent), str(row.child), relation=str(row.relation),
                                    transform=str(getattr(row, "transform", "") or row.relation),
                                    params=str(row.params), confidence=_nan_if_none(row.confidence))
        return len(frame)

    @classmethod
    def from_zoo(cls, zoo: Zoo, ids: Iterable[str] | None = None) -> LineageTracker:
        """Every model the zoo has built or loaded (or those of ``ids``), chain steps included.

        A chain's result is the same artefact as its last step: one vertex, the chain's name kept in
        ``aliases``. Timestamps are the artefacts' creation times (their meta.json mtime).
        """
        wanted = None if ids is None else set(ids)
        tracker = cls()
        models = [zm for zm in zoo.models() if wanted is None or zm.id in wanted]
        canonical = [zm for zm in models if not zm.lineage or zm.lineage[-1] == zm.id]
        for zm in canonical:
            aliases = sorted(a.id for a in models if a.key == zm.key and a.id != zm.id)
            tracker.add_model(zm.id, arch=zm.arch, key=zm.key, accuracy=zm.accuracy, root=zm.root_id,
                              transform=zm.transform or "", aliases=",".join(aliases))
        for zm in canonical:
            if zm.parent_id is None:
                continue
            tcfg = zm.meta.get("recipe", {}).get("transform", {})
            meta_file = zoo.store.path(zm.key) / "meta.json"
            for parent in filter(None, (zm.parent_id, zm.partner_id)):  # a cross-root merge has two parents
                tracker.add_transformation(parent, zm.id, transform=zm.transform or "",
                                           type=str(tcfg.get("impl", zm.transform or "")),
                                           params=tcfg.get("params", {}),
                                           timestamp=meta_file.stat().st_mtime if meta_file.exists() else float("nan"))
        return tracker

    @classmethod
    def from_models_table(cls, frame: pd.DataFrame) -> LineageTracker:
        """From the cell runner's ``records/<zoo>/_models.parquet`` (id, root, arch, parent, transform, key,
        accuracy, ...); it holds no transform parameters or timestamps. A chain's alias row shares its last
        step's key; the step is the row whose id is its parent's id + its transform's name."""
        def is_step(r: dict[str, Any]) -> bool:
            return not r["parent"] or r["id"] == f"{r['parent']}/{r['transform']}"

        canonical: dict[str, dict[str, Any]] = {}
        aliases: dict[str, list[str]] = {}
        for r in sorted(frame.to_dict("records"), key=lambda r: (not is_step(r), r["id"])):
            if r["key"] in canonical:
                aliases.setdefault(r["key"], []).append(r["id"])
            else:
                canonical[r["key"]] = r
        tracker = cls()
        for key, r in canonical.items():
            tracker.add_model(r["id"], arch=r["arch"], key=key, accuracy=r.get("accuracy", float("nan")),
                              root=r["root"], transform=r["transform"], aliases=",".join(aliases.get(key, [])))
        for r in canonical.values():
            partner = r.get("partner")  # a cross-root merge's second parent (missing or NaN in older tables)
            for parent in filter(None, (r["parent"], partner if isinstance(partner, str) else "")):
                tracker.add_transformation(parent, r["id"], transform=r["transform"], type=r["transform"])
        return tracker

    @classmethod
    def from_scores(cls, nodes: Iterable[str], scores: dict[tuple[str, str], float], threshold: float,
                    relation: str = "verified") -> LineageTracker:
        """The evidence graph of one method: an edge u -> v wherever v verifies as derived from u."""
        tracker = cls()
        for n in nodes:
            tracker.add_model(n)
        for (u, v), s in scores.items():
            if u != v and u in tracker.graph and v in tracker.graph and math.isfinite(s) and s >= threshold:
                tracker.add_transformation(u, v, relation=relation, transform=relation, confidence=s)
        return tracker

    # ---------------------------------------------------------------- storage
    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        nodes = pd.DataFrame([{"id": n, **{c: d.get(c, "") for c in NODE_COLUMNS[1:]}}
                              for n, d in self.graph.nodes(data=True)], columns=NODE_COLUMNS)
        nodes["accuracy"] = pd.to_numeric(nodes["accuracy"], errors="coerce").astype("float64")
        edges = pd.DataFrame([{"parent": u, "child": v, **{c: d.get(c) for c in EDGE_COLUMNS[2:]}}
                              for u, v, d in self.graph.edges(data=True)], columns=EDGE_COLUMNS)
        for c in ("timestamp", "confidence"):
            edges[c] = edges[c].astype("float64")
        return nodes, edges

    @classmethod
    def from_frames(cls, nodes: pd.DataFrame, edges: pd.DataFrame) -> LineageTracker:
        tracker = cls()
        for row in nodes.to_dict("records"):
            tracker.add_model(**{k: ("" if v is None else v) for k, v in row.items()})
        for row in edges.to_dict("records"):
            tracker.add_transformation(row["parent"], row["child"], relation=row["relation"],
                                       transform=row["transform"] or "", type=row["type"] or "",
                                       params=row["params"] or "{}", timestamp=row["timestamp"],
                                       confidence=row["confidence"])
        return tracker

    # ---------------------------------------------------------------- queries
    def parents(self, model: str, relation: str = DERIVED) -> list[str]:
        return sorted(u for u, _, k in self.graph.in_edges(self._locate(model), keys=True) if k == relation)

    def roots(self, relation: str = DERIVED) -> list[str]:
        return sorted(n for n in self.graph if not self.parents(n, relation))

    def descendants(self, model: str, relations: Iterable[str] | None = None) -> set[str]:
        return nx.descendants(self._view(relations), self._locate(model))

    def chain(self, model: str, relation: str = DERIVED) -> list[dict[str, Any]]:
        """The transformation chain from the model's root down to it: one annotated edge per step."""
        steps: list[dict[str, Any]] = []
        node = self._locate(model)
        while parents := self.parents(node, relation):
            parent = parents[0]
            steps.append({"parent": parent, "child": node, **self.graph.edges[parent, node, relation]})
            node = parent
        return steps[::-1]

    def verify_ancestry(self, ancestor: str, query: str, threshold: float,
                        persistence: Callable[[str, str], float] | None = None, max_hops: int | None = None,
                        relations: Iterable[str] | None = None, rule: str = "path") -> AncestryVerdict:
        """The paper's ancestry check of ``query`` against the claimed ``ancestor``.

        ``persistence(ancestor, query)`` is a method's direct score of the ancestor's signature on the query.
        ``rule='path'``: accept when some path ancestor -> query has every edge confidence >= threshold (the
        signature persists step by step: the paper's transformation-chain tracking); ``'direct'``: accept
        when the direct persistence score is >= threshold; ``'both'``: both must hold.
        """
        if rule not in ("path", "direct", "both"):
            raise ConfigError(f"invalid parameter 'rule': '{rule}'; valid: path, direct, both")
        a, q = self._locate(ancestor), self._locate(query)
        view = self._view(relations)
        count = sum(1 for _ in islice(nx.all_simple_paths(view, a, q, cutoff=max_hops), MAX_PATHS))
        best = self._best_verified_path(view, a, q, threshold, max_hops)
        verdict = AncestryVerdict(ancestor=a, query=q, paths=count, best_path=best[1],
                                  path_confidence=best[0], path_verified=bool(best[1]))
        if persistence is not None:
            verdict.persistence = float(persistence(a, q))
        direct = math.isfinite(verdict.persistence) and verdict.persistence >= threshold
        verdict.decision = {"path": verdict.path_verified, "direct": direct,
                            "both": verdict.path_verified and direct}[rule]
        return verdict

    # ---------------------------------------------------------------- internals
    def _locate(self, model: str) -> str:
        if model in self.graph:
            return model
        for n, d in self.graph.nodes(data=True):  # a chain's name is an alias of its last step
            if model in str(d.get("aliases", "")).split(","):
                return n
        raise UnknownModel(f"model '{model}' is not in the lineage graph ({self.graph.number_of_nodes()} models); "
                           "build the graph from the zoo that holds it")

    def _view(self, relations: Iterable[str] | None) -> nx.MultiDiGraph:
        if relations is None:
            return self.graph
        keep = set(relations)
        return self.graph.edge_subgraph([e for e in self.graph.edges(keys=True) if e[2] in keep])  # type: ignore

    @classmethod
    def _best_verified_path(cls, view: nx.MultiDiGraph, a: str, q: str, threshold: float,
                            max_hops: int | None) -> tuple[float, list[str]]:
        """The path a -> q of highest confidence product among those whose every edge is verified at
        ``threshold``, with at most ``max_hops`` edges ((nan, []) when there is none).

        Hop-bounded dynamic programming instead of enumerating every path (a dense evidence graph has
        combinatorially many): confidences are clipped to [0, 1], so a cycle never raises a product.
        """
        best: dict[str, tuple[float, list[str]]] = {a: (1.0, [a])}
        for _ in range(max_hops if max_hops is not None else view.number_of_nodes() - 1):
            grown = dict(best)
            for u, (conf, path) in best.items():
                for v in view.successors(u):
                    c = cls._edge_confidence(view, u, v)
                    if v in path or not (math.isfinite(c) and c >= threshold):
                        continue
                    cand = conf * min(max(c, 0.0), 1.0)  # a product of probability-like scores
                    if v not in grown or cand > grown[v][0]:
                        grown[v] = (cand, [*path, v])
            if grown == best:
                break
            best = grown
        return best[q] if q != a and q in best else (float("nan"), [])

    @staticmethod
    def _edge_confidence(view: nx.MultiDiGraph, u: str, v: str) -> float:
        """The most confident of the (possibly several, one per relation) edges u -> v."""
        confs = [float(d.get("confidence", float("nan"))) for d in view.get_edge_data(u, v).values()]
        finite = [c for c in confs if math.isfinite(c)]
        return max(finite) if finite else float("nan")


def relation_files(runs_dir: Path, zoo: str) -> list[Path]:
    """Relation tables other stages write: ``records/*/lineage_edges.parquet`` (e.g. the fingerprint-transfer
    stage's ``records/transfer/``) and any under ``records/<zoo>/``."""
    base = Path(runs_dir) / "records"
    return sorted({*base.glob("*/lineage_edges.parquet"), *(base / zoo).glob("**/lineage_edges.parquet")})


def load_relations(runs_dir: Path, zoo: str) -> pd.DataFrame:
    """Every extra relation of this zoo: rows whose ``zoo`` column names it, or every row of a table kept
    under ``records/<zoo>/`` that has no ``zoo`` column (a table elsewhere without one is not this zoo's)."""
    frames = []
    own = (Path(runs_dir) / "records" / zoo).resolve()
    for path in relation_files(runs_dir, zoo):
        frame = pd.read_parquet(path)
        if "zoo" in frame.columns:
            frames.append(frame[frame["zoo"] == zoo])
        elif own in path.resolve().parents:
            frames.append(frame)
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RELATION_COLUMNS)
