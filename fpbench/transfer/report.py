"""Transfer tables, built from ``records/transfer/*.parquet`` alone (report sections and ``python -m fpbench.transfer``).

- summary: per track and way, the mean over downstream models of FSR clean and under each removal pressure,
  the quality change on clean data, and the training seconds per fingerprinted model;
- lambda: the effect of the transfer coefficient on FSR and quality;
- models: one line per downstream model and way.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fpbench.transfer.evaluate import CONDITIONS, WAYS
from fpbench.transfer.results import load_rows

WAY_ORDER = {w: i for i, w in enumerate(WAYS)}


def _main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Downstream rows at each track's main lambda (the one the removal pressures were run at)."""
    df = df[df["task"] != "base"]
    main = df[(df["way"] == "transfer") & (df["condition"] != "clean")].groupby("track")["lam"].first()
    keep = (df["way"] != "transfer") | (df["lam"] == df["track"].map(main))
    return df[keep]


def _per_model(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (track, task, way): clean metrics and FSR under each pressure as columns."""
    clean = df[df["condition"] == "clean"].set_index(["track", "task", "way"])
    fsr = df.pivot_table(index=["track", "task", "way"], columns="condition", values="fsr", aggfunc="first")
    out = clean[["lam", "model", "quality_metric", "fsr", "verified", "false_trigger_rate", "quality", "quality_delta",
                 "cost_seconds", "inject_seconds", "retrain_seconds"]].copy()
    for c in CONDITIONS[1:]:
        out[f"fsr_{c}"] = fsr[c] if c in fsr.columns else float("nan")
    return out.reset_index()


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys, key=lambda s: s.map(WAY_ORDER) if s.name == "way" else s).reset_index(drop=True)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    per = _per_model(_main_rows(rows))
    agg = per.groupby(["track", "way"]).agg(
        models=("task", "nunique"), metric=("quality_metric", "first"), lam=("lam", "first"), fsr=("fsr", "mean"),
        verified=("verified", "mean"),
        false_trigger_rate=("false_trigger_rate", "mean"), quality=("quality", "mean"),
        quality_delta=("quality_delta", "mean"), **{f"fsr_{c}": (f"fsr_{c}", "mean") for c in CONDITIONS[1:]},
        cost_seconds=("cost_seconds", "mean"), inject_seconds=("inject_seconds", "mean"),
        retrain_seconds=("retrain_seconds", "mean"),
    ).reset_index()
    return _sorted(agg, ["track", "way"])


def lambda_effect(rows: pd.DataFrame) -> pd.DataFrame:
    t = rows[(rows["way"] == "transfer") & (rows["condition"] == "clean") & (rows["task"] != "base")]
    agg = t.groupby(["track", "lam"]).agg(models=("task", "nunique"), fsr=("fsr", "mean"), fsr_min=("fsr", "min"),
                                          verified=("verified", "mean"),
                                          false_trigger_rate=("false_trigger_rate", "mean"),
                                          quality_delta=("quality_delta", "mean"), metric=("quality_metric", "first"))
    return agg.reset_index()


def per_model(rows: pd.DataFrame) -> pd.DataFrame:
    return _sorted(_per_model(_main_rows(rows)), ["track", "task", "way"])


def _section(fn):  # noqa: ANN001, ANN202 - adapts a rows -> table function to the report's Section signature
    def build(runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
        rows = load_rows(runs_dir)
        return None if rows.empty else fn(rows)

    return build


summary_section = _section(summary)
lambda_section = _section(lambda_effect)
models_section = _section(per_model)
TABLES = {"transfer": summary, "transfer_lambda": lambda_effect, "transfer_models": per_model}


def write_tables(runs_dir: Path | str) -> list[Path]:
    """Write every transfer table as .md and .csv under ``<runs_dir>/tables/``."""
    rows = load_rows(runs_dir)
    if rows.empty:
        return []
    out = Path(runs_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in TABLES.items():
        table = fn(rows)
        table.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
        paths.append(out / f"{name}.md")
    return paths
