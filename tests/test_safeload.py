"""Untrusted model files: pickles are refused (their code never runs), mismatches are named."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fpbench.safeload import ArchitectureMismatch, UntrustedFile, load_model, load_state


class _Payload:
    """Unpickling this writes a marker file: proof that the loader executed the file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture()
def resnet(ci_zoo):
    root = ci_zoo.roots()[0]
    return root.spec, ci_zoo.load_module(root)


def _save(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_safetensors_round_trip_gives_the_same_logits(resnet, tmp_path):
    spec, model = resnet
    loaded = load_model(_save(model, tmp_path / "m.safetensors"), spec)
    x = torch.rand(4, spec.input["channels"], spec.input["size"], spec.input["size"])
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)


@pytest.mark.parametrize("saver", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, saver):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.safetensors"  # a lying suffix must not help
    if saver == "torch":
        torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UntrustedFile, match="safetensors"):
        load_state(path)
    with pytest.raises(UntrustedFile):
        load_state(path, allow_pickle=True)  # opt-in still loads weights only
    assert not marker.exists()


def test_plain_weights_checkpoint_loads_only_with_opt_in(resnet, tmp_path):
    spec, model = resnet
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(UntrustedFile, match="convert"):
        load_model(path, spec)
    assert load_model(path, spec, allow_pickle=True) is not None


def test_mismatched_tensors_are_named(resnet, tmp_path):
    spec, model = resnet
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = next(iter(state))
    state[first] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ArchitectureMismatch, match=f"'{first}' has shape"):
        load_model(tmp_path / "shape.safetensors", spec)
    del state[first]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ArchitectureMismatch, match=f"'{first}' .*missing"):
        load_model(tmp_path / "missing.safetensors", spec)
