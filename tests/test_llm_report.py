"""The report's language section: LeaFBench's metrics computed as LeaFBench computes them (KS statistic, mean score
difference, accuracy at the in-sample Youden threshold) beside the held-out calibrated threshold, by derivative
type and by family; vision zoos get no such section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fpbench.records import Record, to_frame
from fpbench.report.llm import llm_section, llm_table


def _frame(rows: list[tuple[str, str, str, int, float, str]]) -> pd.DataFrame:
    recs = [Record(zoo="llm_ci", method="reef", transform=t, owner=o, suspect=f"{o}/{t}/{i}", owner_arch=arch,
                   suspect_arch=arch, label=label, score=score, threshold=0.5, decision=int(score >= 0.5),
                   fingerprint_seconds=0.0, verify_seconds=0.0, owner_accuracy=0.2, suspect_accuracy=0.2, seed=0,
                   config_hash="h", versions="{}", git_commit="", role=role, created=0.0)
            for i, (t, o, arch, label, score, role) in enumerate(rows)]
    return to_frame(recs)


def test_leafbench_metrics_by_derivative_and_family_beside_the_held_out_threshold() -> None:
    rows = [("lora", "llama-s0", "llama", 1, 0.9, "pair"), ("lora", "llama-s0", "llama", 0, 0.4, "pair"),
            ("lora", "qwen2-s0", "qwen2", 1, 0.8, "pair"), ("lora", "qwen2-s0", "qwen2", 0, 0.6, "pair"),
            ("quant8", "llama-s0", "llama", 1, 0.95, "pair"), ("quant8", "llama-s0", "llama", 0, 0.85, "pair")]
    cal = [("_calibration", "llama-s0", "llama", 0, s, "calibration") for s in np.linspace(0.1, 0.7, 100)]
    table = llm_table(_frame(rows + cal), target_fpr=0.01)
    pooled = table[(table["by"] == "all")].iloc[0]
    assert pooled["positives"] == 3 and pooled["negatives"] == 3
    assert pooled["mean_diff"] == pytest.approx((0.9 + 0.8 + 0.95) / 3 - (0.4 + 0.6 + 0.85) / 3)
    assert pooled["ks"] == pytest.approx(2 / 3)  # the ECDFs differ most between 0.6 and 0.8
    # in-sample Youden: TPR - FPR is 2/3 at 0.9 and at 0.8; the first (highest) is taken, 5 of 6 pairs right
    assert pooled["youden_t_in_sample"] == pytest.approx(0.9) and pooled["youden_acc_in_sample"] == pytest.approx(5 / 6)
    assert pooled["cal_threshold"] > 0.69  # from the 100 held-out calibration scores, not from the pairs
    assert pooled["cal_fpr"] == pytest.approx(1 / 3)  # only 0.85 lies above the held-out threshold (~0.7)
    lora = table[(table["by"] == "derivative") & (table["group"] == "lora")].iloc[0]
    assert lora["auc"] == 1.0 and lora["positives"] == 2
    assert set(table.loc[table["by"] == "family", "group"]) == {"llama", "qwen2"}


def test_a_vision_zoo_has_no_language_section(tmp_path: Path) -> None:
    assert llm_section(tmp_path, "ci", tmp_path) is None
