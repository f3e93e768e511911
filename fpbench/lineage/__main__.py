"""The lineage stage: ``python -m fpbench.lineage zoo=ci methods=cmf,sac transforms=finetune,chain runs_dir=runs``.

Builds (or loads) the zoo's roots and children, records its reference lineage graph, scores every ordered
pair of models with each method, decides every ancestry claim from those scores, and prints per method the
lineage tracking success rate (Table I) and the fraction of parent edges Edmonds' arborescence recovers.
Writes ``records/<zoo>/_lineage/``: nodes.parquet, edges.parquet, scores/<method>.parquet, claims.parquet.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from fpbench.api import ConfigError, FpbenchError, NotApplicable
from fpbench.config import load_option
from fpbench.lineage.claims import decide_claims, summarize_claims
from fpbench.lineage.reconstruct import score_matrix
from fpbench.lineage.report import claims_path, reconstruction_section
from fpbench.lineage.scoring import lineage_dir, pairwise_scores
from fpbench.lineage.tracker import LineageTracker, load_relations
from fpbench.records import write_cell
from fpbench.run import CellRunner, CellSpec, validate_cell
from fpbench.utils import configure_threads
from fpbench.zoo.build import transform_config

log = logging.getLogger("fpbench.lineage")
USAGE = ("usage: python -m fpbench.lineage [zoo=tiny] [methods=cmf,sac] [transforms=finetune,prune30,quant8,chain] "
         "[runs_dir=runs] [seed=0] [device=auto] [max_hops=3] [target_fpr=0.01] [force=false] [progress=false]")
DEFAULTS = {"zoo": "tiny", "methods": "cmf,sac", "transforms": "finetune,prune30,quant8,chain", "runs_dir": "runs",
            "seed": "0", "device": "auto", "max_hops": "3", "target_fpr": "0.01", "force": "false",
            "progress": "false"}


def run_lineage(zoo: str, methods: list[str], transforms: list[str], runs_dir: Path, seed: int = 0,
                device: str = "auto", max_hops: int = 3, target_fpr: float = 0.01, force: bool = False,
                progress: bool = False) -> dict[str, Any]:
    """The whole stage; returns the claims summary and the reconstruction table it printed."""
    configure_threads()
    method_cfgs = [load_option("method", m) for m in methods]
    for mcfg in method_cfgs:
        if mcfg.get("protect"):  # its owners are protected copies of the roots: another family tree
            raise ConfigError(f"method '{mcfg['name']}' protects its owners ('protect: {mcfg['protect']}'); the "
                              "lineage stage fingerprints every model of the zoo as an owner and needs a method "
                              "without 'protect' (e.g. cmf, sac, cka)")
    tcfgs = [transform_config(t) for t in transforms]
    spec = CellSpec(zoo_cfg=load_option("zoo", zoo), method_cfg=method_cfgs[0], transform_cfg=transform_config("identity"),
                    seed=seed, target_fpr=target_fpr, runs_dir=Path(runs_dir), device=device, progress=progress,
                    force=force)
    for mcfg in method_cfgs:  # bad parameters fail before anything is built
        for tcfg in tcfgs:
            validate_cell(dataclasses.replace(spec, method_cfg=mcfg, transform_cfg=tcfg))
    runner = CellRunner(spec)
    roots = runner.zoo.roots()
    for root in roots:
        for tcfg in tcfgs:
            try:
                runner.zoo.child(root, tcfg)
            except NotApplicable as exc:
                log.warning("%s does not apply to %s: %s", tcfg["name"], root.id, exc.reason)
    root_ids = {r.id for r in roots}
    family = [m for m in runner.zoo.models() if m.root_id in root_ids]  # calibration roots stay out
    reference = LineageTracker.from_zoo(runner.zoo, ids=[m.id for m in family])
    by_id = {m.id: m for m in family}
    models = [by_id[n] for n in reference.graph if n in by_id]  # one per artefact: chain aliases folded
    extra = load_relations(Path(runs_dir), zoo)
    if len(extra):
        reference.add_relations(extra)
    out = lineage_dir(runs_dir, zoo)
    nodes, edges = reference.to_frames()
    write_cell(out / "nodes.parquet", nodes)
    write_cell(out / "edges.parquet", edges)

    ids = [m.id for m in models]
    claims = []
    for mcfg in method_cfgs:
        frame = pairwise_scores(runner, mcfg, models, force=force)
        ok = frame[frame["status"] == "ok"]
        claims.append(decide_claims(reference, ids, score_matrix(ok), mcfg["name"], float(frame["threshold"].iloc[0]),
                                    float(frame["cal_threshold"].iloc[0]), max_hops=max_hops))
    new = pd.concat(claims, ignore_index=True)
    path = claims_path(runs_dir, zoo)
    if path.exists():  # keep the claims of methods not re-run now
        old = pd.read_parquet(path)
        new = pd.concat([old[~old["method"].isin(methods)], new], ignore_index=True)
    write_cell(path, new)
    return {"claims": summarize_claims(new), "reconstruction": reconstruction_section(Path(runs_dir), zoo, out)}


def parse_args(argv: list[str]) -> dict[str, str]:
    args = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise FpbenchError(f"unknown argument '{arg}'; valid: {', '.join(DEFAULTS)}\n{USAGE}")
        args[key] = value
    return args


def cli() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        a = parse_args(sys.argv[1:])
        result = run_lineage(a["zoo"], [m for m in a["methods"].split(",") if m],
                             [t for t in a["transforms"].split(",") if t], Path(a["runs_dir"]), seed=int(a["seed"]),
                             device=a["device"], max_hops=int(a["max_hops"]), target_fpr=float(a["target_fpr"]),
                             force=a["force"].lower() == "true", progress=a["progress"].lower() == "true")
    except FpbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print("lineage tracking (ancestry claims):")
        print(result["claims"].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        if result["reconstruction"] is not None:
            print("lineage reconstruction (maximum spanning arborescence):")
            print(result["reconstruction"].to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    cli()
