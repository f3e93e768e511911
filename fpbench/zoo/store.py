"""A content-addressed artefact store: safetensors + JSON spec, written atomically, verified on load.

Layout: ``<root>/<key[:2]>/<key>/{weights.safetensors, meta.json}``. A write goes to a temporary
sibling directory that is renamed into place under a file lock, so a killed writer leaves no partial
artefact and concurrent workers build each key once. ``meta.json`` carries the sha256 of the weights;
a mismatch on load -- or a meta whose checksum field is missing, null beside weights or not a hex digest --
raises :class:`CorruptArtefact` and the caller rebuilds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from fpbench.api import FpbenchError
from fpbench.utils import file_sha256

WEIGHTS = "weights.safetensors"
META = "meta.json"
HEX = frozenset("0123456789abcdef")


class CorruptArtefact(FpbenchError):
    """A stored artefact failed its checksum or could not be parsed; it should be rebuilt."""


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage; clone each tensor into its own buffer.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


class ArtefactStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lock(self, key: str) -> FileLock:
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{key}.lock"))

    def exists(self, key: str) -> bool:
        return (self.path(key) / META).exists()

    def load_meta(self, key: str) -> dict[str, Any]:
        try:
            meta = json.loads((self.path(key) / META).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptArtefact(f"artefact {key}: unreadable meta.json ({exc})") from exc
        if not isinstance(meta, dict):
            raise CorruptArtefact(f"artefact {key}: meta.json is not a JSON object")
        return meta

    def has_weights(self, key: str, meta: dict[str, Any]) -> bool:
        """Whether the artefact stores tensors; raises CorruptArtefact when its checksum field cannot say.

        A weights artefact's ``sha256`` is a 64-digit hex digest. A recipe-only artefact's is null, with no
        weights file beside it (and ``weights: false`` since that field was added). Anything else -- the field
        missing, null beside a weights file or under ``weights: true``, not a hex digest -- is damage.
        """
        if "sha256" not in meta:
            raise CorruptArtefact(f"artefact {key}: meta.json has no sha256 field")
        digest = meta["sha256"]
        if digest is None:
            if meta.get("weights", False) or (self.path(key) / WEIGHTS).exists():
                raise CorruptArtefact(f"artefact {key}: meta.json's sha256 is null but the artefact has weights")
            return False
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in HEX for c in digest)):
            raise CorruptArtefact(f"artefact {key}: meta.json's sha256 {digest!r} is not a sha256 hex digest")
        return True

    def load(self, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        """(meta, tensors or None for recipe-only artefacts); raises CorruptArtefact on any mismatch."""
        meta = self.load_meta(key)
        if meta.get("key") != key:
            raise CorruptArtefact(f"artefact {key}: meta.json names key {meta.get('key')!r}")
        if not self.has_weights(key, meta):
            return meta, None
        wpath = self.path(key) / WEIGHTS
        if not wpath.exists() or file_sha256(wpath) != meta["sha256"]:
            raise CorruptArtefact(f"artefact {key}: {WEIGHTS} is missing or fails its checksum")
        try:
            return meta, load_file(str(wpath))
        except Exception as exc:  # safetensors raises several types on a damaged header
            raise CorruptArtefact(f"artefact {key}: cannot parse {WEIGHTS} ({exc})") from exc

    def save(self, key: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor] | None) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared runs dir is read by other users' runs too
        try:
            meta = dict(meta, key=key, sha256=None, weights=tensors is not None)
            if tensors is not None:
                save_file(_contiguous(tensors), str(tmp / WEIGHTS))
                meta["sha256"] = file_sha256(tmp / WEIGHTS)
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def discard(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)

    def get_or_build(
        self, key: str, build: Callable[[], tuple[dict[str, Any], dict[str, torch.Tensor] | None]],
        on_corrupt: Callable[[str, CorruptArtefact], None] | None = None,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None, bool]:
        """Load ``key`` or build and store it once (other workers wait on the lock). Returns (meta, tensors, built)."""
        if self.exists(key):
            try:
                meta, tensors = self.load(key)
                return meta, tensors, False
            except CorruptArtefact:
                pass  # reported and rebuilt under the lock below
        with self.lock(key):
            if self.exists(key):  # another worker may have finished while we waited
                try:
                    meta, tensors = self.load(key)
                    return meta, tensors, False
                except CorruptArtefact as exc:
                    if on_corrupt:
                        on_corrupt(key, exc)
                    self.discard(key)
            meta, tensors = build()
            self.save(key, meta, tensors)
            meta, tensors = self.load(key)
            return meta, tensors, True
