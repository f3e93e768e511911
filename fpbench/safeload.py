"""Loading model files from strangers without running their code.

Safetensors only by default: a pickle-based checkpoint (``torch.save`` zip or legacy pickle, whatever its
suffix) can execute arbitrary code when unpickled, so it is refused with the one-liner that converts it.
``allow_pickle=True`` is an explicit opt-in, and even then ``torch.load(weights_only=True)`` is used, which
refuses any object that is not plain tensors and containers.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fpbench.api import FpbenchError, ModelSpec

CONVERT_HINT = (
    "convert it once on a machine you trust: python -c \"import torch, safetensors.torch as st; "
    "st.save_file(torch.load('IN.pt', weights_only=True), 'OUT.safetensors')\""
)


class UntrustedFile(FpbenchError):
    """A model file that is not safetensors, refused because loading it could run code."""


class ArchitectureMismatch(FpbenchError):
    """A model file's tensors do not fit the named architecture; the message names the first mismatch."""


def is_safetensors(path: Path) -> bool:
    """True when the file starts like safetensors: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or n > 100_000_000:
            return False
        header = f.read(n)
    try:
        return isinstance(json.loads(header), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def load_state(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a model file; non-safetensors files only with ``allow_pickle`` and only as weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if is_safetensors(path):
        return load_file(str(path), device="cpu")
    if not allow_pickle:
        raise UntrustedFile(f"{path} is not a safetensors file; pickle-based checkpoints can run code when "
                            f"loaded and are refused. {CONVERT_HINT} (or pass allow_pickle=true to load its "
                            "weights only)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler refuses anything but tensors and containers
        raise UntrustedFile(f"{path}: refused by the weights-only loader ({str(exc).splitlines()[0]})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UntrustedFile(f"{path}: expected a flat dict of tensors (a state dict)")
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
