"""What the transfer comparison needs from a track (vision, language): a base, tasks, training, a fingerprint check.

A track owns its data, its fingerprint (the secret triggers and what they must produce) and its training;
``fpbench.transfer.evaluate`` runs the same comparison over any track. ``ModelCache`` keeps every trained
model of a track in the content-addressed store, with the training seconds measured when it was built.
"""

from __future__ import annotations

import abc
import copy
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fpbench.utils import library_versions, stable_hash
from fpbench.zoo.store import ArtefactStore


class Track(abc.ABC):
    name: ClassVar[str]
    quality_metric: ClassVar[str]  # "accuracy" (higher is better) | "perplexity" (lower is better)

    def __init__(self, cfg: dict[str, Any], runs_dir: Path, device: torch.device, seed: int, progress: bool) -> None:
        self.cfg = cfg
        self.runs_dir = Path(runs_dir)
        self.device = device
        self.seed = seed
        self.progress = progress

    # identities ------------------------------------------------------------------------------------------
    base_id: str  # the base model's id (a zoo vertex for the vision track)
    zoo: str  # the zoo (or corpus family) the base belongs to, recorded with every row and lineage edge

    @abc.abstractmethod
    def base_key(self) -> dict[str, Any]:
        """Everything that determines the base model (its cache key)."""

    def fingerprint_key(self) -> dict[str, Any]:
        return {"fingerprint": self.cfg["fingerprint"], "inject": self.cfg["inject"]}

    def task_key(self, task: str) -> dict[str, Any]:
        return {"task": self.task_cfg(task), "finetune": self.cfg["finetune"]}

    # models and data -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def base(self) -> nn.Module:
        """The trained base model (built once, cached)."""

    @abc.abstractmethod
    def new_model(self) -> nn.Module:
        """A freshly initialised module of the base's structure (to load stored weights into)."""

    def tasks(self) -> list[str]:
        return [str(d["id"]) for d in self.cfg["downstream"]]

    def task_cfg(self, task: str) -> dict[str, Any]:
        for d in self.cfg["downstream"]:
            if str(d["id"]) == task:
                return dict(d)
        raise KeyError(task)

    # training --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def finetune(self, model: nn.Module, task: str, steps: int, seed: int) -> None:
        """Fine-tune ``model`` in place on ``task``'s training data."""

    @abc.abstractmethod
    def inject(self, model: nn.Module, task: str | None, seed: int) -> None:
        """Train the fingerprint into ``model`` in place, mixed with clean data of ``task`` (None: the base's data)."""

    # measurements ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def fsr(self, model: nn.Module) -> float:
        """Fingerprint success rate: the share of secret triggers that give exactly the owner's chosen output."""

    def false_trigger_rate(self, model: nn.Module) -> float:
        """Share of never-trained decoy inputs of the triggers' form that give the fingerprint output (nan: n/a)."""
        return float("nan")

    def chance_rate(self) -> float:
        """Per-trigger rate at which a model that never saw the fingerprint answers as the owner chose (nan: none)."""
        return float("nan")

    @abc.abstractmethod
    def quality(self, model: nn.Module, task: str | None) -> float:
        """Task quality on ``task``'s clean held-out data (None: the base's own task)."""

    @abc.abstractmethod
    def attack_layers(self, model: nn.Module) -> list[str]:
        """Names of the layers pruning and quantization act on."""

    @property
    def n_triggers(self) -> int:
        return int(self.cfg["fingerprint"]["triggers"])

    @cached_property
    def cache(self) -> ModelCache:
        return ModelCache(self)


class ModelCache:
    """Trained models of one track in the artefact store, keyed by what made them; seconds kept from the build."""

    def __init__(self, track: Track) -> None:
        self.track = track
        self.store = ArtefactStore(track.runs_dir / "cache" / "transfer")

    def get(self, key: dict[str, Any], model_id: str, build: Callable[[], nn.Module]) -> tuple[nn.Module, float]:
        """``(model, training seconds)``: loaded, or built by ``build`` (timed) and stored."""

        def make() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            start = time.perf_counter()
            model = build()
            seconds = time.perf_counter() - start
            meta = {"id": model_id, "track": self.track.name, "seconds": seconds, "recipe": key,
                    "versions": library_versions()}
            return meta, model.state_dict()

        meta, tensors, _ = self.store.get_or_build(stable_hash({"transfer": self.track.name, **key}), make)
        model = self.track.new_model()
        model.load_state_dict(tensors)
        return model.to(self.track.device).eval(), float(meta["seconds"])


def trained(model: nn.Module, step: Callable[[nn.Module], None]) -> Callable[[], nn.Module]:
    """A build function: a copy of ``model`` changed in place by ``step`` (the original stays untouched)."""

    def build() -> nn.Module:
        out = copy.deepcopy(model)
        step(out)
        return out

    return build
