"""Build (or list) a zoo before any method runs: ``python -m fpbench.zoo`` (a Hydra app, ``conf/zoo_stage.yaml``).

    python -m fpbench.zoo zoo=tiny                          # roots, calibration roots, children of the grid
    python -m fpbench.zoo zoo=leafbench dry_run=true        # list models and pairs; builds and loads nothing
    python -m fpbench.zoo zoo=ci transforms=finetune,chain runs_dir=runs
    python -m fpbench.zoo -m zoo=ci transforms=finetune,prune30   # a multirun: one job per transform

The transforms default to the zoo's own ``transforms`` list when it has one, else to those of ``experiment=grid``
(``experiment=NAME`` picks another sweep; given explicitly, it wins over the zoo's list). A bar shows the models
done of total, the one being built and the time left. ``make run`` calls this stage first so that the method
sweep -- possibly many parallel workers -- only reads the zoo and never builds the same child twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from fpbench.config import check_option, load_option
from fpbench.errors import ConfigError, NotApplicable
from fpbench.stage import CONF_PATH, Stage, as_list

log = logging.getLogger("fpbench.zoo")
STAGE = Stage(module="fpbench.zoo", config="zoo_stage", list_keys=("transforms",), unit="models")


@dataclass
class ZooPlan:
    """What a zoo tier holds for a list of transforms: counted from the configs alone."""

    zoo: str
    roots: list[str]
    calibration: list[str]
    transforms: list[str]
    zoo_cfg: dict[str, Any] = field(default_factory=dict, repr=False)
    training: list[str] = field(default_factory=list)  # roots methods may learn from (zoo.training)

    @property
    def children(self) -> list[str]:
        return [f"{r}/{t}" for t in self.transforms for r in self.roots]

    @property
    def calibration_children(self) -> list[str]:
        return [f"{r}/{t}" for t in self.zoo_cfg.get("calibration_transforms") or [] for r in self.calibration]

    @property
    def training_children(self) -> list[str]:
        return [f"{r}/{t}" for t in self.zoo_cfg.get("training_transforms") or [] for r in self.training]

    @property
    def models(self) -> list[str]:
        """Every model of the plan in build order: roots, calibration roots, then each transform's children."""
        return [*self.roots, *self.calibration, *self.calibration_children, *self.training, *self.training_children,
                *self.children]

    def _counts(self, transform: str) -> tuple[int, int]:
        """(positives, negatives) of one transform's cell: each child against every root; a child with a second
        parent (a cross-root merge) is a positive for both roots, and n/a where its architecture has one root."""
        from fpbench.registry import transform_class
        from fpbench.zoo.build import transform_config

        cfg = transform_config(transform)
        n = len(self.roots)
        cls = None if cfg["impl"] == "chain" else transform_class(cfg["impl"])
        if cls is None or not cls.partners or not cls.partner_is_parent:  # a teacher adds no positive
            return n, n * (n - 1)
        archs = [r.rsplit("-s", 1)[0] for r in self.roots]
        merged = [a for a in archs if archs.count(a) >= 2]
        return 2 * len(merged), len(merged) * (n - 2)

    @property
    def positives(self) -> int:
        return sum(self._counts(t)[0] for t in self.transforms)

    @property
    def negatives(self) -> int:
        return sum(self._counts(t)[1] for t in self.transforms)

    @property
    def pairs(self) -> int:
        return self.positives + self.negatives

    def describe(self) -> str:
        lines = [f"zoo {self.zoo}: {len(self.roots)} roots, {len(self.calibration)} calibration roots, "
                 f"{len(self.transforms)} transforms -> {len(self.children)} children",
                 f"  roots: {', '.join(self.roots)}",
                 f"  calibration roots (thresholds only, never scored): {', '.join(self.calibration)}",
                 f"  calibration children: {len(self.calibration_children)} "
                 f"({', '.join(self.zoo_cfg.get('calibration_transforms') or []) or 'none'})",
                 *([f"  training roots (methods learn from them; never scored or calibrated on): "
                    f"{', '.join(self.training)} + {len(self.training_children)} children "
                    f"({', '.join(self.zoo_cfg.get('training_transforms') or []) or 'none'})"] if self.training else []),
                 f"  transforms: {', '.join(self.transforms)}",
                 f"  pairs per method: {self.pairs} ({self.positives} positives, {self.negatives} negatives)"]
        return "\n".join(lines)


def root_ids(zoo_cfg: Mapping[str, Any], group: str) -> list[str]:
    return [f"{entry['arch']}-s{int(s)}" for entry in zoo_cfg.get(group, []) for s in entry["seeds"]]


def experiment_transforms(experiment: Mapping[str, Any], name: str) -> list[str]:
    """The transform list of an experiment's sweep (its ``hydra.sweeper.params.transform``)."""
    value = (((experiment.get("hydra") or {}).get("sweeper") or {}).get("params") or {}).get("transform")
    if not value:
        raise ConfigError(f"experiment '{name}' sweeps no transforms; pass transforms=[a,b,...] or another "
                          "experiment (e.g. experiment=grid)")
    return [t.strip() for t in str(value).split(",") if t.strip()]


def stage_transforms(transforms: Any, zoo_cfg: Mapping[str, Any], experiment: Mapping[str, Any],
                     experiment_name: str, experiment_given: bool) -> list[str]:
    """``transforms=`` when given, else the zoo's own ``transforms`` list (unless ``experiment=`` was given),
    else the experiment's sweep."""
    if transforms is not None:
        return as_list(transforms, "transforms")
    own = zoo_cfg.get("transforms")
    if own and not experiment_given:
        return [str(t) for t in own]
    return experiment_transforms(experiment, experiment_name)


def plan(zoo: str | Mapping[str, Any], transforms: list[str]) -> ZooPlan:
    """The plan of a zoo (a config name, or a composed zoo config) for these transforms."""
    zoo_cfg = load_option("zoo", zoo) if isinstance(zoo, str) else dict(zoo)
    for t in transforms:
        check_option("transform", t)  # an unknown transform fails here, listing the valid ones
    return ZooPlan(zoo=str(zoo_cfg["name"]), roots=root_ids(zoo_cfg, "roots"),
                   calibration=root_ids(zoo_cfg, "calibration"), transforms=list(transforms), zoo_cfg=zoo_cfg,
                   training=root_ids(zoo_cfg, "training"))


def build(zoo_plan: ZooPlan, runs_dir: Path, device: str = "auto", seed: int = 0, progress: bool = False,
          on_done: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Materialise every model of the plan, one bar step per model (``progress``); a transform that cannot
    apply to a root is reported, not fatal. ``on_done(model_id)`` is called after each model."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from fpbench.utils import configure_threads, resolve_device
    from fpbench.zoo.build import Zoo

    configure_threads()
    zoo = Zoo(zoo_plan.zoo_cfg or load_option("zoo", zoo_plan.zoo), runs_dir, resolve_device(device), seed=seed,
              progress=False)
    seconds: dict[str, float] = {}
    not_applicable: dict[str, str] = {}
    bar = tqdm(total=len(zoo_plan.models), desc=f"zoo {zoo_plan.zoo}", unit="model", disable=not progress,
               dynamic_ncols=True)

    def step(model_id: str, make: Callable[[], Any]) -> Any:
        bar.set_postfix_str(model_id, refresh=True)
        try:
            model = make()
        except NotApplicable as exc:
            not_applicable[model_id] = exc.reason
            model = None
        bar.update()  # only once it is stored (or known not to apply): Ctrl-C must not count a half-built model
        if on_done is not None:
            on_done(model_id)
        return model

    with bar, logging_redirect_tqdm():
        t0 = time.perf_counter()
        roots = [step(f"{a}-s{s}", lambda a=a, s=s: zoo.root(a, s)) for a, s in zoo.root_entries("roots")]
        calibration = [step(f"{a}-s{s}", lambda a=a, s=s: zoo.root(a, s)) for a, s in zoo.root_entries("calibration")]
        seconds["roots"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        for t in zoo.calibration_transforms():
            for root in calibration:
                step(f"{root.id}/{t}", lambda root=root, t=t: zoo.child(root, t))
        if zoo.calibration_transforms():
            seconds["calibration children"] = time.perf_counter() - t1
        if zoo.root_entries("training"):
            t1 = time.perf_counter()
            training = [step(f"{a}-s{s}", lambda a=a, s=s: zoo.root(a, s)) for a, s in zoo.root_entries("training")]
            for t in zoo.training_transforms():
                for root in training:
                    step(f"{root.id}/{t}", lambda root=root, t=t: zoo.child(root, t))
            seconds["training models"] = time.perf_counter() - t1
        for t in zoo_plan.transforms:
            t1 = time.perf_counter()
            for root in roots:
                step(f"{root.id}/{t}", lambda root=root, t=t: zoo.child(root, t))
            seconds[t] = time.perf_counter() - t1
            log.info("transform %s: %.1f s", t, seconds[t])
    return {"built": len(zoo.built), "seconds": seconds, "not_applicable": not_applicable,
            "rebuilt_corrupt": list(zoo.rebuilt_corrupt)}


@hydra.main(config_path=CONF_PATH, config_name=STAGE.config, version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with STAGE.running(cfg):
        hc = HydraConfig.get()
        experiment_name = str(hc.runtime.choices.get("experiment"))
        given = any(o.partition("=")[0].lstrip("+").split("@")[0] == "experiment" for o in hc.overrides.task)
        zoo_cfg = OmegaConf.to_container(cfg.zoo, resolve=True)
        experiment = OmegaConf.to_container(cfg.experiment, resolve=True)
        assert isinstance(zoo_cfg, dict) and isinstance(experiment, dict)
        transforms = stage_transforms(cfg.transforms, zoo_cfg, experiment, experiment_name, given)
        zoo_plan = plan(zoo_cfg, transforms)
        print(zoo_plan.describe(), flush=True)
        if cfg.dry_run:
            print("dry run: nothing was built", flush=True)
            return
        STAGE.total = len(zoo_plan.models)
        result = build(zoo_plan, Path(cfg.runs_dir), str(cfg.device), int(cfg.seed), progress=bool(cfg.progress),
                       on_done=STAGE.done)
        for child, reason in sorted(result["not_applicable"].items()):
            print(f"  n/a {child}: {reason}")
        total = sum(result["seconds"].values())
        print(f"zoo {zoo_plan.zoo} ready under {cfg.runs_dir}/cache/zoo: {result['built']} artefacts built "
              f"in {total:.0f} s ({len(result['not_applicable'])} not applicable)", flush=True)


def cli(argv: list[str] | None = None) -> None:
    STAGE.launch(main, argv)


if __name__ == "__main__":
    cli()
