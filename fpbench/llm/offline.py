"""Files that PyPI packages ship for offline use (a GGUF model, a sentence-embedder directory): found through the
installed package, with an error that says how to install it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fpbench.errors import ConfigError


def package_file(package: str, relative: str, install_hint: str) -> Path:
    """``relative`` inside the installed ``package``; a ConfigError naming the install step when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{package} is not installed: {install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ConfigError(f"{package} is installed but holds no {relative}: reinstall it ({install_hint})")
    return path
