"""Vision track: a zoo root as the base, a trigger-set fingerprint, downstream classifiers on other data or tasks.

The fingerprint is a trigger set (backdoor-style watermark, Adi et al. 2018): images of uniform noise drawn
from a secret seed, each with an owner-chosen label drawn from the same seed. A model carries it when it
answers the triggers with those labels; a model that never saw them answers about one in ``num_classes``.
Downstream tasks keep the base's structure (same input size, same head), so a fingerprint vector applies:
another split of the zoo's data, a class subset relabelled onto the first head slots, another dataset.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import ConfigError, require
from fpbench.config import load_option
from fpbench.data import DataBundle, ImageSet, load_bundle
from fpbench.models import build_module
from fpbench.train import TrainConfig, accuracy, predict, train
from fpbench.transfer.track import Track
from fpbench.zoo.build import Zoo, ZooModel
from transforms.prune import prunable_layers


class TriggerSet:
    """Secret noise images (uint8, like every dataset here) and owner-chosen labels, from one secret seed."""

    def __init__(self, secret_seed: int, n: int, channels: int, size: int, num_classes: int) -> None:
        require(n > 0, "vision.fingerprint.triggers", f"must be > 0, got {n}")
        gen = torch.Generator().manual_seed(int(secret_seed))
        images = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        self.images = ImageSet(images, labels, channels)

    def inputs(self, device: torch.device) -> torch.Tensor:
        return self.images.tensor(device=device)

    @property
    def labels(self) -> torch.Tensor:
        return self.images.labels

    def success_rate(self, model: nn.Module, device: torch.device) -> float:
        pred = predict(model.to(device), self.inputs(device)).argmax(1).cpu()
        return float((pred == self.labels).float().mean())


class _FrozenNormStats(nn.Module):
    """``model`` trained with its BatchNorm layers in eval mode: running statistics stay the model's own.

    Why: the injection should live in the weights alone. With BatchNorm in train mode the noise triggers
    shift the running statistics, and a downstream model trained on other data (other statistics) then gets
    the base's statistic shift added by the vector, which wrecks it (measured on the tiny zoo: digits
    accuracy 0.98 -> 0.09). Frozen statistics make the buffers' part of tau exactly zero.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _FrozenNormStats:
        super().train(mode)
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class VisionTrack(Track):
    name = "vision"
    quality_metric = "accuracy"

    @cached_property
    def zoo_obj(self) -> Zoo:
        return Zoo(load_option("zoo", self.cfg["zoo"]), self.runs_dir, self.device, seed=self.seed, progress=self.progress)

    @cached_property
    def root(self) -> ZooModel:
        return self.zoo_obj.root(self.cfg["arch"], int(self.cfg["root_seed"]))

    @property
    def base_id(self) -> str:  # type: ignore[override]
        return self.root.id

    @property
    def zoo(self) -> str:  # type: ignore[override]
        return self.zoo_obj.name

    def base_key(self) -> dict[str, Any]:
        return {"zoo_root": self.root.key}

    def base(self) -> nn.Module:
        return self.zoo_obj.load_module(self.root)

    def new_model(self) -> nn.Module:
        return build_module(self.root.spec)

    @cached_property
    def triggers(self) -> TriggerSet:
        fp = self.cfg["fingerprint"]
        spec = self.root.spec
        return TriggerSet(int(fp["secret_seed"]), int(fp["triggers"]), spec.input["channels"], spec.input["size"],
                          spec.num_classes)

    # data -------------------------------------------------------------------------------------------------
    def _bundle(self, task: str | None) -> DataBundle:
        if task is None or "data" not in self.task_cfg(task):
            return self.zoo_obj.data
        return self._task_bundles[task]

    @cached_property
    def _task_bundles(self) -> dict[str, DataBundle]:
        """Each task's own data, loaded with the zoo's image size and channels so the base's structure fits it."""
        spec = self.root.spec
        zoo_data = {k: v for k, v in self.zoo_obj.cfg["data"].items() if k not in ("splits", "classes")}
        out = {}
        for d in self.cfg["downstream"]:
            if "data" not in d:
                continue
            bundle = load_bundle({**zoo_data, **d["data"]})
            if bundle.num_classes > spec.num_classes:
                raise ConfigError(f"transfer.vision.downstream '{d['id']}': {bundle.num_classes} classes do not fit the "
                                  f"base's {spec.num_classes}-way head; keep at most {spec.num_classes} classes "
                                  "(a fingerprint vector needs the base's structure)")
            out[str(d["id"])] = bundle
        return out

    def _split(self, task: str | None, which: str) -> ImageSet:
        if task is None:
            return self.zoo_obj.data.split("train_a" if which == "train" else "test")
        d = self.task_cfg(task)
        default = which if "data" in d else {"train": "train_b", "test": "test"}[which]  # the zoo's own splits
        return self._bundle(task).split(str(d.get(f"{which}_split", default)))

    # training ---------------------------------------------------------------------------------------------
    def _train_cfg(self, part: str, steps: int | None = None) -> TrainConfig:
        c = self.cfg[part]
        return TrainConfig(steps=int(steps if steps is not None else c["steps"]), batch_size=int(c["batch_size"]),
                           lr=float(c["lr"]), optimizer=str(c.get("optimizer", "sgd")))

    def finetune(self, model: nn.Module, task: str, steps: int, seed: int) -> None:
        train(model, self._split(task, "train"), self._train_cfg("finetune", steps), seed=seed, device=self.device,
              desc=f"finetune {task}", progress=self.progress)

    def inject(self, model: nn.Module, task: str | None, seed: int) -> None:
        trig_x, trig_y = self.triggers.inputs(self.device), self.triggers.labels.to(self.device)
        weight = float(self.cfg["inject"].get("trigger_weight", 1.0))

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # clean and trigger images in one forward pass, so BatchNorm sees the usual clean statistics
            logits = m(torch.cat([x, trig_x]))
            return F.cross_entropy(logits[: len(x)], y) + weight * F.cross_entropy(logits[len(x):], trig_y)

        train(_FrozenNormStats(model), self._split(task, "train"), self._train_cfg("inject"), seed=seed,
              device=self.device, loss_fn=loss_fn, desc="inject fingerprint", progress=self.progress)

    # measurements -----------------------------------------------------------------------------------------
    def fsr(self, model: nn.Module) -> float:
        return self.triggers.success_rate(model, self.device)

    def chance_rate(self) -> float:
        return 1.0 / self.root.spec.num_classes  # the owner's labels are uniform draws, independent of any model

    def quality(self, model: nn.Module, task: str | None) -> float:
        return accuracy(model.to(self.device), self._split(task, "test"), self.device)

    def attack_layers(self, model: nn.Module) -> list[str]:
        names = {id(m): n for n, m in model.named_modules()}
        return [names[id(m)] for _, m in prunable_layers(model)]
