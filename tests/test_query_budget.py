"""A method's query budget is enforced by the runner: a verification over budget is refused and recorded as failed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from config_helpers import resolved_params

from fpbench.api import QueryBudgetExceeded
from fpbench.config import load_option
from fpbench.run import CellSpec, run_cell, validate_cell
from fpbench.zoo.build import transform_config


def _spec(ci_zoo_cfg: dict, runs_dir: Path, method_cfg: dict) -> CellSpec:
    return CellSpec(zoo_cfg=ci_zoo_cfg, method_cfg=method_cfg, transform_cfg=transform_config("finetune"),
                    runs_dir=runs_dir, device="cpu", progress=False, force=True)


def test_subject_refuses_queries_over_budget(ci_zoo) -> None:
    subject = ci_zoo.subject(ci_zoo.roots()[0])
    subject.query_budget = 10
    x = torch.rand(8, 3, 16, 16)
    subject.logits(x)
    with pytest.raises(QueryBudgetExceeded, match="query_budget of 10"):
        subject.labels(x)  # 16 > 10: refused before the model runs
    assert subject.query_count == 8


def test_cell_records_queries_within_budget_and_fails_pairs_over_it(ci_zoo, ci_zoo_cfg, ci_runs_dir) -> None:
    cfg = load_option("method", "agreement")
    df, summary, _ = run_cell(_spec(ci_zoo_cfg, ci_runs_dir / "budget", cfg))
    pairs = df[df["role"] == "pair"]
    assert summary["status"] == "ok"
    # agreement asks for `queries` probe inputs, or every probe input when the split is smaller (ci: 150)
    expected = min(resolved_params("method", "agreement")["queries"], len(ci_zoo.data.split("probe")))
    assert (pairs["queries"] == expected).all()
    assert (pairs["queries"] <= cfg["params"]["query_budget"]).all()

    tight = {**cfg, "params": {**cfg["params"], "query_budget": 50}}  # agreement asks for >= 150 inputs
    df, summary, _ = run_cell(_spec(ci_zoo_cfg, ci_runs_dir / "budget", tight))
    pairs = df[df["role"] == "pair"]
    assert (pairs["status"] == "error").all() and pairs["error"].str.contains("query_budget of 50").all()
    assert summary["status"] != "ok"  # no score was made from a refused verification


def test_white_box_methods_declare_a_zero_budget_and_keep_it(ci_zoo, ci_zoo_cfg, ci_runs_dir) -> None:
    cfg = load_option("method", "cmf")
    assert cfg["params"]["query_budget"] == 0
    df, summary, _ = run_cell(_spec(ci_zoo_cfg, ci_runs_dir / "budget", cfg))
    assert summary["status"] == "ok" and (df.loc[df["role"] == "pair", "queries"] == 0).all()


def test_negative_budget_is_rejected_before_any_work(ci_zoo_cfg, tmp_path: Path) -> None:
    cfg = load_option("method", "sac")
    bad = {**cfg, "params": {**cfg["params"], "query_budget": -1}}
    with pytest.raises(Exception, match="query_budget"):
        validate_cell(_spec(ci_zoo_cfg, tmp_path, bad))
