"""Data: disjoint deterministic splits, [0,1] images, and the local-file loaders (no network)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fpbench.api import ConfigError
from fpbench.data import load_bundle, load_cifar, load_fashion_mnist


def test_digits_splits_are_disjoint_and_deterministic() -> None:
    cfg = {"name": "digits", "size": 16, "seed": 0, "splits": {"a": 500, "b": 300, "c": 200}}
    b1 = load_bundle(cfg)
    b2 = load_bundle(dict(cfg))
    assert b1.id == b2.id
    flat = {k: v.images.reshape(len(v), -1) for k, v in b1.splits.items()}
    # no image row appears in two splits (digits has a few exact duplicates; compare indices via hashing rows)
    rows = {k: {bytes(r.numpy()) for r in v} for k, v in flat.items()}
    assert len(rows["a"] & rows["b"]) <= 2 and len(rows["a"] & rows["c"]) <= 2
    x = b1.split("a").tensor(slice(0, 8))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert b1.input_spec()["mean"] == [0.5, 0.5, 0.5]


def test_split_too_large_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="shrink data.splits"):
        load_bundle({"name": "digits", "size": 8, "splits": {"a": 5000}})


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_debian_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    x, y, classes = load_fashion_mnist(str(tmp_path))
    assert x.shape == (10, 1, 28, 28) and y.shape == (10,) and classes[0] == "t-shirt"


def test_fashion_mnist_missing_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


def test_cifar_reads_a_local_torchvision_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CIFAR path reads torchvision's on-disk layout; integrity md5s are for the real archive, so skip them."""
    import torchvision

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 255, (2, 3072), dtype=np.uint8), "labels": [1, 2]}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    x, y, classes = load_cifar(str(tmp_path), "cifar10")
    assert x.shape == (12, 3, 32, 32) and list(y[:2]) == [1, 2] and classes[1] == "c1"


def test_cifar_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_download"):
        load_cifar(str(tmp_path), "cifar10", allow_download=False)
