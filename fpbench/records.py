"""Records: one typed row per scored pair, stored per cell as parquet under ``runs/records/``.

A cell file is written atomically once the cell is complete; a re-run with the same config hash
skips it (resumable, incremental). A cell that fails writes a single row with ``status='error'``;
a cell that does not apply writes ``status='n/a'``; both show up in the tables instead of vanishing.
Calibration pairs (owner root vs held-out calibration independents) are rows with
``role='calibration'``; thresholds are calibrated from them alone, never from the scored pairs.

Nothing is lost silently: a cell file that cannot be read, lacks a column, has a column of the wrong type,
an unknown status or no rows is *damaged* (:func:`inspect_cell` says why, :func:`load_records` names it);
a failed re-run never replaces good records (``write_cell(..., keep_good=True)`` writes the failure to a
``<transform>.failed.json`` sidecar instead); ``_models.parquet`` is merged under a file lock
(:func:`merge_models`) and rebuilt when damaged.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from filelock import FileLock

log = logging.getLogger(__name__)

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


STRING_COLUMNS = [c for c in COLUMNS if c not in FLOAT_COLUMNS + INT_COLUMNS]
CellState = Literal["missing", "damaged", "stale", "failed", "done"]
FAILED_SUFFIX = ".failed.json"


def cell_path(runs_dir: Path | str, zoo: str, method: str, transform: str) -> Path:
    return Path(runs_dir) / "records" / zoo / method / f"{transform}.parquet"


def rerun_command(zoo: str, method: str, transform: str) -> str:
    """The command that re-runs one cell from scratch (printed wherever a cell is reported damaged or failed)."""
    return f"python -m fpbench.run zoo={zoo} method={method} transform={transform} force=true"


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp_path)`` into a temp file in the same directory, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def failed_run_path(path: Path) -> Path:
    """The sidecar beside a cell file that records a failed run whose good records were kept."""
    return path.with_name(path.stem + FAILED_SUFFIX)


def is_failure(df: pd.DataFrame) -> bool:
    """A frame that records only a failure: no ok row and at least one error row (n/a is an outcome, kept)."""
    return len(df) > 0 and not bool((df["status"] == "ok").any()) and bool((df["status"] == "error").any())


def write_cell(path: Path, df: pd.DataFrame, keep_good: bool = False) -> bool:
    """Write atomically: a temp file in the same directory renamed over the target. Returns True when written.

    With ``keep_good``, a frame that is only a failure (:func:`is_failure`) never replaces a file holding ok
    rows: the failure goes to the ``<transform>.failed.json`` sidecar instead (the report shows "last run
    failed, good records kept") and False is returned. Any write that does replace the file clears the sidecar.
    """
    sidecar = failed_run_path(path)
    if keep_good and is_failure(df):
        old = read_cell(path)
        if old is not None and bool((old["status"] == "ok").any()):
            first = df[df["status"] == "error"].iloc[0]
            note = {"error": str(first["error"]), "config_hash": str(first["config_hash"]), "created": time.time(),
                    "kept_rows": int(len(old)), "kept_config_hash": str(old["config_hash"].iloc[0])}
            _atomic_write(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(note, indent=1) + "\n"))
            log.warning("%s: the new run failed; its %d good records are kept (failure in %s)", path, len(old),
                        sidecar.name)
            return False
    _atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    sidecar.unlink(missing_ok=True)
    return True


def _dtype_problem(df: pd.DataFrame) -> str:
    for cols, kinds, what in ((FLOAT_COLUMNS, "f", "float"), (INT_COLUMNS, "iu", "integer")):
        for c in cols:
            if df[c].dtype.kind not in kinds:
                return f"column '{c}' is {df[c].dtype}, not {what}"
    for c in STRING_COLUMNS:
        if df[c].dtype.kind not in "OSUT" and str(df[c].dtype) not in ("string", "str"):
            return f"column '{c}' is {df[c].dtype}, not text"
    return ""


def inspect_cell(path: Path) -> tuple[pd.DataFrame | None, str]:
    """(the stored cell, "") or (None, what is wrong): "missing", or why the file is damaged.

    Damaged: unreadable parquet, a missing column, a column of the wrong type, an unknown status or role, no
    rows (the runner never writes an empty cell: a cell that scores nothing writes a status row).
    """
    if not path.exists():
        return None, "missing"
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # any parse failure: the cell is re-run rather than trusted
        first = (str(exc).splitlines() or [""])[0].replace(f"'{path}'", "").replace(str(path), "")
        return None, f"unreadable parquet ({type(exc).__name__}: {first.strip()})"
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        return None, f"missing column(s) {', '.join(missing)}"
    if df.empty:
        return None, "no rows"
    problem = _dtype_problem(df)
    if problem:
        return None, problem
    bad_status = set(df["status"]) - set(STATUSES)
    if bad_status:
        return None, f"unknown status {sorted(map(str, bad_status))}; valid: {', '.join(STATUSES)}"
    bad_role = set(df["role"]) - set(ROLES)
    if bad_role:
        return None, f"unknown role {sorted(map(str, bad_role))}; valid: {', '.join(ROLES)}"
    return df, ""


def read_cell(path: Path) -> pd.DataFrame | None:
    """The stored cell, or None if missing or damaged (a damaged file is treated as not done)."""
    return inspect_cell(path)[0]


def cell_state(path: Path, config_hash: str) -> CellState:
    """What a cell file holds for ``config_hash``: "missing", "damaged" (see :func:`inspect_cell`), "stale"
    (records of another config), "failed" (error rows: re-run) or "done"."""
    df, problem = inspect_cell(path)
    if df is None:
        return "missing" if problem == "missing" else "damaged"
    if not bool((df["config_hash"] == config_hash).all()):
        return "stale"
    return "failed" if bool((df["status"] == "error").any()) else "done"


def cell_done(path: Path, config_hash: str) -> bool:
    return cell_state(path, config_hash) == "done"


@dataclass
class LoadedRecords:
    """Every readable record, and every cell file that was not: nothing is dropped without being named."""

    frame: pd.DataFrame
    damaged: dict[Path, str] = field(default_factory=dict)  # cell file -> why it could not be used
    failed_runs: dict[Path, dict[str, Any]] = field(default_factory=dict)  # cell file -> its failed-run sidecar


def _cell_files(base: Path, zoo: str | None) -> list[Path]:
    # records/<zoo>/<method>/<transform>.parquet; stage outputs live in "_"-prefixed dirs (_lineage, _attacks)
    pattern = f"{zoo}/*/*.parquet" if zoo else "*/*/*.parquet"
    return [p for p in sorted(base.glob(pattern)) if not p.parent.name.startswith("_")]


def load_records(runs_dir: Path | str, zoo: str | None = None) -> LoadedRecords:
    """Every stored record (optionally of one zoo), the damaged cell files and the failed-run sidecars."""
    base = Path(runs_dir) / "records"
    frames, damaged, failed = [], {}, {}
    for path in _cell_files(base, zoo):
        df, problem = inspect_cell(path)
        if df is None:
            damaged[path] = problem
            log.warning("damaged records file %s (%s): counted as a failed cell", path, problem)
        else:
            frames.append(df)
    pattern = f"{zoo}/*/*{FAILED_SUFFIX}" if zoo else f"*/*/*{FAILED_SUFFIX}"
    for sidecar in sorted(base.glob(pattern)):
        try:
            note = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            note = {"error": f"unreadable failure note ({exc})"}
        failed[sidecar.with_name(sidecar.name[: -len(FAILED_SUFFIX)] + ".parquet")] = note
    frame = pd.concat(frames, ignore_index=True) if frames else to_frame([])
    return LoadedRecords(frame, damaged, failed)


def load_all(runs_dir: Path | str, zoo: str | None = None) -> pd.DataFrame:
    """Every readable record (optionally of one zoo) as one frame; :func:`load_records` also names the rest."""
    return load_records(runs_dir, zoo).frame


def cell_of(path: Path) -> tuple[str, str, str]:
    """(zoo, method, transform) of ``records/<zoo>/<method>/<transform>.parquet``."""
    return path.parent.parent.name, path.parent.name, path.stem


# ---------------------------------------------------------------------------------------------- _models.parquet
MODELS_FILE = "_models.parquet"


def models_path(runs_dir: Path | str, zoo: str) -> Path:
    return Path(runs_dir) / "records" / zoo / MODELS_FILE


def read_models(path: Path) -> pd.DataFrame | None:
    """The zoo's model table, or None when missing or damaged (unreadable, no ``id`` column)."""
    if not path.exists():
        return None
    try:
        df = pd.read_parquet(path)
    except Exception:  # damaged: the caller rebuilds it from what it knows
        return None
    return df if "id" in df.columns else None


def merge_models(path: Path, rows: dict[str, dict[str, Any]], timeout: float = 600.0) -> pd.DataFrame:
    """Merge ``rows`` (model id -> row; each row has an ``id``) into ``path`` under a file lock; returns the table.

    Read, merge and write happen under ``<path>.lock``, so concurrent workers lose no row; a row replaces the
    stored row of the same id. A damaged file is rebuilt from ``rows`` with a warning (the models other workers
    recorded come back when they next write), never a crash.
    """
    new = pd.DataFrame([{**r, "id": mid} for mid, r in rows.items()])
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        old = read_models(path)
        if old is None and path.exists():
            log.warning("%s is damaged; rebuilding it from this run's %d models", path, len(new))
        if old is not None and len(old) and len(new):
            old = old[~old["id"].isin(new["id"])]
        parts = [f for f in (old, new) if f is not None and len(f)]
        merged = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id"])
        merged = merged.sort_values("id").reset_index(drop=True)
        _atomic_write(path, lambda tmp: merged.to_parquet(tmp, index=False))
    return merged


def as_dict(record: Record) -> dict[str, Any]:
    return asdict(record)
