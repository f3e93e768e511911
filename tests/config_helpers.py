"""What a method or transform config resolves to, for tests that check a shipped config's values."""

from __future__ import annotations

from typing import Any

from fpbench.config import load_option
from fpbench.registry import method_class, transform_class


def resolved_params(group: str, name: str) -> dict[str, Any]:
    """The parameters of ``conf/<group>/<name>.yaml`` with the implementation's defaults filled in."""
    cfg = load_option(group, name)
    impl = cfg.get("impl", cfg["name"])
    cls = method_class(impl) if group == "method" else transform_class(impl)
    return cls.resolve_params(cfg.get("params"), name)
