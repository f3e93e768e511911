"""The lineage stage (a Hydra app, ``conf/lineage_stage.yaml``):
``python -m fpbench.lineage zoo=ci methods=cmf,sac transforms=finetune,chain runs_dir=runs``.

Builds (or loads) the zoo's roots and children, records its reference lineage graph, scores every ordered
pair of models with each method, decides every ancestry claim from those scores, and prints per method the
lineage tracking success rate (Table I) and the fraction of parent edges Edmonds' arborescence recovers.
Writes ``records/<zoo>/_lineage/``: nodes.parquet, edges.parquet, scores/<method>.parquet, claims.parquet.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fpbench.config import load_option
from fpbench.errors import ConfigError, NotApplicable
from fpbench.lineage.claims import decide_claims, summarize_claims
from fpbench.lineage.reconstruct import score_matrix
from fpbench.lineage.report import claims_path, reconstruction_section
from fpbench.lineage.scoring import lineage_dir, pairwise_scores
from fpbench.lineage.tracker import LineageTracker, load_relations
from fpbench.records import write_cell
from fpbench.run import CellRunner, CellSpec, validate_cell
from fpbench.stage import CONF_PATH, Stage, as_list
from fpbench.utils import configure_threads
from fpbench.zoo.build import transform_config

log = logging.getLogger("fpbench.lineage")
STAGE = Stage(module="fpbench.lineage", config="lineage_stage", list_keys=("methods", "transforms"),
              required=("methods", "transforms"), unit="methods")


def run_lineage(zoo: str | Mapping[str, Any], methods: list[str], transforms: list[str], runs_dir: Path,
                seed: int = 0, device: str = "auto", max_hops: int = 3, target_fpr: float = 0.01, force: bool = False,
                progress: bool = False, on_done: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole stage on a zoo (a config name or a composed zoo config); returns the claims summary and the
    reconstruction table it printed. ``on_done(method)`` is called once each method's claims are decided."""
    configure_threads()
    zoo_cfg = load_option("zoo", zoo) if isinstance(zoo, str) else dict(zoo)
    zoo = str(zoo_cfg["name"])
    method_cfgs = [load_option("method", m) for m in methods]
    for mcfg in method_cfgs:
        if mcfg.get("protect"):  # its owners are protected copies of the roots: another family tree
            raise ConfigError(f"method '{mcfg['name']}' protects its owners ('protect: {mcfg['protect']}'); the "
                              "lineage stage fingerprints every model of the zoo as an owner and needs a method "
                              "without 'protect' (e.g. cmf, sac, cka)")
    tcfgs = [transform_config(t) for t in transforms]
    spec = CellSpec(zoo_cfg=zoo_cfg, method_cfg=method_cfgs[0], transform_cfg=transform_config("identity"),
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
        if on_done is not None:
            on_done(str(mcfg["name"]))
    new = pd.concat(claims, ignore_index=True)
    path = claims_path(runs_dir, zoo)
    if path.exists():  # keep the claims of methods not re-run now
        old = pd.read_parquet(path)
        new = pd.concat([old[~old["method"].isin(methods)], new], ignore_index=True)
    write_cell(path, new)
    return {"claims": summarize_claims(new), "reconstruction": reconstruction_section(Path(runs_dir), zoo, out)}


@hydra.main(config_path=CONF_PATH, config_name=STAGE.config, version_base="1.3")
def main(cfg: DictConfig) -> None:
    with STAGE.running(cfg):
        zoo_cfg = OmegaConf.to_container(cfg.zoo, resolve=True)
        assert isinstance(zoo_cfg, dict)
        methods = as_list(cfg.methods, "methods")
        STAGE.total = len(methods)
        result = run_lineage(zoo_cfg, methods, as_list(cfg.transforms, "transforms"), Path(cfg.runs_dir),
                             seed=int(cfg.seed), device=str(cfg.device), max_hops=int(cfg.max_hops),
                             target_fpr=float(cfg.target_fpr), force=bool(cfg.force), progress=bool(cfg.progress),
                             on_done=STAGE.done)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print("lineage tracking (ancestry claims):")
        print(result["claims"].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        if result["reconstruction"] is not None:
            print("lineage reconstruction (maximum spanning arborescence):")
            print(result["reconstruction"].to_string(index=False, float_format=lambda x: f"{x:.3f}"))


def cli(argv: list[str] | None = None) -> None:
    STAGE.launch(main, argv)


if __name__ == "__main__":
    cli()
