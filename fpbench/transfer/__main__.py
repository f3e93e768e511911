"""``python -m fpbench.transfer runs_dir=runs [track=vision|language|all] [lambda=1.0] [config=default] [seed=0]``.

Runs the transfer comparison of each track (see ``fpbench.transfer.evaluate``), stores its rows and the
lineage edges under ``<runs_dir>/records/transfer/`` and writes the transfer tables to ``<runs_dir>/tables/``.
Trained models are cached under ``<runs_dir>/cache/transfer/`` (the vision base is the zoo's own root).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from fpbench.api import ConfigError, FpbenchError, require
from fpbench.config import load_option
from fpbench.transfer import report, results
from fpbench.transfer.evaluate import compare
from fpbench.transfer.language import LanguageTrack
from fpbench.transfer.track import Track
from fpbench.transfer.vision import VisionTrack
from fpbench.utils import configure_threads, resolve_device

TRACKS: dict[str, type[Track]] = {"vision": VisionTrack, "language": LanguageTrack}
OPTIONS = ("runs_dir", "track", "lambda", "config", "seed", "device", "progress")


def parse(argv: list[str]) -> dict[str, str]:
    bad = [a for a in argv if "=" not in a]
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = sorted(set(args) - set(OPTIONS)) + bad
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(f'{o}=...' for o in OPTIONS)}")
    return args


def run(args: dict[str, str]) -> list[Path]:
    cfg: dict[str, Any] = load_option("transfer", args.get("config", "default"))
    runs_dir = Path(args.get("runs_dir", "runs"))
    which = args.get("track", "all")
    require(which in (*TRACKS, "all"), "track", f"must be one of {', '.join(TRACKS)}, all; got '{which}'")
    lam = float(args.get("lambda", cfg.get("lambda", 1.0)))
    require(lam > 0, "lambda", f"must be > 0, got {lam}")
    lambdas = [float(x) for x in cfg.get("lambdas", [lam])]
    seed = int(args.get("seed", cfg.get("seed", 0)))
    device = resolve_device(args.get("device", "auto"))
    progress = args.get("progress", "false").lower() in ("1", "true", "yes")
    names = list(TRACKS) if which == "all" else [which]
    edges: list[dict[str, Any]] = []
    for name in names:
        start, load0 = time.perf_counter(), os.getloadavg()[0]
        track = TRACKS[name](cfg[name], runs_dir, device, seed, progress)
        outcome = compare(track, lam, lambdas, log=lambda msg: print(msg, flush=True))
        wall = time.perf_counter() - start
        for r in outcome.rows:
            r.update(track_wall_seconds=wall, load_average=(load0 + os.getloadavg()[0]) / 2)
        path = results.write_rows(runs_dir, name, outcome.rows, cfg[name], cfg.get("name", "default"), seed)
        edges += outcome.edges
        print(f"[{name}] {len(outcome.rows)} rows -> {path} ({wall:.0f} s wall, load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores)", flush=True)
    results.write_edges(runs_dir, edges, names)
    return report.write_tables(runs_dir)


def cli() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    configure_threads()
    try:
        tables = run(parse(sys.argv[1:]))
    except FpbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    summary = tables[0].read_text() if tables else "(no rows)"
    print(summary)
    print(f"transfer tables: {', '.join(str(p) for p in tables)}")


if __name__ == "__main__":
    cli()
