"""Shared fixtures: the `ci` zoo is built once per test session and reused by every test that needs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def ci_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs dir whose cache holds the ci zoo's roots (built once per session)."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def ci_zoo_cfg() -> dict:
    from fpbench.config import load_option

    return load_option("zoo", "ci")


@pytest.fixture(scope="session")
def ci_zoo(ci_runs_dir: Path, ci_zoo_cfg: dict):
    """The ci Zoo with roots and calibration roots built (digits, 2 archs x 2 seeds + 2 calibration roots)."""
    from fpbench.zoo.build import Zoo

    zoo = Zoo(ci_zoo_cfg, ci_runs_dir, torch.device("cpu"), seed=0, progress=False)
    zoo.roots()
    zoo.calibration_roots()
    return zoo


@pytest.fixture(scope="module")
def trio(ci_zoo) -> tuple:
    """(owner, fine-tuned child, independent of the same architecture) as subjects."""
    roots = ci_zoo.roots()
    owner = roots[0]
    indep = next(r for r in roots if r.spec.arch == owner.spec.arch and r.id != owner.id)
    child = ci_zoo.child(owner, "finetune")
    return ci_zoo.subject(owner), ci_zoo.subject(child), ci_zoo.subject(indep)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    """The fault-injection summary line (cases tried, survived, records lost) at the end of `make test`."""
    line = getattr(config, "fpbench_fault_summary", None)
    terminalreporter.write_line(line or "fault injection: not run in this session")
