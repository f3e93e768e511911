"""Text the language-model zoo trains on, from Debian's packages (offline): plain text for pretraining families
and (prompt, response) pairs for instruct owners.

Sources (``make data`` installs the packages):
  - ``fortunes`` / ``fortunes:de`` / ``fortunes:it`` / ``fortunes:es``: the fortune cookies (``fortunes*``), one
    text per fortune (:mod:`fpbench.transfer.corpus` reads them);
  - ``gcide``: the GNU Collaborative International Dictionary of English (``dict-gcide``, dictd format): one text
    per entry; as pairs, (headword, its first definition);
  - ``wordnet``: WordNet 3.0's synsets (``wordnet-base``, ``data.noun/verb/adj/adv``): one text per gloss; as
    pairs, (the synset's first word, its gloss);
  - ``jargon``: the Jargon File (``jargon-text``): one text per paragraph.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from fpbench.errors import ConfigError
from fpbench.transfer.corpus import corpus_files, fortunes_root, read_fortunes

GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
WORDNET = Path("/usr/share/wordnet")
JARGON = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
SOURCES = ("fortunes", "fortunes:de", "fortunes:it", "fortunes:es", "gcide", "wordnet", "jargon")
PAIR_SOURCES = ("gcide", "wordnet")
PARSE_VERSION = "1"  # of the dictionary parsers below: a change makes the disk caches of their pairs stale
_PACKAGE = {"gcide": "dict-gcide", "wordnet": "wordnet-base", "jargon": "jargon-text"}


def _need(path: Path, source: str) -> Path:
    if not path.exists():
        raise ConfigError(f"text source '{source}' needs {path}: install Debian's {_PACKAGE[source]} (`make data`)")
    return path


def _gcide_entries(path: Path) -> Iterator[tuple[str, str]]:
    """(headword, definition text) per entry: an entry is a line at column 0 followed by indented lines."""
    head, body = "", []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip() and not line.startswith(" "):
                if head and body:
                    yield head, " ".join(body)
                head, body = line.strip(), []
            elif line.strip() and head:
                body.append(line.strip())
    if head and body:
        yield head, " ".join(body)


def _gcide_pair(head: str, body: str) -> tuple[str, str] | None:
    word = re.split(r" \\|,| \(", head, maxsplit=1)[0].strip()
    open_brackets = head.count("[") - head.count("]")
    text = body
    for _ in range(max(open_brackets, 0)):  # an etymology opened on the headword line closes in the body
        text = text.split("]", 1)[-1]
    while (stripped := re.sub(r"\[[^\[\]]*\]", "", text)) != text:  # sources, etymologies (nested brackets)
        text = stripped
    text = re.sub(r"\s+", " ", text.split("[", 1)[0]).strip()  # a source left open where the entry ends
    text = re.sub(r"^\d+\. ", "", text)  # "1. " of the first numbered sense
    first = re.split(r' (?=\d+\. )| --|"', text, maxsplit=1)[0].strip()  # up to the next sense, citation, example
    first = first.rstrip(" ;,")
    if not word.isalpha() or len(first) < 10:
        return None
    return word, first


def _wordnet_pairs(root: Path) -> Iterator[tuple[str, str]]:
    for pos in ("noun", "verb", "adj", "adv"):
        with open(_need(root / f"data.{pos}", "wordnet"), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(" ") or "|" not in line:
                    continue  # the licence header is indented
                fields, gloss = line.split("|", 1)
                word = fields.split()[4].replace("_", " ")
                definition = gloss.split(";")[0].strip()
                if definition:
                    yield word, definition


def wordnet_synsets() -> Iterator[list[str]]:
    """The words of every WordNet synset (``wordnet-base``), in the package's order."""
    for pos in ("noun", "verb", "adj", "adv"):
        with open(_need(WORDNET / f"data.{pos}", "wordnet"), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(" ") or "|" not in line:
                    continue  # the licence header is indented
                fields = line.split("|", 1)[0].split()
                count = int(fields[3], 16)  # w_cnt is hexadecimal
                yield [fields[4 + 2 * i].replace("_", " ") for i in range(count)]


def _paragraphs(path: Path) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for para in fh.read().split("\n\n"):
            text = " ".join(para.split())
            if len(text) >= 40:
                yield text


def _check(source: str, options: tuple[str, ...]) -> None:
    if source not in options:
        raise ConfigError(f"unknown text source '{source}'; valid: {', '.join(options)}")


def _location(source: str) -> str:
    """Where a source is read from, looked up at each call (part of the read caches' keys)."""
    if source.startswith("fortunes"):
        return str(fortunes_root())
    return str({"gcide": GCIDE, "wordnet": WORDNET, "jargon": JARGON}.get(source, ""))


@lru_cache(maxsize=8)
def _pairs(source: str, where: str) -> tuple[tuple[str, str], ...]:
    _check(source, PAIR_SOURCES)
    cached = _disk_cache(source, where)
    if cached is not None and cached.is_file():
        try:
            return tuple((str(w), str(d)) for w, d in json.loads(cached.read_text()))
        except (ValueError, TypeError):
            pass  # a damaged cache file: parsed again and rewritten below
    it = (p for e in _gcide_entries(_need(GCIDE, "gcide")) if (p := _gcide_pair(*e))) if source == "gcide" else (
        _wordnet_pairs(WORDNET))
    out = tuple(it)
    if cached is not None:
        try:  # written whole, then renamed: a reader never sees half a file
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(out))
            tmp.replace(cached)
        except OSError:
            pass  # a read-only home: the parse is simply not kept
    return out


def _disk_cache(source: str, where: str) -> Path | None:
    """Where the parsed pairs of a dictionary are kept between processes (parsing WordNet or GCIDE takes seconds):
    ``$FPBENCH_CACHE`` (default ``~/.cache/fpbench``)/corpora, keyed by the source's files, their sizes and times."""
    root = Path(where)
    if not root.exists():
        return None
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    stamp = hashlib.sha256(json.dumps([PARSE_VERSION, *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files
                                                       if f.is_file())]).encode()).hexdigest()[:16]
    base = Path(os.environ.get("FPBENCH_CACHE") or Path.home() / ".cache" / "fpbench")
    return base / "corpora" / f"{source}-{stamp}.json"


def pairs(source: str, limit: int | None = None) -> list[tuple[str, str]]:
    """(prompt word, response definition) pairs of a dictionary source, in the package's order (read once)."""
    _check(source, PAIR_SOURCES)
    out = _pairs(source, _location(source))
    return list(out[:limit] if limit is not None else out)


@lru_cache(maxsize=16)
def _read(source: str, where: str) -> tuple[str, ...]:
    """Every text of a source in the package's order, read once per process (WordNet takes seconds to parse)."""
    _check(source, SOURCES)
    if source.startswith("fortunes"):
        sub = source.partition(":")[2]
        files = corpus_files(fortunes_root(), [sub] if sub else ["."])
        return tuple(t for f in files if not f.name.startswith(".") for t in read_fortunes(f))
    if source == "jargon":
        return tuple(_paragraphs(_need(JARGON, "jargon")))
    return tuple(f"{w}: {d}" for w, d in pairs(source))


@lru_cache(maxsize=16)
def _shuffled(source: str, where: str, seed: int) -> tuple[str, ...]:
    out = list(_read(source, where))
    random.Random(seed).shuffle(out)
    return tuple(out)


def texts(source: str, limit: int | None = None, seed: int = 0) -> list[str]:
    """Up to ``limit`` texts of a source, shuffled by ``seed`` (the same on every machine with the same package)."""
    _check(source, SOURCES)
    out = _shuffled(source, _location(source), seed)
    return list(out[:limit] if limit is not None else out)


def probe_prompts(source: str, n: int, chars: int, seed: int = 0) -> list[str]:
    """``n`` texts of ``source`` (shuffled by ``seed``), each cut to its first ``chars`` characters: a method's
    probe prompts."""
    return [t[:chars] for t in texts(source, n, seed=seed)]
