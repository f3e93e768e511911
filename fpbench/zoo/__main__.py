"""Build (or list) a zoo before any method runs: ``python -m fpbench.zoo``.

    python -m fpbench.zoo zoo=tiny                          # roots, calibration roots, children of the grid
    python -m fpbench.zoo zoo=leafbench --dry-run           # list models and pairs; builds and loads nothing
    python -m fpbench.zoo zoo=ci transforms=finetune,chain runs_dir=runs

The transforms default to those of ``experiment=grid`` (``experiment=NAME`` picks another sweep).
``make run`` calls this stage first so that the method sweep — possibly many parallel workers —
only reads the zoo and never builds the same child twice.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpbench.api import FpbenchError, NotApplicable
from fpbench.config import load_option
from fpbench.registry import UnknownName

log = logging.getLogger("fpbench.zoo")
USAGE = ("usage: python -m fpbench.zoo [zoo=NAME] [experiment=NAME | transforms=a,b,...] [runs_dir=DIR] "
         "[device=auto] [seed=0] [--dry-run]")


@dataclass
class ZooPlan:
    """What a zoo tier holds for a list of transforms: counted from the configs alone."""

    zoo: str
    roots: list[str]
    calibration: list[str]
    transforms: list[str]

    @property
    def children(self) -> list[str]:
        return [f"{r}/{t}" for t in self.transforms for r in self.roots]

    @property
    def positives(self) -> int:  # each child against its own root
        return len(self.transforms) * len(self.roots)

    @property
    def negatives(self) -> int:  # each child against every other root
        return len(self.transforms) * len(self.roots) * (len(self.roots) - 1)

    @property
    def pairs(self) -> int:
        return self.positives + self.negatives

    def describe(self) -> str:
        lines = [f"zoo {self.zoo}: {len(self.roots)} roots, {len(self.calibration)} calibration roots, "
                 f"{len(self.transforms)} transforms -> {len(self.children)} children",
                 f"  roots: {', '.join(self.roots)}",
                 f"  calibration roots (thresholds only, never scored): {', '.join(self.calibration)}",
                 f"  transforms: {', '.join(self.transforms)}",
                 f"  pairs per method: {self.pairs} ({self.positives} positives, {self.negatives} negatives)"]
        return "\n".join(lines)


def root_ids(zoo_cfg: dict[str, Any], group: str) -> list[str]:
    return [f"{entry['arch']}-s{int(s)}" for entry in zoo_cfg.get(group, []) for s in entry["seeds"]]


def experiment_transforms(experiment: str) -> list[str]:
    """The transform list of an experiment's sweep (``hydra.sweeper.params.transform``)."""
    cfg = load_option("experiment", experiment)
    params = cfg.get("hydra", {}).get("sweeper", {}).get("params", {})
    value = params.get("transform")
    if not value:
        raise FpbenchError(f"experiment '{experiment}' sweeps no transforms; pass transforms=a,b,...")
    return [t.strip() for t in str(value).split(",") if t.strip()]


def default_transforms(args: dict[str, Any]) -> list[str]:
    """``transforms=`` when given, else the zoo's own ``transforms`` list, else the experiment's sweep."""
    if args["transforms"]:
        return str(args["transforms"]).split(",")
    own = load_option("zoo", args["zoo"]).get("transforms")
    if own and not args["experiment_given"]:
        return list(own)
    return experiment_transforms(args["experiment"])


def plan(zoo: str, transforms: list[str]) -> ZooPlan:
    zoo_cfg = load_option("zoo", zoo)
    for t in transforms:
        load_option("transform", t)  # an unknown transform fails here, listing the valid ones
    return ZooPlan(zoo=zoo, roots=root_ids(zoo_cfg, "roots"), calibration=root_ids(zoo_cfg, "calibration"),
                   transforms=transforms)


def build(zoo_plan: ZooPlan, runs_dir: Path, device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Materialise every model of the plan; a transform that cannot apply to a root is reported, not fatal."""
    from fpbench.utils import configure_threads, resolve_device
    from fpbench.zoo.build import Zoo

    configure_threads()
    zoo = Zoo(load_option("zoo", zoo_plan.zoo), runs_dir, resolve_device(device), seed=seed, progress=False)
    t0 = time.perf_counter()
    roots = zoo.roots()
    zoo.calibration_roots()
    seconds: dict[str, float] = {"roots": time.perf_counter() - t0}
    not_applicable: dict[str, str] = {}
    for t in zoo_plan.transforms:
        t1 = time.perf_counter()
        for root in roots:
            try:
                zoo.child(root, t)
            except NotApplicable as exc:
                not_applicable[f"{root.id}/{t}"] = exc.reason
        seconds[t] = time.perf_counter() - t1
        log.info("transform %s: %.1f s", t, seconds[t])
    return {"built": len(zoo.built), "seconds": seconds, "not_applicable": not_applicable,
            "rebuilt_corrupt": list(zoo.rebuilt_corrupt)}


def parse_args(argv: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {"zoo": "tiny", "experiment": "grid", "transforms": None, "runs_dir": "runs",
                            "device": "auto", "seed": 0, "dry_run": False,
                            "experiment_given": False}
    for arg in argv:
        if arg in ("--dry-run", "dry_run=true"):
            args["dry_run"] = True
            continue
        if arg in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        key, sep, value = arg.partition("=")
        if not sep or key not in args or key == "experiment_given":
            raise FpbenchError(f"unknown argument '{arg}'. {USAGE}")
        args[key] = value
        args["experiment_given"] = args["experiment_given"] or key == "experiment"
    args["seed"] = int(args["seed"])
    return args


def cli(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        transforms = default_transforms(args)
        zoo_plan = plan(args["zoo"], [t.strip() for t in transforms if t.strip()])
    except (FpbenchError, UnknownName) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(zoo_plan.describe(), flush=True)
    if args["dry_run"]:
        print("dry run: nothing was built", flush=True)
        return
    result = build(zoo_plan, Path(args["runs_dir"]), args["device"], args["seed"])
    for child, reason in sorted(result["not_applicable"].items()):
        print(f"  n/a {child}: {reason}")
    total = sum(result["seconds"].values())
    print(f"zoo {zoo_plan.zoo} ready under {args['runs_dir']}/cache/zoo: {result['built']} artefacts built "
          f"in {total:.0f} s ({len(result['not_applicable'])} not applicable)", flush=True)


if __name__ == "__main__":
    cli()
