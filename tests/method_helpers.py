"""Building a configured method for the baseline tests: through ``fpbench.evaluate.make_method``, as every stage does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fpbench.api import Method
from fpbench.config import load_option
from fpbench.evaluate import make_method as build_method


def make_method(name: str, zoo: Any, workdir: Path, *overrides: dict[str, Any], **params: Any) -> Method:
    """Method ``name`` with its config's params, updated by each of ``overrides`` then ``params``, on CPU, seed 0."""
    cfg = load_option("method", name)
    merged = dict(cfg.get("params", {}))
    for extra in (*overrides, params):
        merged.update(extra)
    return build_method({**cfg, "params": merged}, zoo.data, torch.device("cpu"), 0, workdir)
