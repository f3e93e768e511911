"""Break the harness on purpose and check it survives: ``python scripts/fault_injection.py [WORKDIR]``.

Each case injects one fault into real fpbench storage (the artefact store, cell records, model files)
and checks the documented outcome: a damaged artefact is detected by its checksum and rebuilt, a
writer killed mid-write leaves nothing partial behind, a damaged record file makes its cell re-run
while every other record stays readable, a pickle is refused (and a malicious one never runs), a
non-finite score is flagged and kept out of the averages. The last line is the summary ``make test``
prints: cases tried, cases survived, records lost (must be 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fpbench import metrics as M  # noqa: E402
from fpbench.records import Record, cell_done, cell_path, load_all, read_cell, to_frame, write_cell  # noqa: E402
from fpbench.safeload import UntrustedFile, load_state  # noqa: E402
from fpbench.zoo.store import ArtefactStore  # noqa: E402


@dataclass
class Outcome:
    case: str
    survived: bool
    records_lost: int = 0
    detail: str = ""


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(64, 64, generator=g), "b": torch.randn(64, generator=g)}


def _records(n: int, method: str, transform: str) -> pd.DataFrame:
    recs = [Record(zoo="faults", method=method, transform=transform, owner=f"o{i}", suspect=f"s{i}", owner_arch="a",
                   suspect_arch="a", label=i % 2, score=0.1 * i, threshold=0.5, decision=int(0.1 * i >= 0.5),
                   fingerprint_seconds=0.0, verify_seconds=0.0, owner_accuracy=0.9, suspect_accuracy=0.9, seed=0,
                   config_hash="h", versions="{}", git_commit="") for i in range(n)]
    return to_frame(recs)


def _rebuilt_after(work: Path, damage: Callable[[Path], None], case: str) -> Outcome:
    store = ArtefactStore(work / case)
    original = _tensors()
    store.get_or_build("k1", lambda: ({"what": "test"}, original))
    damage(store.path("k1") / "weights.safetensors")
    reported: list[str] = []
    _, tensors, built = store.get_or_build("k1", lambda: ({"what": "test"}, original),
                                           on_corrupt=lambda k, e: reported.append(str(e)))
    ok = built and bool(reported) and tensors is not None and all(torch.equal(tensors[k], original[k])
                                                                   for k in original)
    return Outcome(case, ok, detail=reported[0] if reported else "damage not detected")


def truncated_artefact(work: Path) -> Outcome:
    def truncate(p: Path) -> None:
        with open(p, "r+b") as f:
            f.truncate(p.stat().st_size // 2)
    return _rebuilt_after(work, truncate, "truncated artefact")


def altered_artefact(work: Path) -> Outcome:
    def flip(p: Path) -> None:  # same size, one byte changed deep in the tensor data
        data = bytearray(p.read_bytes())
        data[-100] ^= 0xFF
        p.write_bytes(bytes(data))
    return _rebuilt_after(work, flip, "altered artefact")


def _kill_child(code: str, wait_for: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not wait_for.exists():
        time.sleep(0.01)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def killed_artefact_writer(work: Path) -> Outcome:
    """A worker killed while writing many artefacts: every artefact present must load and pass its checksum."""
    root = work / "killed-writer"
    started = root / "started"
    _kill_child(textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from fpbench.zoo.store import ArtefactStore
        s = ArtefactStore({str(root)!r})
        Path({str(started)!r}).touch()
        for i in range(10000):
            s.save(f"key{{i:05d}}", {{"i": i}}, {{"w": torch.randn(256, 256)}})
    """), started)
    store = ArtefactStore(root)
    keys = [p.name for p in root.glob("*/key*") if p.is_dir()]
    bad = []
    for k in keys:
        try:
            store.load(k)
        except Exception as exc:  # any failure here is a partial artefact
            bad.append(f"{k}: {exc}")
    return Outcome("killed artefact writer", not bad, detail=f"{len(keys)} complete artefacts, {len(bad)} partial")


def killed_record_writer(work: Path) -> Outcome:
    """A worker killed while rewriting a cell file: the file is the old or the new version, never half."""
    path = cell_path(work / "killed-records", "faults", "m", "t")
    write_cell(path, _records(50, "m", "t"))
    started = path.parent / "started"
    _kill_child(textwrap.dedent(f"""
        from pathlib import Path
        import scripts.fault_injection as fi
        from fpbench.records import write_cell
        Path({str(started)!r}).touch()
        for i in range(100000):
            write_cell(Path({str(path)!r}), fi._records(50 + i % 7, "m", "t"))
    """), started)
    df = read_cell(path)
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    ok = df is not None and len(df) >= 50
    return Outcome("killed record writer", ok, records_lost=0 if ok else 50,
                   detail=f"{0 if df is None else len(df)} rows readable; temp files left: {len(leftovers)}")


def corrupt_record(work: Path) -> Outcome:
    """One damaged cell file: that cell is re-run (not trusted), every other cell's records stay readable."""
    runs = work / "corrupt-record"
    good = cell_path(runs, "faults", "m", "good")
    bad = cell_path(runs, "faults", "m", "bad")
    write_cell(good, _records(20, "m", "good"))
    write_cell(bad, _records(20, "m", "bad"))
    bad.write_bytes(b"PAR1 this is not a parquet file")
    remaining = load_all(runs, "faults")
    lost = 20 - int((remaining["transform"] == "good").sum())
    ok = not cell_done(bad, "h") and cell_done(good, "h") and lost == 0
    return Outcome("corrupt record", ok, records_lost=lost, detail="damaged cell marked not done; other cells intact")


def pickle_refused(work: Path) -> Outcome:
    """A pickle checkpoint is refused by default; with the opt-in, a malicious pickle still never runs."""
    plain = work / "model.pt"
    torch.save(_tensors(), plain)
    try:
        load_state(plain)
        refused = False
    except UntrustedFile:
        refused = True
    marker = work / "pwned"

    class Payload:
        def __reduce__(self):  # what an attacker's checkpoint does: run a command on load
            return (os.system, (f"touch {marker}",))

    evil = work / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Payload()}, evil)
    try:
        load_state(evil, allow_pickle=True)
        blocked = False
    except UntrustedFile:
        blocked = True
    ok = refused and blocked and not marker.exists()
    return Outcome("pickle fed", ok, detail=f"refused by default: {refused}; payload blocked with opt-in: {blocked}")


def non_finite_score(work: Path) -> Outcome:
    """NaN and inf scores are counted as invalid and never averaged into the metrics."""
    m = M.compute([1, 1, 0, 0, 1], [0.9, float("nan"), 0.1, float("inf"), 0.8], threshold=0.5)
    ok = m.invalid == 2 and abs(m.mean_score - (0.9 + 0.1 + 0.8) / 3) < 1e-12
    return Outcome("non-finite score", ok, detail=f"invalid={m.invalid}, mean={m.mean_score:.3f}")


CASES: list[Callable[[Path], Outcome]] = [truncated_artefact, altered_artefact, killed_artefact_writer,
                                          killed_record_writer, corrupt_record, pickle_refused, non_finite_score]


def run_all(workdir: Path | None = None) -> list[Outcome]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(workdir or tmp)
        outcomes = []
        for case in CASES:
            work = base / case.__name__
            work.mkdir(parents=True, exist_ok=True)
            try:
                outcomes.append(case(work))
            except Exception as exc:  # a case that crashes did not survive
                outcomes.append(Outcome(case.__name__, False, detail=f"{type(exc).__name__}: {exc}"))
        return outcomes


def summary(outcomes: list[Outcome]) -> str:
    return (f"fault injection: {len(outcomes)} cases tried, {sum(o.survived for o in outcomes)} survived, "
            f"records lost: {sum(o.records_lost for o in outcomes)}")


def main() -> int:
    outcomes = run_all(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    for o in outcomes:
        print(f"  {'ok  ' if o.survived else 'FAIL'} {o.case}: {o.detail}")
    print(summary(outcomes))
    return 0 if all(o.survived for o in outcomes) and not any(o.records_lost for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
