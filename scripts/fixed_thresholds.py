"""The fixed thresholds of the methods whose threshold is ours (not a paper constant), from the zoo's calibration
records: the smallest two-decimal value above every calibration negative's score (calibration roots and their
children against every owner; never a scored pair).

    python scripts/fixed_thresholds.py --runs runs --zoo tiny            # print old -> new per method
    python scripts/fixed_thresholds.py --runs runs --zoo tiny --write    # and rewrite conf/method/<m>.yaml

A changed threshold re-decides the stored pairs on the next ``fpbench.run`` of the cells (scores are kept).
Methods with a paper threshold (``PAPER``: CMF's tau = 0.7) are left alone.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np

from fpbench.config import load_option
from fpbench.records import read_cell
from fpbench.thresholds import calibration_path

PAPER = {"cmf"}  # thresholds the seed paper gives
CONF = Path(__file__).resolve().parent.parent / "conf" / "method"


def rule(scores: np.ndarray) -> float:
    """The smallest two-decimal value strictly above every score."""
    top = round(float(scores.max()), 6)  # a float32 score of 59/100 is 0.58999997: it is 0.59
    return (math.floor(round(top * 100, 6)) + 1) / 100


def rewrite(path: Path, value: float, n: int, top: float, zoo: str) -> None:
    """Replace the ``threshold:`` line of a method YAML (and the comment block right above it) with the new value."""
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if re.match(r"\s+threshold:", line))
    start = i
    while start > 0 and lines[start - 1].startswith(" ") and lines[start - 1].lstrip().startswith("#"):
        start -= 1  # the indented comment right above is the old threshold's explanation
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    comment = [f"{indent}# threshold: the smallest 2-decimal value above every one of the {zoo} zoo's {n} calibration",
               f"{indent}# negatives (calibration roots and their children, never scored; max {top:.4f}): "
               "scripts/fixed_thresholds.py."]
    path.write_text("\n".join([*lines[:start], *comment, f"{indent}threshold: {value:g}", *lines[i + 1 :]]) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--zoo", default="tiny")
    ap.add_argument("--methods", default="", help="comma-separated (default: every method with calibration records)")
    ap.add_argument("--write", action="store_true", help="rewrite the method YAMLs")
    args = ap.parse_args(argv)
    base = args.runs / "records" / args.zoo
    methods = args.methods.split(",") if args.methods else sorted(p.name for p in base.iterdir() if p.is_dir())
    for m in methods:
        cal = read_cell(calibration_path(args.runs, args.zoo, m))
        if cal is None or m in PAPER or not (CONF / f"{m}.yaml").exists():
            continue
        scores = cal.loc[cal["status"] == "ok", "score"].to_numpy(float)
        scores = scores[np.isfinite(scores)]
        if not scores.size:
            continue
        old = float(load_option("method", m)["params"]["threshold"])
        new = rule(scores)
        print(f"{m}: {scores.size} calibration negatives, max {scores.max():.4f}: threshold {old:g} -> {new:g}")
        if args.write and new != old:
            rewrite(CONF / f"{m}.yaml", new, int(scores.size), float(scores.max()), args.zoo)


if __name__ == "__main__":
    sys.exit(main())
