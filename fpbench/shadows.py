"""Shadow models a defender builds from its own model and data, for methods that meta-train fingerprints.

Ground floor, shared by MetaFinger (pirated and independent shadows) and CAE (distilled surrogates and
reference models). Everything here uses only the owner's module, its :class:`ModelSpec` and the owner's own
training data: never the zoo's independents or children.

- ``independent_shadow``: the owner's architecture trained from scratch on the owner's data with true labels
  and a shadow seed (an "independent" for MetaFinger, a "reference model" for CAE).
- ``distilled_shadow``: the same, trained on the owner's softmax outputs (a CAE "surrogate": it behaves like a
  model derived from the owner by extraction).
- ``pirated_shadow``: a copy of the owner modified the way a thief would: fine-tuned, magnitude-pruned, or
  with Gaussian noise on its weights (MetaFinger's model augmentation).

Shadow leakage: a shadow made by the same operation as a grid transform teaches the method that transform.
Each shadow kind belongs to the transform family it imitates (``SHADOW_FAMILY``); a method declares the families
its shadows saw (``shadow_families()``) and a cell whose transform is of such a family (``transform_families``)
is marked as seen in training. Families are transform ``impl`` names, with ``prune`` split into
``prune_structured`` / ``prune_unstructured`` and a chain the union of its steps' families.

Trained shadows are cached in a method's scratch dir through the zoo's checksummed, locked
:class:`~fpbench.zoo.store.ArtefactStore`, keyed by everything that determines them (the owner's weights for
owner-derived ones), so a second owner of the same architecture reuses independents.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import ConfigError, ModelSpec
from fpbench.data import ImageSet
from fpbench.models import build_module
from fpbench.train import LossFn, TrainConfig, TrainingDiverged, cross_entropy_loss, train
from fpbench.utils import module_digest, seed_everything, stable_hash
from fpbench.zoo.store import ArtefactStore

log = logging.getLogger(__name__)
SHADOW_VERSION = "1"
PIRATE_KINDS = ("finetune", "prune", "noise")

# The transform family each kind of owner-derived shadow imitates (independent shadows imitate none: they are
# trained from scratch, as the zoo's independents). ``noise`` is the first step of the grid's ``removal``;
# ``prune`` (30% magnitude, unstructured) is ``prune30_unstructured``; a distilled surrogate is ``distill``.
SHADOW_FAMILY: dict[str, str] = {
    "finetune": "finetune",
    "prune": "prune_unstructured",
    "noise": "removal",
    "distill": "distill",
}


def shadow_families(kinds: Iterable[str]) -> frozenset[str]:
    """The transform families shadows of these kinds were made with (unknown kinds are an error)."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in SHADOW_FAMILY]
    if unknown:
        raise ConfigError(f"unknown shadow kind '{unknown[0]}'; valid kinds: {', '.join(SHADOW_FAMILY)}")
    return frozenset(SHADOW_FAMILY[k] for k in kinds)


def transform_families(cfg: Mapping[str, Any], resolve: Callable[[str], Mapping[str, Any]] | None = None
                       ) -> frozenset[str]:
    """The families of a transform config (``name``, ``impl``, ``params``): its ``impl``, ``prune`` split by
    ``params.structured`` (default structured), a chain the union of its steps' families. ``resolve`` turns a
    chain step given by name into its config (default: ``conf/transform/<name>.yaml``)."""
    impl = str(cfg.get("impl") or cfg.get("name"))
    params = cfg.get("params") or {}
    if impl == "chain":
        if resolve is None:
            from fpbench.config import load_option

            def resolve(name: str) -> Mapping[str, Any]:
                return load_option("transform", name)

        steps = params.get("steps") or cfg.get("steps") or []
        out: frozenset[str] = frozenset()
        for step in steps:
            out |= transform_families(resolve(step) if isinstance(step, str) else step, resolve)
        return out
    if impl in ("merge", "merge_cross"):  # fine-tuned: the merge's two children, the cross merge's recovery
        return frozenset({"merge", "finetune"})
    if impl == "prune":
        return frozenset({"prune_structured" if params.get("structured", True) else "prune_unstructured"})
    return frozenset({impl})


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients: shadows are only differentiated with respect to their inputs."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _cached(cache_dir: Path | None, key: dict[str, Any], spec: ModelSpec, build: Callable[[], nn.Module],
            device: torch.device) -> nn.Module:
    """``build()`` once per key; later calls load the stored state dict into a fresh module of ``spec``.

    Shadows live in the zoo's kind of store (``<cache_dir>/shadows``): written atomically under a file lock, so
    concurrent workers train each shadow once, and checksummed, so a damaged shadow is retrained, not trusted."""
    if cache_dir is None:
        return build()
    box: dict[str, nn.Module] = {}

    def build_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        box["model"] = build()
        return {"shadow": key}, box["model"].state_dict()

    store = ArtefactStore(Path(cache_dir) / "shadows")
    _, tensors, _ = store.get_or_build(stable_hash({"v": SHADOW_VERSION, **key}), build_state,
                                       on_corrupt=lambda k, e: log.warning("%s; retraining the shadow", e))
    if "model" in box:
        return box["model"]
    model = build_module(spec)
    model.load_state_dict(tensors or {}, strict=True)
    return model.to(device).eval()


def _train_config(spec: ModelSpec, steps: int, batch_size: int) -> TrainConfig:
    # The architecture's own learning rate where the zoo config gives one (e.g. EfficientNet trains at 0.1).
    lr = float(spec.arch.get("train", {}).get("lr", 0.05))
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr)


def _train_from_scratch(spec: ModelSpec, data: ImageSet, cfg: TrainConfig, seed: int, device: torch.device,
                        desc: str, progress: bool, loss_fn: LossFn = cross_entropy_loss, retries: int = 2) -> nn.Module:
    """A fresh seeded model of ``spec`` trained on ``data``; when training diverges (an unlucky seed of a
    BatchNorm-free net at the zoo's learning rate does), retrained from the same seed at half the rate, as a
    defender would, up to ``retries`` times. Deterministic, so the cached shadow is the same on every machine."""
    lr = cfg.lr
    for attempt in range(retries + 1):
        seed_everything(seed)
        model = build_module(spec)
        try:
            train(model, data, dataclasses.replace(cfg, lr=lr), seed=seed, device=device, loss_fn=loss_fn,
                  desc=desc, progress=progress)
            return model
        except TrainingDiverged:
            if attempt == retries:
                raise TrainingDiverged(f"{desc}: training diverged at lr {cfg.lr} and at {retries} halvings of it; "
                                       "lower the architecture's learning rate (zoo config archs.<arch>.train.lr)") from None
            lr /= 2
            log.warning("%s diverged; retrained from the same seed at lr %g", desc, lr)
    raise AssertionError("unreachable")


def _spec_key(spec: ModelSpec) -> dict[str, Any]:
    return {"arch": spec.arch, "classes": spec.num_classes, "input": spec.input, "data": spec.data_id,
            "wrappers": spec.wrappers}


def independent_shadow(spec: ModelSpec, data: ImageSet, *, steps: int, seed: int, device: torch.device,
                       batch_size: int = 128, cache_dir: Path | None = None, progress: bool = False) -> nn.Module:
    """``spec``'s architecture trained from scratch on ``data`` with its true labels (seeded init and order)."""
    def build() -> nn.Module:
        return _train_from_scratch(spec, data, _train_config(spec, steps, batch_size), seed, device,
                                   f"independent shadow s{seed}", progress)

    key = {"kind": "independent", **_spec_key(spec), "n": len(data), "steps": steps, "bs": batch_size, "seed": seed}
    return _cached(cache_dir, key, spec, build, device)


def distilled_shadow(teacher: nn.Module, spec: ModelSpec, data: ImageSet, *, steps: int, seed: int,
                     device: torch.device, temperature: float = 1.0, batch_size: int = 128,
                     cache_dir: Path | None = None, progress: bool = False) -> nn.Module:
    """A fresh model of ``spec`` trained to match ``teacher``'s softmax outputs on ``data`` (labels unused)."""
    teacher = teacher.to(device).eval()

    def kd_loss(model: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = F.softmax(teacher(x) / temperature, dim=1)
        return F.kl_div(F.log_softmax(model(x) / temperature, dim=1), target, reduction="batchmean")

    def build() -> nn.Module:
        return _train_from_scratch(spec, data, _train_config(spec, steps, batch_size), seed, device,
                                   f"distilled shadow s{seed}", progress, loss_fn=kd_loss)

    key = {"kind": "distilled", "teacher": module_digest(teacher), **_spec_key(spec), "n": len(data),
           "steps": steps, "bs": batch_size, "seed": seed, "T": temperature}
    return _cached(cache_dir, key, spec, build, device)


@torch.no_grad()
def magnitude_prune_(model: nn.Module, fraction: float) -> nn.Module:
    """Zero the ``fraction`` smallest-magnitude weights of every conv and linear layer, in place."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            k = int(fraction * w.numel())
            if k > 0:
                cut = w.abs().flatten().kthvalue(k).values
                w.masked_fill_(w.abs() <= cut, 0.0)
    return model


@torch.no_grad()
def weight_noise_(model: nn.Module, scale: float, generator: torch.Generator) -> nn.Module:
    """Add Gaussian noise of ``scale`` x each layer's weight std to every conv and linear weight, in place."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            noise = torch.randn(w.shape, generator=generator).to(w.device)
            w.add_(noise * (scale * float(w.std())))
    return model


def pirated_shadow(owner: nn.Module, spec: ModelSpec, kind: str, *, seed: int, device: torch.device,
                   data: ImageSet | None = None, steps: int = 50, lr: float = 0.01, prune_fraction: float = 0.3,
                   noise_scale: float = 0.1, batch_size: int = 128, cache_dir: Path | None = None,
                   progress: bool = False) -> nn.Module:
    """A copy of ``owner`` modified as a thief would: ``finetune`` (a few SGD steps on ``data``), ``prune``
    (magnitude pruning of ``prune_fraction``) or ``noise`` (Gaussian weight noise). The owner is not touched."""
    if kind not in PIRATE_KINDS:
        raise ConfigError(f"unknown pirated shadow kind '{kind}'; valid kinds: {', '.join(PIRATE_KINDS)}")
    if kind == "prune":
        return magnitude_prune_(copy.deepcopy(owner).to(device), prune_fraction).eval()
    if kind == "noise":
        return weight_noise_(copy.deepcopy(owner).to(device), noise_scale, torch.Generator().manual_seed(seed)).eval()
    if data is None:
        raise ConfigError("pirated_shadow(kind='finetune') needs the owner's data")

    def build() -> nn.Module:
        seed_everything(seed)
        model = copy.deepcopy(owner)
        train(model, data, TrainConfig(steps=steps, batch_size=batch_size, lr=lr), seed=seed, device=device,
              desc=f"fine-tuned shadow s{seed}", progress=progress)
        return model

    key = {"kind": "finetune", "owner": module_digest(owner), **_spec_key(spec), "n": len(data), "steps": steps,
           "lr": lr, "bs": batch_size, "seed": seed}
    return _cached(cache_dir, key, spec, build, device)


def shadow_seeds(base: int, tag: str, n: int) -> list[int]:
    """``n`` seeds for shadows, derived from the method's seed and a tag, far from the zoo's small root seeds."""
    return [1_000_003 + int(stable_hash([base, tag, i], 8), 16) % (2**30) for i in range(n)]
