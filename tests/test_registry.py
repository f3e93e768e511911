"""Registries and config groups: unknown names fail in one line that lists the valid ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fpbench.config import check_option, list_options
from fpbench.registry import METHODS, TRANSFORMS, UnknownName, method_class, transform_class


def test_unknown_method_lists_valid_names_and_close_match() -> None:
    with pytest.raises(UnknownName) as err:
        method_class("cmff")
    msg = str(err.value)
    assert "unknown method 'cmff'" in msg and "Did you mean 'cmf'" in msg
    for name in METHODS:
        assert name in msg


def test_unknown_transform_config_lists_options() -> None:
    with pytest.raises(UnknownName) as err:
        check_option("transform", "prune35")
    assert "prune30" in str(err.value) and "finetune" in str(err.value)


def test_every_registered_entry_imports() -> None:
    for name in METHODS:
        assert method_class(name).name
    for name in TRANSFORMS:
        assert transform_class(name).name


def test_every_transform_config_names_a_registered_impl() -> None:
    from fpbench.config import load_option

    for name in list_options("transform"):
        cfg = load_option("transform", name)
        assert cfg["name"] == name, f"conf/transform/{name}.yaml has name {cfg['name']!r}"
        impl = cfg.get("impl", name)
        assert impl == "chain" or impl in TRANSFORMS, f"{name}: impl {impl!r} is not registered"


def test_every_method_config_names_a_registered_method() -> None:
    from fpbench.config import load_option

    for name in list_options("method"):
        cfg = load_option("method", name)
        assert cfg["name"] == name
        assert cfg.get("impl", name) in METHODS, f"{name}: not registered"
        assert "threshold" in cfg.get("params", {}), f"{name}: no default threshold"


@pytest.mark.parametrize("arg", ["method=nosuch", "transform=nosuch", "zoo=nosuch"])
def test_cli_unknown_name_is_one_line_and_nonzero(arg: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "fpbench.run", arg], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown"), proc.stderr
    assert "Valid" in lines[0]
