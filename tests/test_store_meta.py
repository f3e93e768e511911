"""A damaged meta.json (checksum field missing, null beside weights, not a digest) is corrupt and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fpbench.zoo.store import ArtefactStore, CorruptArtefact


def _build():
    return {"info": {"v": 1}}, {"w": torch.arange(12.0).reshape(3, 4)}


@pytest.mark.parametrize("sha", ["null", "missing", "short", "not hex", "number"])
def test_damaged_checksum_field_is_detected_and_rebuilt(tmp_path: Path, sha: str) -> None:
    store = ArtefactStore(tmp_path)
    store.get_or_build("k", _build)
    meta_file = store.path("k") / "meta.json"
    meta = json.loads(meta_file.read_text())
    if sha == "missing":
        del meta["sha256"]
    else:
        meta["sha256"] = {"null": None, "short": "abc123", "not hex": "z" * 64, "number": 7}[sha]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CorruptArtefact, match="sha256"):
        store.load("k")
    seen: list[str] = []
    _, tensors, built = store.get_or_build("k", _build, on_corrupt=lambda k, e: seen.append(str(e)))
    assert built and seen and torch.equal(tensors["w"], torch.arange(12.0).reshape(3, 4))
    assert len(json.loads(meta_file.read_text())["sha256"]) == 64


def test_recipe_only_artefacts_still_load(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    store.save("new", {"recipe": {"cheap": True}}, None)
    assert store.load("new") == ({"recipe": {"cheap": True}, "key": "new", "sha256": None, "weights": False}, None)
    # stored before the ``weights`` field existed: a null checksum and no weights file is still a recipe
    store.save("old", {"recipe": {}}, None)
    meta_file = store.path("old") / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["weights"]
    meta_file.write_text(json.dumps(meta))
    assert store.load("old")[1] is None


def test_meta_that_is_not_an_object_is_corrupt(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path)
    store.get_or_build("k", _build)
    (store.path("k") / "meta.json").write_text("[1, 2]")
    with pytest.raises(CorruptArtefact, match="not a JSON object"):
        store.load("k")
