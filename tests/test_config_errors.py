"""Bad configuration fails in one line naming the problem, before any model is built or record written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fpbench.run", "zoo=ci", f"runs_dir={tmp_path}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,field", [
    (["transform=prune30", "transform.params.amount=1.2"], "amount"),
    (["transform=quant8", "transform.params.bits=9"], "bits"),
    (["transform=quant8", "transform.params.bits=0"], "bits"),
    (["transform=chain", "transform.params.steps=[]"], "steps"),
    (["transform=finetune", "transform.params.split=train_x"], "split"),  # not a split of the zoo's data
    (["transform=finetune", "+transform.params.stesp=10"], "stesp"),  # a misspelled key is not ignored
    (["transform=finetune", "method.params.threshold=nan"], "threshold"),
    (["transform=finetune", "target_fpr=2"], "target_fpr"),
    (["transform=finetune", "device=bogus"], "device"),
    (["transform=finetune", "force=yes"], "force"),
])
def test_out_of_range_parameter_is_rejected_before_any_work(tmp_path, args, field):
    out = _run(tmp_path, "method=cmf", *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"'{field}'" in out.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "records").exists()


def test_unknown_method_lists_the_valid_ones(tmp_path):
    out = _run(tmp_path, "method=ipgaurd", "transform=finetune")
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert "unknown method 'ipgaurd'" in line and "cmf" in line and "sac" in line
