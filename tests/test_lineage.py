"""LineageTracker: the graph of a chain, ancestry claims decided from scores, reconstruction, the report's lineage rate."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from fpbench.api import ConfigError
from fpbench.lineage.claims import CLAIM_COLUMNS, ancestry_claims, decide_claims
from fpbench.lineage.reconstruct import reconstruct, recovery
from fpbench.lineage.tracker import LineageTracker, UnknownModel, load_relations


def _tree() -> LineageTracker:
    """Two families: A -> A1 -> A11, A -> A2; B -> B1."""
    t = LineageTracker()
    for n in ("A", "A1", "A2", "A11", "B", "B1"):
        t.add_model(n, arch="resnet" if n.startswith("A") else "effnet", key=n.lower(), accuracy=0.9)
    for p, c in (("A", "A1"), ("A", "A2"), ("A1", "A11"), ("B", "B1")):
        t.add_transformation(p, c, transform="finetune", type="finetune", params={"steps": 10}, timestamp=1.0)
    return t


def _scores(tree: LineageTracker) -> dict[tuple[str, str], float]:
    """Parent -> child 0.9 (child -> parent 0.6: an owner's fingerprint fits its child better than the reverse),
    grandparent 0.8, same family otherwise 0.5, across families 0.1."""
    s = {}
    nodes = list(tree.graph)
    for u in nodes:
        for v in nodes:
            if u == v:
                continue
            if u in tree.parents(v):
                s[u, v] = 0.9
            elif v in tree.parents(u):
                s[u, v] = 0.6
            elif v in tree.descendants(u):
                s[u, v] = 0.8
            elif u[0] == v[0]:
                s[u, v] = 0.5
            else:
                s[u, v] = 0.1
    return s


# ------------------------------------------------------------------ the graph and ancestry verification
def test_path_confidence_is_the_product_and_every_step_must_verify() -> None:
    t = _tree()
    t.set_confidence("A", "A1", 0.9)
    t.set_confidence("A1", "A11", 0.8)
    v = t.verify_ancestry("A", "A11", threshold=0.7, persistence=lambda a, q: 0.5)
    assert v.best_path == ["A", "A1", "A11"] and math.isclose(v.path_confidence, 0.72)
    assert v.path_verified and v.decision and v.persistence == 0.5
    # the direct check fails where the chain of verified steps succeeds (the paper's chain tracking)
    assert not t.verify_ancestry("A", "A11", 0.7, persistence=lambda a, q: 0.5, rule="direct").decision
    assert not t.verify_ancestry("A", "A11", threshold=0.85).decision  # the 0.8 step does not verify
    assert t.verify_ancestry("B", "A11", 0.0).paths == 0 and not t.verify_ancestry("B", "A11", 0.0).decision
    with pytest.raises(UnknownModel, match="'nobody' is not in the lineage graph"):
        t.verify_ancestry("A", "nobody", 0.5)
    with pytest.raises(ConfigError, match="rule"):
        t.verify_ancestry("A", "A1", 0.5, rule="vote")


def test_a_merge_of_two_roots_has_two_parents_and_is_a_descendant_of_both() -> None:
    """A cross-root merge (A1 + B1 -> M): both parents recorded, M a descendant of both roots, ancestry of each
    verified along its own path, and neither root's other children mistaken for M's ancestors."""
    t = _tree()
    t.add_model("M", arch="resnet", key="m", accuracy=0.88)
    for parent in ("A1", "B1"):
        t.add_transformation(parent, "M", transform="merge_soup", type="merge", params={"combine": "soup"})
        t.set_confidence(parent, "M", 0.8)
    t.set_confidence("A", "A1", 0.9)
    t.set_confidence("B", "B1", 0.9)
    assert t.parents("M") == ["A1", "B1"] and "M" not in t.roots()
    assert "M" in t.descendants("A") and "M" in t.descendants("B")
    for root, path in (("A", ["A", "A1", "M"]), ("B", ["B", "B1", "M"])):
        v = t.verify_ancestry(root, "M", threshold=0.7)
        assert v.decision and v.best_path == path
    assert not t.verify_ancestry("A2", "M", threshold=0.0).decision  # a sibling is no ancestor


def test_two_relation_types_into_one_model() -> None:
    """A transferred-fingerprint model: a child of the downstream model AND carrying the base owner's fingerprint."""
    t = _tree()
    t.add_relations(pd.DataFrame([
        {"parent": "B1", "child": "T", "relation": "derived", "params": '{"steps": 5}', "confidence": 0.95},
        {"parent": "A", "child": "T", "relation": "carries_fingerprint", "params": "{}", "confidence": 0.8},
    ]))
    assert t.parents("T") == ["B1"] and t.parents("T", "carries_fingerprint") == ["A"]
    assert "T" in t.descendants("A") and "T" not in t.descendants("A", relations=["derived"])
    assert ("A", "T", True) in ancestry_claims(t, ["A", "B", "B1", "T"])
    assert t.graph.edges["A", "T", "carries_fingerprint"]["confidence"] == 0.8
    with pytest.raises(ConfigError, match="confidence"):
        t.add_relations(pd.DataFrame([{"parent": "A", "child": "T", "relation": "x", "params": "{}"}]))


def test_relation_tables_of_other_stages_are_read_for_their_zoo_only(tmp_path: Path) -> None:
    rows = [{"parent": "B1", "child": "T", "relation": "fingerprint_transfer", "params": "{}", "confidence": None,
             "zoo": "tiny"},
            {"parent": "A", "child": "T", "relation": "carries_fingerprint_of", "params": "{}", "confidence": 0.9,
             "zoo": "tiny"},
            {"parent": "A", "child": "U", "relation": "carries_fingerprint_of", "params": "{}", "confidence": 0.9,
             "zoo": "ci"}]
    (tmp_path / "records" / "transfer").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(tmp_path / "records" / "transfer" / "lineage_edges.parquet")
    (tmp_path / "records" / "other").mkdir()  # no zoo column, not under records/tiny: not tiny's
    pd.DataFrame(rows).drop(columns="zoo").to_parquet(tmp_path / "records" / "other" / "lineage_edges.parquet")
    extra = load_relations(tmp_path, "tiny")
    assert sorted(extra["child"]) == ["T", "T"]
    t = _tree()
    t.add_relations(extra)
    assert t.parents("T", "fingerprint_transfer") == ["B1"] and t.parents("T", "carries_fingerprint_of") == ["A"]
    assert "U" not in t.graph


def test_chain_each_step_a_vertex_with_annotated_edges(ci_zoo) -> None:
    root = ci_zoo.roots()[0]
    chained = ci_zoo.child(root, "chain")
    ids = [*chained.lineage, chained.id]
    t = LineageTracker.from_zoo(ci_zoo, ids=ids)
    steps = [root.id, f"{root.id}/finetune", f"{root.id}/finetune/prune30", f"{root.id}/finetune/prune30/quant4"]
    assert sorted(t.graph) == sorted(steps)  # the chain's name is an alias of its last step, not a vertex
    assert t.graph.nodes[steps[-1]]["aliases"] == chained.id
    assert t.graph.nodes[root.id]["arch"] == root.arch and t.graph.nodes[root.id]["key"] == root.key
    assert t.graph.number_of_edges() == 3
    chain = t.chain(chained.id)
    assert [(e["parent"], e["child"]) for e in chain] == list(zip(steps, steps[1:], strict=False))
    assert [e["type"] for e in chain] == ["finetune", "prune", "quantize"]
    assert '"amount": 0.3' in chain[1]["params"] and '"bits": 4' in chain[2]["params"]
    assert all(math.isfinite(e["timestamp"]) and e["timestamp"] > 0 for e in chain)
    nodes, edges = t.to_frames()
    back = LineageTracker.from_frames(nodes, edges)
    assert [e["params"] for e in back.chain(chained.id)] == [e["params"] for e in chain]
    # the same graph from what the cell runner records (_models.parquet rows, the chain's alias row included)
    rows = [{"id": m.id, "root": m.root_id, "arch": m.arch, "parent": m.parent_id or "", "transform": m.transform or "",
             "key": m.key, "accuracy": m.accuracy} for m in ci_zoo.models() if m.id in ids]
    table = LineageTracker.from_models_table(pd.DataFrame(rows[::-1]))
    assert sorted(table.graph) == sorted(steps) and table.graph.nodes[steps[-1]]["aliases"] == chained.id
    assert [(e["parent"], e["child"]) for e in table.chain(chained.id)] == [(e["parent"], e["child"]) for e in chain]


# ------------------------------------------------------------------ claims decided from scores
def test_claims_decided_from_scores_not_from_the_reference() -> None:
    t = _tree()
    models = list(t.graph)
    claims = decide_claims(t, models, _scores(t), "m", threshold=0.7, max_hops=3)
    assert list(claims.columns) == CLAIM_COLUMNS
    assert (claims["correct"] == (claims["decision"] == claims["truth"])).all()
    # true claims: every ancestor-descendant pair; false: every root vs the other root's descendants
    assert set(claims.loc[claims["truth"], ["ancestor", "query"]].itertuples(index=False, name=None)) == {
        ("A", "A1"), ("A", "A2"), ("A", "A11"), ("A1", "A11"), ("B", "B1")}
    assert sorted(claims.loc[~claims["truth"], ["ancestor", "query"]].itertuples(index=False, name=None)) == [
        ("A", "B1"), ("B", "A1"), ("B", "A11"), ("B", "A2")]
    assert claims["correct"].all()
    # a method that confuses the families: every cross-family score 0.95 -> false claims accepted
    confused = {k: (0.95 if k[0][0] != k[1][0] else s) for k, s in _scores(t).items()}
    bad = decide_claims(t, models, confused, "m", threshold=0.7)
    assert bad.loc[~bad["truth"], "decision"].all() and not bad["correct"].all()


# ------------------------------------------------------------------ reconstruction
def test_reconstruction_recovers_a_known_tree_and_fails_predictably() -> None:
    t = _tree()
    truth = {n: (t.parents(n)[0] if t.parents(n) else None) for n in t.graph}
    scores = _scores(t)
    rec = reconstruct(list(t.graph), scores, root_weight=0.3)
    assert rec == truth
    r = recovery(rec, truth)
    assert r["parents_recovered"] == 1.0 and r["edges_recovered_undirected"] == 1.0 and r["roots_recovered"] == 1.0
    # swap A11's parent and grandparent scores: A11 is then recovered under A, 3 of 4 parents right
    swapped = dict(scores)
    swapped["A1", "A11"], swapped["A", "A11"] = scores["A", "A11"], scores["A1", "A11"]
    rec2 = reconstruct(list(t.graph), swapped, root_weight=0.3)
    assert rec2["A11"] == "A" and {k: v for k, v in rec2.items() if k != "A11"} == \
        {k: v for k, v in truth.items() if k != "A11"}
    assert recovery(rec2, truth)["parents_recovered"] == 0.75
    # a root weight below the cross-family scores: one family hangs under the other, one root lost
    rec3 = reconstruct(list(t.graph), scores, root_weight=0.05)
    assert sum(p is None for p in rec3.values()) == 1 and recovery(rec3, truth)["roots_recovered"] == 0.5


# ------------------------------------------------------------------ the stage on the ci zoo and the report
@pytest.fixture(scope="module")
def ci_lineage(ci_runs_dir: Path, ci_zoo) -> dict:
    from fpbench.lineage.__main__ import run_lineage

    return run_lineage("ci", ["cmf"], ["finetune"], ci_runs_dir, device="cpu")


def test_ci_cmf_accepts_a_true_claim_and_rejects_false_ones(ci_runs_dir: Path, ci_lineage: dict) -> None:
    claims = pd.read_parquet(ci_runs_dir / "records" / "ci" / "_lineage" / "claims.parquet").set_index(
        ["ancestor", "query"])
    assert claims["correct"].dtype == bool and set(CLAIM_COLUMNS) - {"ancestor", "query"} <= set(claims.columns)
    true = claims.loc[("resnet-s0", "resnet-s0/finetune")]
    assert true["truth"] and true["decision"] and true["persistence"] >= 0.7
    cross = claims.loc[("effnet-s0", "resnet-s0/finetune")]  # another architecture's root
    assert not cross["truth"] and not cross["decision"]
    # same architecture, same data, other seed: passive cmf scores it high too (a hard negative), but lower
    hard = claims.loc[("resnet-s1", "resnet-s0/finetune")]
    assert not hard["truth"] and hard["persistence"] < true["persistence"]
    scores = pd.read_parquet(ci_runs_dir / "records" / "ci" / "_lineage" / "scores" / "cmf.parquet")
    assert len(scores) == 8 * 8  # 4 roots + 4 children, every ordered pair
    same_arch = scores["owner"].str.split("-").str[0] == scores["suspect"].str.split("-").str[0]
    assert (scores.loc[same_arch, "status"] == "ok").all()  # cmf matches layers by name: another architecture is n/a
    assert (scores.loc[~same_arch, "status"] == "n/a").all() and scores.loc[~same_arch, "score"].isna().all()
    rec = ci_lineage["reconstruction"]
    assert set(rec["method"]) == {"cmf"} and rec["edges_recovered_undirected"].between(0, 1).all()


def test_report_shows_lineage_rate_and_sections(ci_runs_dir: Path, ci_lineage: dict) -> None:
    from fpbench.config import load_option
    from fpbench.report.__main__ import build_report
    from fpbench.run import CellSpec, run_cell
    from fpbench.zoo.build import transform_config

    run_cell(CellSpec(zoo_cfg=load_option("zoo", "ci"), method_cfg=load_option("method", "cmf"),
                      transform_cfg=transform_config("finetune"), runs_dir=ci_runs_dir, device="cpu", progress=False))
    out = build_report(ci_runs_dir, "ci").parent
    t1 = pd.read_csv(out / "table1.csv").set_index("Metric")
    claims = pd.read_parquet(ci_runs_dir / "records" / "ci" / "_lineage" / "claims.parquet")
    assert float(t1.loc["Lineage Tracking Success Rate", "Value"]) == pytest.approx(claims["correct"].mean(), abs=1e-4)
    assert float(t1.loc["Lineage Tracking Success Rate (cmf)", "Value"]) == pytest.approx(
        claims.loc[claims["method"] == "cmf", "correct"].mean(), abs=1e-4)
    rec = pd.read_csv(out / "lineage_reconstruction.csv")
    assert {"parents_recovered", "edges_recovered_undirected", "roots_recovered"} <= set(rec.columns)
    assert (out / "family_tree.png").read_bytes()[:4] == b"\x89PNG"
    assert "lineage_claims" in {p.stem for p in out.glob("*.csv")}
    assert "family_tree.png" in (out / "index.html").read_text()
