"""The null distribution of a user's task: scores an owner's fingerprint gives to models that do NOT derive
from it, on the owner's own data (``verify negatives=DIR`` or ``verify calibrate=K``).

Negatives come from the user (independent models of the same task they have), or are trained here:
``calibrate=K`` trains K models of the owner's architecture from scratch on the owner's data
(``train_a`` split), each with its own seed, within a stated step budget; they are cached in the checksummed
artefact store like zoo models, keyed by architecture, data and recipe, so a second verification of the same
task trains nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fpbench.api import ModelSpec
from fpbench.data import DataBundle
from fpbench.errors import require
from fpbench.evaluate import Candidate
from fpbench.models import build_module
from fpbench.train import TrainConfig, accuracy, train
from fpbench.utils import seed_everything, stable_hash
from fpbench.zoo.store import ArtefactStore

log = logging.getLogger("fpbench.nulls")
NULL_VERSION = "1"
SEED_BASE = 10_000  # calibration models' seeds: far from any seed a user or the zoo would pick


@dataclass(frozen=True)
class CalibrationRecipe:
    """How calibration models are trained: ``models`` independents, each ``steps`` steps of ``optimizer``.

    The null is only as good as its likeness to real independents: models trained much shorter or otherwise than
    the owner sit further from it than an independent trained like it would (measured: 20 models of 60 SGD steps
    put the cmf and sac scores of an independent trained like the owner, with Adam for 150 steps, above every
    calibration model). Train them the way the owner was trained, or give real independents (``negatives=``)."""

    models: int
    steps: int = 300
    lr: float = 0.05
    batch_size: int = 128
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        require(self.models >= 1, "calibrate", f"must be the number of models to train (>= 1), got {self.models}")
        require(1 <= self.steps <= 100_000, "calibrate_steps", f"must be in [1, 100000], got {self.steps}")
        require(self.lr > 0, "calibrate_lr", f"must be > 0, got {self.lr}")
        require(self.batch_size > 0, "calibrate_batch", f"must be > 0, got {self.batch_size}")
        require(self.optimizer in ("sgd", "adamw"), "calibrate_optimizer",
                f"must be sgd or adamw, got {self.optimizer!r}")

    def budget(self) -> str:
        return (f"{self.models} models x {self.steps} {self.optimizer} steps of batch {self.batch_size}, "
                f"lr {self.lr:g}")


def trained_independents(spec: ModelSpec, data: DataBundle, recipe: CalibrationRecipe, store_dir: Path,
                         device: torch.device, progress: bool = True) -> list[Candidate]:
    """``recipe.models`` independents of ``spec``'s architecture trained on ``data``'s ``train_a`` (cached)."""
    store = ArtefactStore(store_dir)
    out = []
    bar = tqdm(range(recipe.models), desc=f"calibration models ({recipe.budget()})", disable=not progress,
               unit="model")
    for i in bar:
        seed = SEED_BASE + i
        cfg = TrainConfig(steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size, optimizer=recipe.optimizer)
        key = stable_hash({"kind": "null", "v": NULL_VERSION, "arch": spec.arch, "input": spec.input,
                           "classes": spec.num_classes, "data": data.id, "train": cfg.__dict__, "seed": seed})

        def build(seed: int = seed, cfg: TrainConfig = cfg) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            seed_everything(seed)
            model = build_module(spec)
            train(model, data.split("train_a"), cfg, seed=seed, device=device, desc=f"calibration model {seed}",
                  progress=False)
            acc = accuracy(model, data.split("test"), device)
            return {"accuracy": acc, "seed": seed, "spec": spec.to_dict()}, model.state_dict()

        meta, _, _ = store.get_or_build(key, build, on_corrupt=lambda k, e: log.warning("%s; retraining", e))
        out.append(Candidate(id=f"calibration-{seed}", key=f"null:{key}", spec=spec, load=_loader(store, key, spec),
                             arch=str(spec.arch.get("name", "")), stored_accuracy=float(meta["accuracy"])))
    return out


def _loader(store: ArtefactStore, key: str, spec: ModelSpec) -> Any:
    def load() -> torch.nn.Module:
        _, tensors = store.load(key)
        model = build_module(spec)
        model.load_state_dict(tensors, strict=True)
        return model.eval()
    return load
