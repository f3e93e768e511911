"""Launcher workers share the machine's cores instead of each taking all of them (oversubscription made small
LAPACK calls ~15x slower on a 2-core machine)."""

import os

import pytest
import torch

from fpbench.run import cores_per_worker
from fpbench.utils import available_cores, configure_threads


@pytest.mark.parametrize(("launcher", "cores", "expected"), [
    ({}, 8, 8),                                   # basic launcher: one job at a time, every core
    ({"n_jobs": 2}, 8, 4),                        # joblib: 8 cores over 2 workers
    ({"n_jobs": 4}, 2, 1),                        # more workers than cores: one thread each, never zero
    ({"n_jobs": -1}, 8, 1),                       # joblib's -1: as many workers as cores
    ({"n_jobs": -2}, 8, 1),                       # -2: cores - 1 workers
    ({"cpus_per_task": 8, "n_jobs": None}, 64, 8),  # submitit/SLURM: the task's CPUs, not the node's
    ({"cpus_per_task": 16}, 4, 4),                # never more than this process may use
])
def test_cores_per_worker(launcher, cores, expected):
    assert cores_per_worker(launcher, cores) == expected


def test_configure_threads_respects_the_share_and_a_pinned_value(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        configure_threads(1)
        assert torch.get_num_threads() == 1
        configure_threads(10_000)  # capped at what the process may use
        assert torch.get_num_threads() == available_cores()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2 if available_cores() > 1 else 1)
        configure_threads(1)  # a pinned OMP_NUM_THREADS wins: nothing changed
        assert torch.get_num_threads() == (2 if available_cores() > 1 else 1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_available_cores_is_the_affinity_not_the_node(monkeypatch):
    """A SLURM task granted 2 CPUs of a 64-core node must not start 64 threads."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 7})
    assert available_cores() == 2
