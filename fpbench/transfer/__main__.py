"""``python -m fpbench.transfer [transfer=default|ci] [track=vision|language|all] [lambda=1.0] [seed=0] [runs_dir=runs]``
(a Hydra app, ``conf/transfer_stage.yaml``; the tracks' settings are ``conf/transfer/<name>.yaml``).

Runs the transfer comparison of each track (see ``fpbench.transfer.evaluate``), stores its rows and the
lineage edges under ``<runs_dir>/records/transfer/`` and writes the transfer tables to ``<runs_dir>/tables/``.
Trained models are cached under ``<runs_dir>/cache/transfer/`` (the vision base is the zoo's own root).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from fpbench.errors import require
from fpbench.registry import Registry
from fpbench.stage import CONF_PATH, Stage, check_int, check_number
from fpbench.transfer import report, results
from fpbench.transfer.evaluate import compare
from fpbench.utils import configure_threads, resolve_device

# Imported on first use: the language track pulls in transformers, which a refused command must not wait for.
TRACKS = Registry("track", base="fpbench.transfer.track:Track")
TRACKS.register("vision", "fpbench.transfer.vision:VisionTrack")
TRACKS.register("language", "fpbench.transfer.language:LanguageTrack")
STAGE = Stage(module="fpbench.transfer", config="transfer_stage", unit="tracks")


def run(cfg: Mapping[str, Any], runs_dir: Path, track: str = "all", lam: float | None = None,
        seed: int | None = None, device: str = "auto", progress: bool = False,
        on_done: Callable[[str], None] | None = None) -> list[Path]:
    """Both tracks (or one) of a transfer config (``conf/transfer/<name>.yaml`` as a dict); ``lam`` and ``seed``
    default to the config's. Returns the transfer tables written. ``on_done(track)`` after each track."""
    require(track in (*TRACKS, "all"), "track", f"must be one of {', '.join(TRACKS)}, all; got '{track}'")
    lam = float(cfg.get("lambda", 1.0) if lam is None else lam)
    require(lam > 0, "lambda", f"must be > 0, got {lam}")
    lambdas = [float(x) for x in cfg.get("lambdas", [lam])]
    seed = int(cfg.get("seed", 0) if seed is None else seed)
    names = list(TRACKS) if track == "all" else [track]
    edges: list[dict[str, Any]] = []
    for name in names:
        start, load0 = time.perf_counter(), os.getloadavg()[0]
        t = TRACKS.get(name)(cfg[name], runs_dir, resolve_device(device), seed, progress)
        outcome = compare(t, lam, lambdas, log=lambda msg: print(msg, flush=True))
        wall = time.perf_counter() - start
        for r in outcome.rows:
            r.update(track_wall_seconds=wall, load_average=(load0 + os.getloadavg()[0]) / 2)
        path = results.write_rows(runs_dir, name, outcome.rows, cfg[name], cfg.get("name", "default"), seed)
        edges += outcome.edges
        print(f"[{name}] {len(outcome.rows)} rows -> {path} ({wall:.0f} s wall, load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores)", flush=True)
        if on_done is not None:
            on_done(name)
    results.write_edges(runs_dir, edges, names)
    return report.write_tables(runs_dir)


@hydra.main(config_path=CONF_PATH, config_name=STAGE.config, version_base="1.3")
def main(cfg: DictConfig) -> None:
    with STAGE.running(cfg):
        transfer = OmegaConf.to_container(cfg.transfer, resolve=True)
        assert isinstance(transfer, dict)
        track = str(cfg.track)
        STAGE.total = len(TRACKS) if track == "all" else 1
        configure_threads()
        tables = run(transfer, Path(cfg.runs_dir), track, check_number(cfg["lambda"], "lambda"),
                     check_int(cfg.seed, "seed"), str(cfg.device), bool(cfg.progress), on_done=STAGE.done)
    summary = tables[0].read_text() if tables else "(no rows)"
    print(summary)
    print(f"transfer tables: {', '.join(str(p) for p in tables)}")


def cli(argv: list[str] | None = None) -> None:
    STAGE.launch(main, argv)


if __name__ == "__main__":
    cli()
