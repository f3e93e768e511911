"""Transfer results on disk: one parquet of rows per track and one lineage-edge table, under ``records/transfer/``.

Rows carry the seed, the config (name and hash), library versions and the git commit, so ``make tables``
rebuilds the transfer tables from these files alone. ``lineage_edges.parquet`` has the columns the
lineage tracker reads (parent, child, relation, params as JSON, confidence) plus ``zoo`` and ``track``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from fpbench.records import write_cell
from fpbench.utils import git_commit, library_versions, stable_hash

EDGE_COLUMNS = ["parent", "child", "relation", "params", "confidence", "zoo", "track"]


def records_dir(runs_dir: Path | str) -> Path:
    return Path(runs_dir) / "records" / "transfer"


def track_path(runs_dir: Path | str, track: str) -> Path:
    return records_dir(runs_dir) / f"{track}.parquet"


def edges_path(runs_dir: Path | str) -> Path:
    return records_dir(runs_dir) / "lineage_edges.parquet"


def write_rows(runs_dir: Path | str, track: str, rows: list[dict[str, Any]], cfg: dict[str, Any], config_name: str,
               seed: int) -> Path:
    df = pd.DataFrame(rows)
    df["seed"] = int(seed)
    df["secret_seed"] = int(cfg["fingerprint"]["secret_seed"])
    df["config"] = config_name
    df["config_hash"] = stable_hash(cfg)
    df["versions"] = json.dumps(library_versions(), sort_keys=True)
    df["git_commit"] = git_commit()
    df["created"] = time.time()
    path = track_path(runs_dir, track)
    write_cell(path, df)
    return path


def write_edges(runs_dir: Path | str, edges: list[dict[str, Any]], tracks: list[str]) -> Path:
    """Replace the edges of ``tracks`` in the edge table, keeping other tracks' edges."""
    path = edges_path(runs_dir)
    new = pd.DataFrame(edges, columns=EDGE_COLUMNS)
    if path.exists():
        old = pd.read_parquet(path)
        new = pd.concat([old[~old["track"].isin(tracks)], new], ignore_index=True)
    new["confidence"] = new["confidence"].astype("float64")
    write_cell(path, new)
    return path


def load_rows(runs_dir: Path | str) -> pd.DataFrame:
    """Every stored transfer row (all tracks); empty when nothing has run."""
    frames = [pd.read_parquet(p) for p in sorted(records_dir(runs_dir).glob("*.parquet")) if p.name != edges_path(runs_dir).name]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
