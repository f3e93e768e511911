"""Datasets that need no network, split deterministically, served as float images in [0, 1].

Sources: scikit-learn's digits (always present), Fashion-MNIST from Debian's ``dataset-fashion-mnist``
files (or any folder with the four idx files), CIFAR-10/100 from a local torchvision root
(downloaded only when ``allow_download`` is set, on a machine that can). Images are kept as uint8 at
the target size with their native channels and expanded to the model's channels per batch.
Nothing here normalises: models normalise their own inputs (see ``fpbench.models``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpbench.errors import ConfigError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass
class ImageSet:
    """Images (uint8, [N, C0, H, W]) and labels; ``batch`` yields float [0, 1] with ``channels`` channels."""

    images: torch.Tensor
    labels: torch.Tensor
    channels: int = 3

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def tensor(self, idx: torch.Tensor | slice | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        x = self.images if idx is None else self.images[idx]
        x = x.to(device=device, dtype=torch.float32) / 255.0
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x[:, : self.channels]
        return x.contiguous()

    def subset(self, n: int) -> ImageSet:
        return ImageSet(self.images[:n], self.labels[:n], self.channels)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            yield self.tensor(idx, device), self.labels[idx].to(device)


@dataclass
class DataBundle:
    """One task's data: named splits plus what a model needs to know about its inputs."""

    id: str
    name: str
    class_names: list[str]
    size: int
    channels: int
    splits: dict[str, ImageSet]
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    modality: str = "vision"  # a model of this task's ModelSpec.modality (fpbench.llm.data: "language")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> ImageSet:
        if name not in self.splits:
            raise ConfigError(f"data split '{name}' not in {self.name}; splits: {', '.join(self.splits)}")
        return self.splits[name]

    def input_spec(self) -> dict[str, Any]:
        return {"channels": self.channels, "size": self.size, "mean": self.mean, "std": self.std}


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_fashion_mnist() -> Path | None:
    candidates = [os.environ.get("FPBENCH_FASHION_MNIST", ""), *FASHION_MNIST_DIRS]
    for c in candidates:
        if c and (Path(c) / "train-images-idx3-ubyte.gz").exists():
            return Path(c)
    return None


def load_fashion_mnist(root: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    base = Path(root) if root else find_fashion_mnist()
    if base is None or not (base / "train-images-idx3-ubyte.gz").exists():
        raise ConfigError(
            "Fashion-MNIST not found: install Debian's package (`apt-get install dataset-fashion-mnist`, "
            "which `make setup` does) or set FPBENCH_FASHION_MNIST to a folder with the four idx .gz files"
        )
    x = np.concatenate([_read_idx(base / "train-images-idx3-ubyte.gz"), _read_idx(base / "t10k-images-idx3-ubyte.gz")])
    y = np.concatenate([_read_idx(base / "train-labels-idx1-ubyte.gz"), _read_idx(base / "t10k-labels-idx1-ubyte.gz")])
    return x[:, None], y.astype(np.int64), list(FASHION_MNIST_CLASSES)


def load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = np.clip(d.images * 16.0, 0, 255).astype(np.uint8)[:, None]
    return x, d.target.astype(np.int64), list(DIGIT_CLASSES)


def load_cifar(root: str, which: str = "cifar10", allow_download: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR from a torchvision root (``download=True`` only when asked: this machine has no network)."""
    import torchvision

    cls = torchvision.datasets.CIFAR10 if which == "cifar10" else torchvision.datasets.CIFAR100
    try:
        parts = [cls(root=root, train=t, download=allow_download) for t in (True, False)]
    except RuntimeError as exc:
        raise ConfigError(
            f"{which} not found under '{root}': put torchvision's extracted archive there, "
            f"or set data.allow_download=true on a machine with network ({exc})"
        ) from exc
    x = np.concatenate([p.data for p in parts]).transpose(0, 3, 1, 2)
    y = np.concatenate([np.asarray(p.targets) for p in parts]).astype(np.int64)
    return x, y, list(parts[0].classes)


LOADERS = {"digits": load_digits, "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar, "cifar100": load_cifar}


def resize_images(x: np.ndarray, size: int) -> torch.Tensor:
    """uint8 images [N, C, H, W] at ``size`` x ``size`` (28 -> 32 by zero padding, as LeNet did; else bilinear)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    h = t.shape[-1]
    if h == size:
        return t
    if size > h and (size - h) % 2 == 0 and size - h <= 4:  # 28 -> 32: pad, as LeNet did, and stay exact
        p = (size - h) // 2
        return F.pad(t, (p, p, p, p))
    out = F.interpolate(t.float(), size=(size, size), mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def bundle_id(cfg: dict[str, Any]) -> str:
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return f"{cfg['name']}-{cfg['size']}-{hashlib.sha256(blob).hexdigest()[:10]}"


@lru_cache(maxsize=4)
def _load_bundle_cached(frozen: str) -> DataBundle:
    cfg = json.loads(frozen)
    name = cfg["name"]
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset '{name}'. Valid datasets: {', '.join(LOADERS)}")
    loader_args = {k: cfg[k] for k in ("root", "which", "allow_download") if k in cfg}
    if name.startswith("cifar"):
        loader_args.setdefault("which", name)
        loader_args.setdefault("root", "data/cifar")
    x, y, classes = LOADERS[name](**loader_args)
    classes_keep = cfg.get("classes")
    if classes_keep:  # a sub-task: keep only these class indices, relabelled 0..k-1
        keep = np.isin(y, classes_keep)
        remap = {c: i for i, c in enumerate(classes_keep)}
        x, y = x[keep], np.array([remap[int(v)] for v in y[keep]], dtype=np.int64)
        classes = [classes[c] for c in classes_keep]
    return bundle_from_arrays(x, y, classes, cfg, name=name)


def bundle_from_arrays(x: np.ndarray, y: np.ndarray, classes: list[str], cfg: dict[str, Any],
                       name: str | None = None) -> DataBundle:
    """A bundle of uint8 images ``x`` [N, C, H, W] and labels ``y``: shuffled with ``cfg['seed']``, resized to
    ``cfg['size']`` and cut into the disjoint ``cfg['splits']`` ({name: count}); ``cfg`` identifies the bundle."""
    name = name or str(cfg["name"])
    rng = np.random.default_rng(int(cfg.get("seed", 0)))
    order = rng.permutation(len(y))
    images = resize_images(x[order], int(cfg["size"]))
    labels = torch.from_numpy(np.asarray(y)[order].astype(np.int64))
    splits: dict[str, ImageSet] = {}
    start = 0
    total = len(labels)
    for split_name, n in cfg["splits"].items():
        n = int(n)
        if start + n > total:
            raise ConfigError(f"data.splits asks for {start + n} images but {name} has {total}; shrink data.splits.{split_name}")
        splits[split_name] = ImageSet(images[start : start + n], labels[start : start + n], int(cfg.get("channels", 3)))
        start += n
    return DataBundle(
        id=bundle_id(cfg), name=name, class_names=list(classes), size=int(cfg["size"]),
        channels=int(cfg.get("channels", 3)), splits=splits, mean=list(cfg.get("mean", [0.5] * 3)),
        std=list(cfg.get("std", [0.5] * 3)),
    )


def load_bundle(cfg: dict[str, Any]) -> DataBundle:
    """Load (and memoise) the data bundle a zoo config describes; splits are disjoint by construction.
    ``name: text`` is the language task of the LLM zoo (``fpbench.llm.data``)."""
    if cfg.get("name") == "text":
        from fpbench.llm.data import load_text_bundle

        return load_text_bundle(cfg)  # type: ignore[return-value]  # the same interface, for text
    return _load_bundle_cached(json.dumps(dict(cfg), sort_keys=True, default=str))
