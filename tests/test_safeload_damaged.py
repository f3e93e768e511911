"""Broken or hostile model files give one clear error each: never a raw traceback, never "pickle" for a non-pickle."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fpbench.safeload import DamagedModelFile, NonFiniteWeights, UntrustedFile, is_safetensors, load_state


def _good(tmp_path: Path) -> Path:
    path = tmp_path / "good.safetensors"
    save_file({"a.weight": torch.randn(16, 16), "b.bias": torch.randn(16)}, str(path))
    return path


def _header_length(path: Path, n: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[:8] = struct.pack("<Q", n)
    path.write_bytes(bytes(raw))


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-100])


def _huge_header(p: Path) -> None:
    _header_length(p, 2**62)


def _tiny_header(p: Path) -> None:
    _header_length(p, 1)


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _short(p: Path) -> None:
    p.write_bytes(b"\x01\x02\x03")


def _text_symlink(p: Path) -> None:
    text = p.with_name("notes.txt")
    text.write_text("these are not weights\n" * 20)
    p.unlink()
    os.symlink(text, p)


@pytest.mark.parametrize("damage, expected", [
    (_truncated, "truncated safetensors"),
    (_huge_header, "header length field says 4611686018427387904"),
    (_tiny_header, "damaged safetensors"),
    (_empty, "empty"),
    (_short, "too short"),
    (_text_symlink, "a symlink to .*notes.txt.* neither safetensors nor a pickle"),
])
def test_each_damage_gets_its_own_clear_error(tmp_path: Path, damage, expected: str) -> None:
    path = _good(tmp_path)
    damage(path)
    for allow_pickle in (False, True):
        with pytest.raises(DamagedModelFile, match=expected) as info:
            load_state(path, allow_pickle=allow_pickle)
        assert "pickle checkpoints can run code" not in str(info.value)
    assert not is_safetensors(path)


def test_a_header_length_of_128_is_still_safetensors(tmp_path: Path) -> None:
    """The first byte of such a file is 0x80, the pickle protocol byte: the sniffer must not be fooled."""
    path = tmp_path / "m.safetensors"
    for pad in range(0, 200):  # find metadata that makes the JSON header exactly 128 (mod 256) bytes long
        save_file({"w": torch.ones(2)}, str(path), metadata={"p": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert torch.equal(load_state(path)["w"], torch.ones(2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_name_the_first_bad_tensor(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "m.safetensors"
    w = torch.randn(4, 4)
    w[2, 1] = bad
    save_file({"a.weight": torch.randn(4), "b.weight": w}, str(path))
    with pytest.raises(NonFiniteWeights, match="'b.weight'"):
        load_state(path)
    pt = tmp_path / "m.pt"
    torch.save({"b.weight": w}, pt)
    with pytest.raises(NonFiniteWeights, match="'b.weight'"):
        load_state(pt, allow_pickle=True)


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_pickle_refusal_under_opt_in_does_not_advise_disabling_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Payload()}, path)
    with pytest.raises(UntrustedFile) as info:
        load_state(path, allow_pickle=True)
    message = str(info.value)
    assert "posix.system" in message and "weights_only" not in message and "False" not in message
