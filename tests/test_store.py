"""The content-addressed artefact store: stable keys, atomic writes, corruption detected and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fpbench.utils import stable_hash
from fpbench.zoo.store import ArtefactStore, CorruptArtefact


def test_key_is_stable_and_order_independent() -> None:
    a = stable_hash({"parent": "k1", "params": {"amount": 0.3, "structured": True}, "seed": 1})
    b = stable_hash({"seed": 1, "params": {"structured": True, "amount": 0.3}, "parent": "k1"})
    assert a == b
    assert a != stable_hash({"parent": "k1", "params": {"amount": 0.5, "structured": True}, "seed": 1})
    assert len(a) == 16 and int(a, 16) >= 0


def _build(value: float):
    calls = []

    def build():
        calls.append(1)
        return {"info": {"v": value}}, {"w": torch.full((3, 4), value)}

    return build, calls


def test_build_once_then_reuse(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    build, calls = _build(1.5)
    meta, tensors, built = store.get_or_build("abcd1234", build)
    assert built and len(calls) == 1 and torch.equal(tensors["w"], torch.full((3, 4), 1.5))
    meta2, tensors2, built2 = store.get_or_build("abcd1234", build)
    assert not built2 and len(calls) == 1 and meta2["info"] == {"v": 1.5}


def test_truncated_weights_detected_and_rebuilt(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    build, calls = _build(2.0)
    store.get_or_build("deadbeef", build)
    wfile = store.path("deadbeef") / "weights.safetensors"
    wfile.write_bytes(wfile.read_bytes()[:-7])
    with pytest.raises(CorruptArtefact):
        store.load("deadbeef")
    seen = []
    _, tensors, built = store.get_or_build("deadbeef", build, on_corrupt=lambda k, e: seen.append(k))
    assert built and seen == ["deadbeef"] and len(calls) == 2
    assert torch.equal(tensors["w"], torch.full((3, 4), 2.0))


def test_altered_weights_same_size_detected(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    build, _ = _build(3.0)
    store.get_or_build("cafe0001", build)
    wfile = store.path("cafe0001") / "weights.safetensors"
    raw = bytearray(wfile.read_bytes())
    raw[-1] ^= 0xFF
    wfile.write_bytes(bytes(raw))
    with pytest.raises(CorruptArtefact):
        store.load("cafe0001")


def test_write_is_atomic_no_partial_dir_on_failure(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)

    def failing():
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        store.get_or_build("feedf00d", failing)
    assert not store.exists("feedf00d")
    leftovers = [p for p in (tmp_path / "fe").glob("*")] if (tmp_path / "fe").exists() else []
    assert leftovers == []


def test_meta_records_checksum(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    build, _ = _build(1.0)
    store.get_or_build("0badc0de", build)
    meta = json.loads((store.path("0badc0de") / "meta.json").read_text())
    assert len(meta["sha256"]) == 64 and meta["key"] == "0badc0de"
