"""Pairwise scores of one method between ALL models of a zoo (roots, children, chain steps), stored as records.

Every model is both an owner (fingerprinted once, cached like a cell's fingerprints) and a suspect (loaded
once and scored against every fingerprint), through the cell runner's own pair scorer, so the query
budgets, the accuracy check through the query pipeline and the fingerprint cache are the ones a cell uses.
Stored at ``records/<zoo>/_lineage/scores/<method>.parquet`` — one directory deeper than cells, so the
tables never mistake it for a cell — and reused while the zoo, method, seed and model keys are unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fpbench import thresholds
from fpbench.evaluate import Provenance
from fpbench.records import to_frame, write_cell
from fpbench.run import CellRunner, method_identity, scored_zoo
from fpbench.utils import stable_hash
from fpbench.zoo.build import ZooModel

log = logging.getLogger("fpbench.lineage")
SCORES_VERSION = "1"
SCORE_COLUMNS = ["zoo", "method", "owner", "suspect", "owner_key", "suspect_key", "score", "threshold",
                 "cal_threshold", "status", "error", "fingerprint_seconds", "verify_seconds", "queries", "seed",
                 "config_hash", "git_commit"]


def lineage_dir(runs_dir: Path | str, zoo: str) -> Path:
    return Path(runs_dir) / "records" / zoo / "_lineage"


def scores_path(runs_dir: Path | str, zoo: str, method: str) -> Path:
    return lineage_dir(runs_dir, zoo) / "scores" / f"{method}.parquet"


def read_scores(runs_dir: Path | str, zoo: str) -> dict[str, pd.DataFrame]:
    """Every stored method's pairwise scores of this zoo, by method name."""
    return {p.stem: pd.read_parquet(p) for p in sorted((lineage_dir(runs_dir, zoo) / "scores").glob("*.parquet"))}


def pairwise_scores(runner: CellRunner, method_cfg: dict, models: list[ZooModel], force: bool = False) -> pd.DataFrame:
    """score(fingerprint(u), v) for every ordered pair of ``models`` (self pairs included), cached on disk."""
    spec = runner.spec
    zoo = spec.zoo_cfg["name"]
    config_hash = stable_hash({"v": SCORES_VERSION, "zoo": scored_zoo(spec.zoo_cfg), **method_identity(method_cfg),
                               "seed": spec.seed, "models": sorted((m.id, m.key) for m in models)})
    path = scores_path(spec.runs_dir, zoo, method_cfg["name"])
    if not force and path.exists():
        old = pd.read_parquet(path)
        if len(old) and (old["config_hash"] == config_hash).all():
            return old
    method = runner.method(method_cfg)
    calibration = runner.calibration(method, method_cfg)  # held-out independents: never among the scored models
    cal = thresholds.from_records(calibration, spec.target_fpr)
    log.info("lineage: %s scores %d x %d model pairs", method_cfg["name"], len(models), len(models))
    candidates = runner.candidates(models)
    prov = Provenance(zoo, method_cfg["name"], "_lineage", config_hash, spec.seed)
    frame = to_frame(runner.evaluator(method).evaluate(candidates, [(c, None) for c in candidates], prov))
    keys = {m.id: m.key for m in models}
    frame["owner_key"] = frame["owner"].map(keys)
    frame["suspect_key"] = frame["suspect"].map(keys)
    frame["cal_threshold"] = float(cal.value) if cal else float("nan")
    frame = frame[SCORE_COLUMNS].reset_index(drop=True)
    write_cell(path, frame)
    return frame
