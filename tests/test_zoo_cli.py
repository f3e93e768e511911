"""The zoo stage: a dry run lists models and pairs from the configs alone; a build materialises them once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fpbench.zoo.__main__ import cli, plan


def test_leafbench_dry_run_counts_paper_scale_pairs_without_data(capsys: pytest.CaptureFixture[str]) -> None:
    # CIFAR-10 is not on this machine: the dry run must not need it.
    cli(["zoo=leafbench", "--dry-run"])
    out = capsys.readouterr().out
    assert "dry run: nothing was built" in out
    p = plan("leafbench", ["finetune", "prune30"])
    assert p.pairs == 2 * len(p.roots) ** 2 and p.positives == 2 * len(p.roots)
    full = [line for line in out.splitlines() if "pairs per method" in line][0]
    assert int(full.split(":")[1].split()[0]) >= 696


def test_unknown_transform_lists_valid_ones() -> None:
    proc = subprocess.run([sys.executable, "-m", "fpbench.zoo", "zoo=ci", "transforms=prune99", "--dry-run"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown transform 'prune99'" in proc.stderr and "prune30" in proc.stderr


def test_build_stage_builds_children_once(ci_zoo, ci_runs_dir, capsys: pytest.CaptureFixture[str]) -> None:
    from fpbench.zoo.__main__ import build

    first = build(plan("ci", ["quant8"]), ci_runs_dir, device="cpu")
    again = build(plan("ci", ["quant8"]), ci_runs_dir, device="cpu")
    assert again["built"] == 0  # everything reused from the store
    assert first["built"] <= len(ci_zoo.roots())
