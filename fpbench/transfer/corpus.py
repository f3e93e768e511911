"""Text corpora for the language track: Debian's fortunes packages (English, German, Italian, Spanish), offline.

A fortune file holds short texts separated by lines with a single ``%``. A corpus is a list of files
or folders under the fortunes root (``$FPBENCH_FORTUNES`` or Debian's ``/usr/share/games/fortunes``);
a folder contributes its regular files, not its symlinks (Debian links the Italian files into the root
folder too) nor the ``.dat``/``.u8`` index and alias files. Texts are split into train/test by a seeded
shuffle, so the split is the same on every machine with the same packages.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpbench.api import ConfigError

FORTUNES_DIRS = ("/usr/share/games/fortunes",)
PACKAGE_HINT = "install Debian's fortunes packages (`make data` installs fortunes, fortunes-de, fortunes-it, fortunes-es)"


def fortunes_root() -> Path:
    for c in (os.environ.get("FPBENCH_FORTUNES", ""), *FORTUNES_DIRS):
        if c and Path(c).is_dir():
            return Path(c)
    raise ConfigError(f"no fortunes folder found: {PACKAGE_HINT}, or set FPBENCH_FORTUNES to a folder of fortune files")


def corpus_files(root: Path, sources: list[str]) -> list[Path]:
    files: list[Path] = []
    for src in sources:
        path = root / src
        if path.is_dir():
            files += sorted(p for p in path.iterdir()
                            if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"fortune source '{src}' not found under {root}: {PACKAGE_HINT}")
    if not files:
        raise ConfigError(f"fortune sources {sources} under {root} hold no files: {PACKAGE_HINT}")
    return files


def read_fortunes(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [t.strip("\n") for t in text.split("\n%\n") if t.strip()]


@dataclass
class Corpus:
    name: str
    train: list[str]
    test: list[str]


def load_corpus(name: str, cfg: dict[str, Any], seed: int = 0) -> Corpus:
    """``cfg``: ``{sources: [file or folder, ...], test_fraction: 0.1}``; texts shuffled by ``seed`` then split."""
    root = fortunes_root()
    texts = [t for f in corpus_files(root, list(cfg["sources"])) for t in read_fortunes(f)]
    random.Random(seed).shuffle(texts)
    n_test = max(1, int(len(texts) * float(cfg.get("test_fraction", 0.1))))
    return Corpus(name, texts[n_test:], texts[:n_test])
