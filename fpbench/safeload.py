"""Loading model files from strangers without running their code.

Safetensors only by default: a pickle-based checkpoint (``torch.save`` zip or legacy pickle, whatever its
suffix) can execute arbitrary code when unpickled, so it is refused with the one-liner that converts it.
``allow_pickle=True`` is an explicit opt-in, and even then ``torch.load(weights_only=True)`` is used, which
refuses any object that is not plain tensors and containers. A file that is empty, truncated or not a model
file at all raises :class:`DamagedModelFile` (never called a pickle), and NaN/inf weights raise
:class:`NonFiniteWeights` naming the first such tensor.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fpbench.api import FpbenchError, ModelSpec
from fpbench.sanity import first_non_finite

CONVERT_HINT = (
    "convert it once on a machine you trust: python -c \"import torch, safetensors.torch as st; "
    "st.save_file(torch.load('IN.pt', weights_only=True), 'OUT.safetensors')\""
)


class UntrustedFile(FpbenchError):
    """A model file that is not safetensors, refused because loading it could run code."""


class ArchitectureMismatch(FpbenchError):
    """A model file's tensors do not fit the named architecture; the message names the first mismatch."""


class DamagedModelFile(FpbenchError):
    """A model file that is empty, truncated or not a model file at all; the message says which and what to do."""


class NonFiniteWeights(FpbenchError):
    """A model file holds NaN or infinite weights; the message names the first such tensor."""


HEADER_LIMIT = 100_000_000  # safetensors' own cap on the JSON header
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip container; a raw pickle (protocol >= 2)
_FIX = "re-export or re-download the model (fpbench writes models with: python -m fpbench.verify export ...)"


def _describe(path: Path) -> str:
    return f"{path} (a symlink to {path.resolve()})" if path.is_symlink() else str(path)


def _sniff(path: Path) -> str:
    """ "safetensors" | "pickle"; raises DamagedModelFile for anything else, naming what is wrong."""
    size = path.stat().st_size
    name = _describe(path)
    if size == 0:
        raise DamagedModelFile(f"{name} is empty (0 bytes): not a model file; {_FIX}")
    with open(path, "rb") as f:
        head = f.read(8)
        first = f.read(1)
    n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    # Every safetensors header is a JSON object right after its 8-byte length. Checked before the pickle magic:
    # a header length of 128 (mod 256) starts with the pickle byte 0x80, and no pickle or zip has '{' there.
    if first == b"{":
        if 2 <= n <= min(HEADER_LIMIT, size - 8):
            return "safetensors"
        raise DamagedModelFile(f"{name} is a damaged safetensors file: its header length field says {n} bytes, "
                               f"the file has {size}; {_FIX}")
    if head.startswith(PICKLE_MAGIC):
        return "pickle"
    if len(head) < 8:
        raise DamagedModelFile(f"{name} is {size} bytes: too short for a model file; {_FIX}")
    raise DamagedModelFile(f"{name} is not a model file: neither safetensors nor a pickle checkpoint (it starts "
                           f"with {head!r}); {_FIX}")


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedModelFile(f"{_describe(path)} is a damaged safetensors file: its {n}-byte header is not JSON "
                               f"({exc}); {_FIX}") from exc
    if not isinstance(header, dict):
        raise DamagedModelFile(f"{_describe(path)} is a damaged safetensors file: its header is not a JSON object; "
                               f"{_FIX}")
    data = path.stat().st_size - 8 - n
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets") or []) == 2]
    if ends and max(ends) > data:
        raise DamagedModelFile(f"{_describe(path)} is a truncated safetensors file: its tensors need {max(ends)} bytes "
                               f"of data, the file holds {data}; {_FIX}")
    return header


def is_safetensors(path: Path) -> bool:
    """True when the file starts like safetensors: an 8-byte little-endian header length, then a JSON object."""
    try:
        return _sniff(path) == "safetensors" and isinstance(_safetensors_header(path), dict)
    except DamagedModelFile:
        return False


def _refusal_reason(exc: Exception) -> str:
    """What the weights-only unpickler refused, without torch's advice to turn the protection off."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    found = [ln for ln in lines if "unsupported" in ln.lower() and "weights_only" not in ln]
    return found[0].rstrip(".") if found else "the file holds objects other than tensors"


def check_finite(state: dict[str, torch.Tensor], path: Path | str) -> None:
    """Raise NonFiniteWeights naming the first tensor with a NaN or an infinity."""
    bad = first_non_finite(state)
    if bad is not None:
        raise NonFiniteWeights(f"{path}: tensor '{bad}' holds NaN or infinite values; a model with non-finite "
                               "weights cannot be verified (its scores would be noise): check where the file came from")


def load_state(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a model file; non-safetensors files only with ``allow_pickle`` and only as weights.

    Raises DamagedModelFile (empty, truncated, not a model file), UntrustedFile (a pickle, or a pickle holding
    code) or NonFiniteWeights (NaN/inf weights): one line each, never a raw traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if _sniff(path) == "safetensors":
        _safetensors_header(path)
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types on a damaged layout
            raise DamagedModelFile(f"{_describe(path)} is a damaged safetensors file ({exc}); {_FIX}") from exc
        check_finite(state, path)
        return state
    if not allow_pickle:
        raise UntrustedFile(f"{path} is not a safetensors file; pickle-based checkpoints can run code when "
                            f"loaded and are refused. {CONVERT_HINT} (or pass allow_pickle=true to load its "
                            "weights only)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's protocol warnings are noise next to our one-line refusal
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler refuses anything but tensors and containers
        raise UntrustedFile(f"{path}: refused even with allow_pickle=true: {_refusal_reason(exc)}; only plain "
                            "tensors are ever loaded from a pickle, never code") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UntrustedFile(f"{path}: expected a flat dict of tensors (a state dict)")
    check_finite(state, path)
    return state


def check_fits(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise ArchitectureMismatch naming the first missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise ArchitectureMismatch(f"tensor '{name}' of the architecture is missing from the file")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ArchitectureMismatch(f"tensor '{name}' has shape {tuple(state[name].shape)} in the file, "
                                       f"the architecture expects {tuple(tensor.shape)}")
    for name in state:
        if name not in expected:
            raise ArchitectureMismatch(f"tensor '{name}' in the file is not part of the architecture")


def load_model(path: str | Path, spec: ModelSpec, allow_pickle: bool = False) -> nn.Module:
    """Build ``spec``'s module and load the file's tensors into it, after checking they fit."""
    from fpbench.models import build_module

    state = load_state(path, allow_pickle=allow_pickle)
    model = build_module(spec)
    check_fits(model, state)
    model.load_state_dict(state, strict=True)
    return model.eval()
