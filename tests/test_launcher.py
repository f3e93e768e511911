"""Hydra's joblib launcher (two worker processes sharing one zoo) and the submitit path (hydra/launcher=local, the
same code path as the SLURM config) give the same records as the basic launcher.

Training a model under another thread count changes float reduction order, so SGD ends elsewhere: a sweep on
several workers first materialises the zoo once (as `make run` does), then the workers only read it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd

CELLS = ["finetune", "quant8"]


def _sweep(runs_dir, *extra: str, cells: list[str] = CELLS) -> None:
    cmd = [sys.executable, "-m", "fpbench.run", "-m", *extra, "zoo=ci", "method=sac",
           f"transform={','.join(cells)}", f"runs_dir={runs_dir}", "progress=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]


def _scores(runs_dir, cell: str) -> pd.DataFrame:
    df = pd.read_parquet(runs_dir / "records" / "ci" / "sac" / f"{cell}.parquet")
    return df.sort_values(["owner", "suspect"])[["owner", "suspect", "label", "score"]].reset_index(drop=True)


def test_joblib_launcher_gives_the_same_scores_as_the_basic_one(tmp_path):
    _sweep(tmp_path / "basic")
    shutil.copytree(tmp_path / "basic" / "cache" / "zoo", tmp_path / "joblib" / "cache" / "zoo")  # the built zoo
    _sweep(tmp_path / "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    for cell in CELLS:
        basic, joblib = _scores(tmp_path / "basic", cell), _scores(tmp_path / "joblib", cell)
        assert basic[["owner", "suspect", "label"]].equals(joblib[["owner", "suspect", "label"]]), cell
        assert (basic["score"] - joblib["score"]).abs().max() < 1e-5, cell

    shutil.copytree(tmp_path / "basic" / "cache" / "zoo", tmp_path / "submitit" / "cache" / "zoo")
    _sweep(tmp_path / "submitit", "hydra/launcher=local", cells=CELLS[:1])
    basic, submitit = _scores(tmp_path / "basic", CELLS[0]), _scores(tmp_path / "submitit", CELLS[0])
    assert (basic["score"] - submitit["score"]).abs().max() < 1e-5


def test_slurm_config_builds_the_slurm_launcher_with_a_gpu_per_cell(tmp_path) -> None:
    """The SLURM config composes into submitit's SlurmLauncher as a cluster user relies on: one GPU and 8 CPUs per
    cell, each worker taking its 8 cores for torch's threads, job files under the sweep's runs dir."""
    import os

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fpbench.run import cores_per_worker

    conf = os.path.join(os.path.dirname(__file__), "..", "conf")
    with initialize_config_dir(config_dir=os.path.abspath(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "zoo=ci", f"runs_dir={tmp_path}"],
                      return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["gpus_per_node"] == 1 and launcher.params["partition"] == "gpu"
    assert cores_per_worker(cfg.hydra.launcher, 64) == 8
    assert str(launcher.params["submitit_folder"]).startswith(f"{tmp_path}/hydra/multirun/ci/")
