"""Records: one typed row per scored pair, stored per cell as parquet under ``runs/records/``.

A cell file is written atomically once the cell is complete; a re-run with the same config hash
skips it (resumable, incremental). A cell that fails writes a single row with ``status='error'``;
a cell that does not apply writes ``status='n/a'``; both show up in the tables instead of vanishing.
Calibration pairs (owner root vs held-out calibration independents) are rows with
``role='calibration'``; thresholds are calibrated from them alone, never from the scored pairs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

STATUSES = ("ok", "error", "n/a")
ROLES = ("pair", "calibration")


@dataclass
class Record:
    zoo: str
    method: str
    transform: str
    owner: str
    suspect: str
    owner_arch: str
    suspect_arch: str
    label: int  # 1: suspect derives from owner
    score: float
    threshold: float  # the method's fixed (paper) threshold
    decision: int  # score >= threshold
    fingerprint_seconds: float
    verify_seconds: float
    owner_accuracy: float  # measured through the exact query pipeline before scoring
    suspect_accuracy: float
    seed: int
    config_hash: str
    versions: str  # JSON of library versions
    git_commit: str
    role: str = "pair"
    status: str = "ok"
    error: str = ""
    queries: int = 0  # input images the method sent to the suspect
    created: float = 0.0


COLUMNS = [f.name for f in fields(Record)]
FLOAT_COLUMNS = ["score", "threshold", "fingerprint_seconds", "verify_seconds", "owner_accuracy",
                 "suspect_accuracy", "created"]
INT_COLUMNS = ["label", "decision", "seed", "queries"]


def to_frame(records: Iterable[Record]) -> pd.DataFrame:
    df = pd.DataFrame([asdict(r) for r in records], columns=COLUMNS)
    for c in FLOAT_COLUMNS:
        df[c] = df[c].astype("float64")
    for c in INT_COLUMNS:
        df[c] = df[c].astype("int64")
    return df


def cell_path(runs_dir: Path | str, zoo: str, method: str, transform: str) -> Path:
    return Path(runs_dir) / "records" / zoo / method / f"{transform}.parquet"


def write_cell(path: Path, df: pd.DataFrame) -> None:
    """Write atomically: a temp file in the same directory renamed over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_cell(path: Path) -> pd.DataFrame | None:
    """The stored cell, or None if missing or unreadable (an unreadable file is treated as not done)."""
    if not path.exists():
        return None
    try:
        df = pd.read_parquet(path)
    except Exception:  # a damaged file: the cell is re-run rather than trusted
        return None
    missing = set(COLUMNS) - set(df.columns)
    return None if missing else df


def cell_done(path: Path, config_hash: str) -> bool:
    df = read_cell(path)
    return df is not None and len(df) > 0 and bool((df["config_hash"] == config_hash).all()) and \
        not bool((df["status"] == "error").any())


def load_all(runs_dir: Path | str, zoo: str | None = None) -> pd.DataFrame:
    """Every stored record (optionally of one zoo) as one frame; unreadable files are skipped."""
    base = Path(runs_dir) / "records"
    pattern = f"{zoo}/*/*.parquet" if zoo else "*/*/*.parquet"
    frames = [df for p in sorted(base.glob(pattern)) if (df := read_cell(p)) is not None]
    if not frames:
        return to_frame([])
    return pd.concat(frames, ignore_index=True)


def as_dict(record: Record) -> dict[str, Any]:
    return asdict(record)
