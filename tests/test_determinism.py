"""Same config and seed on the same machine give identical records: every zoo model and score rebuilt from scratch."""

from __future__ import annotations

from fpbench.config import load_option
from fpbench.run import CellSpec, run_cell


def _scores(runs_dir):
    spec = CellSpec(zoo_cfg=load_option("zoo", "ci"), method_cfg=load_option("method", "sac"),
                    transform_cfg=load_option("transform", "finetune"), runs_dir=runs_dir, device="cpu",
                    progress=False)
    df, _, cached = run_cell(spec)
    assert not cached
    return df.sort_values(["owner", "suspect"])[["owner", "suspect", "label", "score", "config_hash"]]


def test_same_config_and_seed_give_identical_records(tmp_path):
    first = _scores(tmp_path / "a")
    second = _scores(tmp_path / "b")
    assert len(first) == 16
    assert first.reset_index(drop=True).equals(second.reset_index(drop=True))
