"""Building a configured method outside the runner, for the baseline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fpbench.api import Method, MethodContext
from fpbench.config import load_option
from fpbench.registry import method_class


def make_method(name: str, zoo: Any, workdir: Path, *overrides: dict[str, Any], **params: Any) -> Method:
    """Method ``name`` with its config's params, updated by each of ``overrides`` then ``params``, on CPU, seed 0."""
    cfg = load_option("method", name)
    merged = dict(cfg.get("params", {}))
    for extra in (*overrides, params):
        merged.update(extra)
    ctx = MethodContext(data=zoo.data, device=torch.device("cpu"), seed=0, workdir=workdir, progress=False)
    return method_class(cfg.get("impl", cfg["name"]))(merged, ctx)
