"""A cell that raises writes an error record and the sweep goes on; NaN scores are flagged, never averaged."""

from __future__ import annotations

import math

import pytest

import fpbench.registry
from fpbench.api import Fingerprint, Method
from fpbench.records import cell_done, cell_path
from fpbench.registry import Registry
from fpbench.run import CellSpec, run_cell
from fpbench.zoo.build import transform_config


class Boom(Method):
    access = "black-box labels"

    def fingerprint(self, owner):
        return Fingerprint()

    def score(self, fp, suspect):
        raise RuntimeError("boom: the method crashed")


class HalfNaN(Method):
    access = "black-box labels"

    def fingerprint(self, owner):
        return Fingerprint(meta={"owner": owner.id})

    def score(self, fp, suspect):
        return float("nan") if suspect.id.endswith("s1") or "s1/" in suspect.id else 1.0


@pytest.fixture
def fake_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real method registry plus two methods that fail, for this test only (lookups go through
    ``fpbench.registry.method_class``, which reads the module's ``METHODS``)."""
    real = fpbench.registry.METHODS
    methods = Registry(real.kind, base=Method)
    for name in real:
        methods.register(name, real.entry(name))
    methods.register("boom", f"{__name__}:Boom")
    methods.register("halfnan", f"{__name__}:HalfNaN")
    monkeypatch.setattr(fpbench.registry, "METHODS", methods)


def _spec(zoo_cfg, runs_dir, method: str) -> CellSpec:
    return CellSpec(zoo_cfg=zoo_cfg, method_cfg={"name": method, "params": {"threshold": 0.5}},
                    transform_cfg=transform_config("quant8"), runs_dir=runs_dir, device="cpu", progress=False)


def test_failing_cell_is_recorded_and_the_next_cell_still_runs(fake_methods, ci_zoo, ci_zoo_cfg, ci_runs_dir) -> None:
    runs = ci_runs_dir / "errors"
    df, summary, _ = run_cell(_spec(ci_zoo_cfg, runs, "boom"))
    # a crash is one error row for the cell (never half a cell of scores), naming the cause
    assert summary["status"] == "error" and len(df) == 1 and df["status"].iloc[0] == "error"
    assert "RuntimeError: boom: the method crashed" in df["error"].iloc[0]
    path = cell_path(runs, "ci", "boom", "quant8")
    assert path.exists() and not cell_done(path, df["config_hash"].iloc[0])  # failed cells are re-tried next time

    df2, summary2, _ = run_cell(_spec(ci_zoo_cfg, runs, "halfnan"))  # same process, the sweep goes on
    pairs = df2[df2["role"] == "pair"]
    nan_rows = pairs[pairs["score"].isna()]
    assert len(nan_rows) > 0 and (nan_rows["decision"] == 0).all()
    assert (nan_rows["error"] == "non-finite score").all()
    assert summary2["invalid"] == len(nan_rows) and math.isclose(summary2["mean_score"], 1.0)
