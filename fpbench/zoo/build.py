"""Build or load the zoo of one tier: roots (parents and independents alike), calibration roots, children.

Every root is an owner: each gets its own children, and a child is a positive for its own root and
a negative for every other root. Calibration roots are extra independents used only to calibrate
thresholds; they are never scored in a cell. Keys hash everything that determines an artefact:
    root  = (arch, data id, training config, seed)
    child = (parent key, transform impl + version, resolved params, seed, data id)
so a chain's steps share prefixes with the single transforms they repeat. "Resolved" params are the
transform's parameter dataclass filled from its config: a default changed in code changes the key of exactly
the children whose config does not set that parameter.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult
from fpbench.config import load_option
from fpbench.data import DataBundle, load_bundle
from fpbench.models import build_module, count_parameters
from fpbench.registry import transform_class
from fpbench.sanity import check_child
from fpbench.subject import ModelSubject
from fpbench.train import TrainConfig, accuracy, train
from fpbench.utils import library_versions, module_digest, seed_everything, stable_hash
from fpbench.zoo.effects import EFFECT_KEYS, weight_effects
from fpbench.zoo.store import ArtefactStore, CorruptArtefact

log = logging.getLogger(__name__)
ROOT_VERSION = "1"


@dataclass
class ZooModel:
    """One model of the zoo: where it came from and where it is stored."""

    id: str
    key: str
    spec: ModelSpec
    meta: dict[str, Any]
    root_id: str
    arch: str
    parent_id: str | None = None
    transform: str | None = None  # config name of the transform that made it (None for roots)
    lineage: list[str] = field(default_factory=list)  # ids from the root down to this model
    partner_id: str | None = None  # the second parent of a cross-root merge (another root)
    extra_roots: tuple[str, ...] = ()  # roots it derives from besides root_id (through a second parent)

    @property
    def root_ids(self) -> tuple[str, ...]:
        """Every root this model derives from: a positive for each of their owners."""
        return (self.root_id, *self.extra_roots)

    @property
    def accuracy(self) -> float:
        return float(self.meta.get("info", {}).get("accuracy", float("nan")))


def derive_seed(*parts: Any) -> int:
    return int(stable_hash(list(parts), 8), 16) % (2**31)


def transform_config(name_or_cfg: str | dict[str, Any]) -> dict[str, Any]:
    """A transform config dict (``name``, ``impl``, ``params``) from a config name or an inline dict."""
    cfg = load_option("transform", name_or_cfg) if isinstance(name_or_cfg, str) else dict(name_or_cfg)
    cfg.setdefault("params", {})
    cfg.setdefault("impl", cfg.get("name"))
    return cfg


def resolved_transform(name_or_cfg: str | dict[str, Any]) -> dict[str, Any]:
    """A transform config with chain steps expanded, its parameters resolved (code defaults filled in,
    validated) and each implementation's version, for cache keys: a chain's cell must re-run when one of its
    steps changes, not only when the chain's own YAML does, and any cell when a default it relies on changes."""
    cfg = {k: v for k, v in transform_config(name_or_cfg).items() if k != "tags"}  # tags describe, not change
    if cfg["impl"] == "chain":
        return {**cfg, "steps": [resolved_transform(step) for step in cfg["params"].get("steps") or []]}
    cls = transform_class(cfg["impl"])
    return {**cfg, "params": cls.resolve_params(cfg["params"], cfg["name"]), "v": cls.version}


def make_transform(cfg: dict[str, Any]) -> Transform:
    """The transform of a (non-chain) transform config, its parameters validated, named by the config."""
    return transform_class(cfg["impl"])(cfg["params"], name=cfg["name"])


class Zoo:
    def __init__(self, zoo_cfg: dict[str, Any], runs_dir: Path | str, device: torch.device, seed: int = 0,
                 progress: bool = True) -> None:
        self.cfg = zoo_cfg
        self.name = zoo_cfg["name"]
        self.device = device
        self.seed = seed
        self.progress = progress
        self.store = ArtefactStore(Path(runs_dir) / "cache" / "zoo")
        self.data: DataBundle = load_bundle(zoo_cfg["data"])
        self._models: dict[str, ZooModel] = {}
        self.built: list[str] = []  # keys built in this process (for benchmarks and logs)
        self.rebuilt_corrupt: list[str] = []

    # ---------------------------------------------------------------- roots
    def root_entries(self, group: str = "roots") -> list[tuple[str, int]]:
        return [(entry["arch"], int(s)) for entry in self.cfg.get(group, []) for s in entry["seeds"]]

    def root_spec(self, arch: str) -> ModelSpec:
        archs = self.cfg["archs"]
        if arch not in archs:
            from fpbench.api import ConfigError

            raise ConfigError(f"zoo.{self.name}: unknown arch '{arch}'; archs: {', '.join(archs)}")
        return ModelSpec(
            arch=dict(archs[arch]), num_classes=self.data.num_classes, class_names=list(self.data.class_names),
            input=self.data.input_spec(), data_id=self.data.id, modality=self.data.modality,
        )

    def root(self, arch: str, seed: int) -> ZooModel:
        rid = f"{arch}-s{seed}"
        if rid in self._models:
            return self._models[rid]
        spec = self.root_spec(arch)
        train_cfg = dict(self.cfg["train"], **self.cfg["archs"][arch].get("train", {}))
        key = stable_hash({"kind": "root", "v": ROOT_VERSION, "arch": spec.arch, "data": self.data.id,
                           "train": train_cfg, "seed": seed})

        def build() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            seed_everything(seed)
            model = build_module(spec)
            stats = train(model, self.data.split("train_a"), TrainConfig(**train_cfg), seed=seed,
                          device=self.device, desc=f"train {rid}", progress=self.progress)
            info = {"accuracy": accuracy(model, self.data.split("test"), self.device), "params": count_parameters(model),
                    "weights_digest": module_digest(model), **stats}
            log.info("built root %s: accuracy %.3f", rid, info["accuracy"])
            return self._meta(rid, spec, info, recipe={"kind": "root", "arch": arch, "seed": seed}), model.state_dict()

        meta = self._get(key, build)
        zm = ZooModel(id=rid, key=key, spec=spec, meta=meta, root_id=rid, arch=arch, lineage=[rid])
        self._models[rid] = zm
        return zm

    def roots(self) -> list[ZooModel]:
        roots = [self.root(a, s) for a, s in self.root_entries("roots")]
        self._check_distinct(roots)
        return roots

    def calibration_roots(self) -> list[ZooModel]:
        calibration = [self.root(a, s) for a, s in self.root_entries("calibration")]
        self._check_distinct([*self.roots(), *calibration])
        return calibration

    def training_roots(self) -> list[ZooModel]:
        """Roots of ``zoo.training``: models a method may learn from (LLMmap's inference model), never scored and
        never calibrated on, so what a method learnt there is not what it is measured or thresholded on."""
        training = [self.root(a, s) for a, s in self.root_entries("training")]
        if training:
            self._check_distinct([*self.roots(), *self.calibration_roots(), *training])
        return training

    def _check_distinct(self, roots: list[ZooModel]) -> None:
        """Refuse two roots with the same weights: they would be scored as independent negatives of each other (two
        architectures that build the same network, initialised and trained alike under one seed)."""
        seen: dict[str, str] = {}
        for r in roots:
            digest = r.meta.get("info", {}).get("weights_digest")  # roots stored before it was recorded: unchecked
            if digest and digest in seen:
                from fpbench.api import ConfigError

                raise ConfigError(f"zoo.{self.name}: roots {seen[digest]} and {r.id} have identical weights, so they "
                                  "are one model, not independents; give their architectures different sizes or the "
                                  "roots different seeds")
            if digest:
                seen[digest] = r.id

    def calibration_transforms(self) -> list[str]:
        """Transforms applied to each calibration root: someone else's derived model is the realistic negative,
        and the children multiply the held-out negatives a threshold is calibrated on."""
        return [str(t) for t in self.cfg.get("calibration_transforms") or []]

    def partner_root(self, model: ZooModel, other_arch: bool = False) -> ZooModel:
        """The second model of a two-model transform of ``model``: the next root, in config order and cyclic, of
        the group (scored roots or calibration roots) ``model``'s root belongs to -- of the same architecture (a
        cross-root merge) or, with ``other_arch``, of another one (a teacher of another family)."""
        for group in ("roots", "calibration", "training"):
            entries = self.root_entries(group)
            ids = [f"{a}-s{s}" for a, s in entries]
            if model.root_id not in ids:
                continue
            i = ids.index(model.root_id)
            later = [e for e in entries[i + 1 :] + entries[:i] if (e[0] != model.arch) == other_arch]
            if not later:
                kind = "a root of another architecture" if other_arch else f"a second {model.arch} root"
                raise NotApplicable(f"this transform needs {kind}; the zoo's {group} hold none for {model.root_id}")
            return self.root(*later[0])
        raise NotApplicable(f"{model.root_id} is not a root of zoo {self.name}: no partner root")

    def training_transforms(self) -> list[str]:
        """Transforms applied to each training root (``zoo.training_transforms``)."""
        return [str(t) for t in self.cfg.get("training_transforms") or []]

    def calibration_models(self) -> list[ZooModel]:
        """Calibration roots and their children (a transform that cannot apply to a root is skipped)."""
        return self._with_children(self.calibration_roots(), self.calibration_transforms(), "calibration")

    def training_models(self) -> list[ZooModel]:
        """Training roots and their children: the pool a method that learns from other models trains on."""
        return self._with_children(self.training_roots(), self.training_transforms(), "training")

    def _with_children(self, roots: list[ZooModel], transforms: list[str], group: str) -> list[ZooModel]:
        out: list[ZooModel] = []
        for root in roots:
            out.append(root)
            for t in transforms:
                try:
                    out.append(self.child(root, t))
                except NotApplicable as exc:
                    log.info("%s child %s/%s skipped: %s", group, root.id, t, exc.reason)
        return out

    # ---------------------------------------------------------------- children
    def transform_config(self, tcfg: dict[str, Any] | str) -> dict[str, Any]:
        """A transform config with this zoo's settings for it over its own: ``zoo.transform_defaults`` fill the
        parameters a transform has and its config leaves unset (a language zoo trains every child with AdamW at
        its own learning rate), then ``zoo.transform_params.<name>`` set that transform's parameters."""
        cfg = transform_config(tcfg)
        if cfg["impl"] == "chain":
            return cfg  # each step gets the zoo's settings when it is built
        fields = {f.name for f in dataclasses.fields(transform_class(cfg["impl"]).Params)}
        defaults = {k: v for k, v in (self.cfg.get("transform_defaults") or {}).items()
                    if k in fields and k not in cfg["params"]}
        own = dict((self.cfg.get("transform_params") or {}).get(cfg["name"]) or {})
        return {**cfg, "params": {**cfg["params"], **defaults, **own}} if defaults or own else cfg

    def child(self, parent: ZooModel, tcfg: dict[str, Any] | str) -> ZooModel:
        """``T(parent)`` for a transform config (a chain applies its steps in order, each stored)."""
        tcfg = self.transform_config(tcfg)
        if tcfg["impl"] == "chain":
            steps = tcfg["params"].get("steps") or []
            if not steps:
                from fpbench.api import ConfigError

                raise ConfigError(f"transform '{tcfg['name']}': params.steps is empty; give at least one step")
            node = parent
            for step in steps:
                node = self.child(node, step)
            return self._alias(node, tcfg["name"], parent)
        cid = f"{parent.id}/{tcfg['name']}"
        if cid in self._models:
            return self._models[cid]
        transform = make_transform(tcfg)
        partner = self.partner_root(parent, transform.partner_arch == "other") if transform.partners else None
        ancestor = partner if partner and transform.partner_is_parent else None  # a teacher is no ancestor
        seed = derive_seed(self.seed, parent.root_id, tcfg["name"])
        key = stable_hash({"kind": "child", "parent": parent.key, "impl": tcfg["impl"], "v": transform.version,
                           "params": transform.params, "seed": seed, "data": self.data.id,
                           **({"partner": partner.key} if partner else {})})
        cheap = transform.cheap

        def build() -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
            result = self.apply(transform, parent, seed, partner)
            # A child that breaks its task (non-finite weights or outputs) is refused, never stored or scored.
            probe = self.data.split("test").tensor(slice(0, 16), self.device)
            check_child(result.model.to(self.device), tcfg["name"], tcfg["params"], probe)
            info = dict(result.info)
            if partner and not ancestor:
                info["teacher"] = partner.id  # recorded, not a parent: the child is no positive for its root
            info.setdefault("accuracy", accuracy(result.model, self.data.split("test"), self.device))
            info["parent_accuracy"] = parent.accuracy
            info.update(self._effects(result.model, result.spec, parent))
            recipe = {"kind": "child", "parent_key": parent.key, "transform": tcfg, "seed": seed, "cheap": cheap,
                      **({"partner_key": partner.key} if partner else {})}
            meta = self._meta(cid, result.spec, info, recipe=recipe)
            return meta, (None if cheap else result.model.state_dict())

        meta = self._get(key, build)
        spec = ModelSpec.from_dict(meta["spec"])
        # A transform that changes the architecture (a distilled student) names the new arch key in its info.
        zm = ZooModel(id=cid, key=key, spec=spec, meta=meta, root_id=parent.root_id,
                      arch=str(meta["info"].get("arch") or parent.arch),
                      parent_id=parent.id, transform=tcfg["name"], lineage=[*parent.lineage, cid],
                      partner_id=ancestor.id if ancestor else None,
                      extra_roots=tuple(dict.fromkeys(r for r in [*parent.extra_roots, *(ancestor.root_ids if ancestor
                                                                  else ())] if r != parent.root_id)))
        if any(k not in meta["info"] for k in EFFECT_KEYS):  # stored before effects were recorded: measure now
            zm.meta = {**meta, "info": {**meta["info"], **self._effects(self.load_module(zm), spec, parent)}}
        self._models[cid] = zm
        return zm

    def _alias(self, node: ZooModel, name: str, root: ZooModel) -> ZooModel:
        """A chain's result under the chain's own name (same artefact as its last step).

        Its info measures the whole chain's effect: accuracy and weight change against the chain's root."""
        cid = f"{root.id}/{name}"
        if cid in self._models:
            return self._models[cid]
        info = {**node.meta.get("info", {}), "parent_accuracy": root.accuracy,
                **self._effects(self.load_module(node), node.spec, root)}
        zm = ZooModel(id=cid, key=node.key, spec=node.spec, meta={**node.meta, "info": info}, root_id=node.root_id,
                      arch=node.arch, parent_id=node.parent_id, transform=name, lineage=node.lineage,
                      partner_id=node.partner_id, extra_roots=node.extra_roots)
        self._models[cid] = zm
        return zm

    def _effects(self, model: nn.Module, spec: ModelSpec, base: ZooModel) -> dict[str, float]:
        """Sparsity of ``model`` and its relative weight change from ``base`` (for the transform-effects table)."""
        return weight_effects(model, self.load_module(base), same_arch=spec.arch == base.spec.arch)

    def apply(self, transform: Transform, parent: ZooModel, seed: int,
              partner: ZooModel | None = None) -> TransformResult:
        """``transform`` applied to ``parent`` with ``seed`` (and its second parent), as a child is built."""
        if parent.spec.modality not in transform.modalities:
            raise NotApplicable(f"transform '{transform.name}' makes children of {' or '.join(transform.modalities)} "
                                f"models; {parent.id} is a {parent.spec.modality} model")
        model = self.load_module(parent)
        transform.check(parent.spec, model)
        seed_everything(seed)
        ctx = TransformContext(data=self.data, device=self.device, seed=seed, progress=self.progress,
                               archs=dict(self.cfg.get("archs", {})),
                               partner=self.load_module(partner) if partner else None)
        return transform.apply(model, parent.spec, ctx)

    # ---------------------------------------------------------------- loading
    def load_module(self, zm: ZooModel) -> nn.Module:
        meta, tensors = self.store.load(zm.key)
        recipe = meta["recipe"]
        if tensors is None:  # a cheap child stored as its recipe: re-apply it to the parent
            parent = self._by_key(recipe["parent_key"])
            transform = make_transform(recipe["transform"])
            partner = self._by_key(recipe["partner_key"]) if recipe.get("partner_key") else None
            return self.apply(transform, parent, recipe["seed"], partner).model.to(self.device).eval()
        model = build_module(ModelSpec.from_dict(meta["spec"]))
        model.load_state_dict(tensors, strict=True)
        return model.to(self.device).eval()

    def _by_key(self, key: str) -> ZooModel:
        for zm in self._models.values():
            if zm.key == key:
                return zm
        raise KeyError(f"zoo model with key {key} is not loaded in this zoo")

    def subject(self, zm: ZooModel) -> ModelSubject:
        return ModelSubject(zm.id, self.load_module(zm), zm.spec, self.device)

    def models(self) -> list[ZooModel]:
        return list(self._models.values())

    # ---------------------------------------------------------------- helpers
    def _meta(self, mid: str, spec: ModelSpec, info: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
        return {"id": mid, "zoo": self.name, "spec": spec.to_dict(), "info": info, "recipe": recipe,
                "versions": library_versions()}

    def _get(self, key: str, build: Any) -> dict[str, Any]:
        def corrupt(k: str, exc: CorruptArtefact) -> None:
            log.warning("%s; rebuilding", exc)
            self.rebuilt_corrupt.append(k)

        meta, _, built = self.store.get_or_build(key, build, on_corrupt=corrupt)
        if built:
            self.built.append(key)
        return meta
