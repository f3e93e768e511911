"""The zoo stage (``python -m fpbench.zoo``, a Hydra app): a dry run lists models and pairs from the configs
alone; bad values are one line and exit code 2; ``--multirun`` sweeps it; a build makes every model of the plan
exactly once, and Ctrl-C stops it in one line from which the same command resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fpbench.zoo.__main__ import build, plan

REPO = Path(__file__).resolve().parent.parent


def zoo_stage(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fpbench.zoo", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def stored(runs: Path) -> int:
    """Artefacts in the zoo store (a writer's temporary ``.<key>.*`` directory does not count)."""
    return sum(1 for m in (runs / "cache" / "zoo").rglob("meta.json") if not m.parent.name.startswith("."))


def test_leafbench_dry_run_counts_paper_scale_pairs_without_data(tmp_path: Path) -> None:
    # CIFAR-10 is not on this machine: the dry run must not need it.
    proc = zoo_stage("zoo=leafbench", "dry_run=true", f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dry run: nothing was built" in proc.stdout
    p = plan("leafbench", ["finetune", "prune30"])
    assert p.pairs == 2 * len(p.roots) ** 2 and p.positives == 2 * len(p.roots)
    # a cross-root merge child is a positive for both of its roots (leafbench: 4 resnets, 2 vggs, 2 effnets)
    merged = plan("leafbench", ["merge_cross"])
    assert (merged.positives, merged.negatives) == (2 * 8, 8 * (8 - 2))
    full = [line for line in proc.stdout.splitlines() if "pairs per method" in line][0]
    assert int(full.split(":")[1].split()[0]) >= 696
    assert not (tmp_path / "runs" / "cache").exists()  # nothing built, nothing loaded
    assert not (tmp_path / "outputs").exists()  # Hydra's logs go under runs_dir, not the working directory
    assert (tmp_path / "runs" / "hydra" / "zoo" / "run" / ".hydra" / "config.yaml").exists()


def test_unknown_transform_lists_valid_ones(tmp_path: Path) -> None:
    proc = zoo_stage("zoo=ci", "transforms=prune99", "dry_run=true", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown transform 'prune99'" in proc.stderr and "prune30" in proc.stderr


@pytest.mark.parametrize(("arg", "field"), [
    ("dry_run=yes", "dry_run"),  # not a boolean: refused, not read as false
    ("device=bogus", "device"),
    ("device=cuda:7", "device"),  # no such GPU here
    ("seed=abc", "seed"),
    ("transfroms=finetune", "transfroms"),  # a typo'd key: refused, with the close match
    ("zoo=", "zoo"),
    ("transforms=", "transforms"),
])
def test_bad_values_are_one_line_naming_the_field(tmp_path: Path, arg: str, field: str) -> None:
    proc = zoo_stage("zoo=ci", "dry_run=true", arg, f"runs_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'{field}'" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "zoo ci:" not in proc.stdout  # rejected before anything ran


def test_runs_dir_that_is_a_file_is_refused_before_hydra_writes_under_it(tmp_path: Path) -> None:
    afile = tmp_path / "runs"
    afile.write_text("not a directory")
    proc = zoo_stage("zoo=ci", "dry_run=true", f"runs_dir={afile}", cwd=tmp_path)
    assert proc.returncode == 2 and "'runs_dir'" in proc.stderr and "is an existing file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_multirun_sweeps_the_zoo_stage(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = zoo_stage("-m", "zoo=ci", "dry_run=true", "transforms=finetune,permute", f"runs_dir={runs}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = [line for line in proc.stdout.splitlines() if line.startswith("  transforms:")]
    assert listed == ["  transforms: finetune", "  transforms: permute"]  # one job per value
    for job in ("0", "1"):
        assert (runs / "hydra" / "zoo" / "multirun" / job / ".hydra" / "overrides.yaml").exists()
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()


def test_a_list_outside_multirun_is_one_job(tmp_path: Path) -> None:
    proc = zoo_stage("zoo=ci", "dry_run=true", "transforms=finetune,permute", f"runs_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "  transforms: finetune, permute" in proc.stdout and "-> 8 children" in proc.stdout


def test_ctrl_c_stops_in_one_line_and_the_same_command_resumes(tmp_path: Path) -> None:
    """SIGINT mid-build: exit 130 and one line naming what finished and the command; re-running builds exactly
    the models not yet stored, and a third run builds nothing: roots + calibration roots + children, once each."""
    runs = tmp_path / "runs"
    args = ["zoo=ci", "transforms=permute", f"runs_dir={runs}", "device=cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "fpbench.zoo", *args], cwd=tmp_path, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    deadline = time.monotonic() + 900  # a ci root takes seconds, minutes on a loaded shared machine
    while stored(runs) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None and stored(runs) >= 1, "the first root was not stored in time; nothing to interrupt"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, err
    assert "models finished" in lines[0] and f"python -m fpbench.zoo {' '.join(args)}" in lines[0]

    p = plan("ci", ["permute"])
    assert len(p.models) == len(p.roots) + len(p.calibration) + len(p.calibration_children) + len(p.roots)
    kept = stored(runs)
    assert 1 <= kept < len(p.models)
    resumed = build(p, runs, device="cpu")
    assert resumed["built"] == len(p.models) - kept  # what was written is reused, the rest is built
    assert stored(runs) == len(p.models)
    assert build(p, runs, device="cpu")["built"] == 0
