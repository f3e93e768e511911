"""The language task of the LLM zoo: named splits of text from Debian's packages, as a data bundle the zoo, the
training loop and the evaluation read like the vision bundle (``fpbench.data.DataBundle``).

A zoo config's ``data`` section (``name: text``) gives each split a source of ``fpbench.llm.corpora`` and a size,
``blocks`` (fixed-length token blocks for training) or ``texts`` (single texts for probing and testing)::

    data: {name: text, block_size: 64, seed: 0,
           splits: {train_a: {source: fortunes, blocks: 600}, test: {source: fortunes, texts: 200}, ...}}

Splits of one source take consecutive runs of its texts (shuffled once by ``seed``): disjoint by construction. The
task's accuracy is greedy next-token accuracy on the ``test`` texts (``fpbench.llm.text.token_accuracy``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from fpbench.errors import ConfigError
from fpbench.llm import corpora
from fpbench.llm.models import hf_model
from fpbench.llm.text import TokenBlocks, token_accuracy, token_blocks, tokenizer_for


def _cut(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes (byte-level tokens), never inside a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


@dataclass
class TextSplit:
    """One split: its texts and the token blocks they make. ``batches`` / ``tensor`` serve token ids."""

    texts: list[str]
    blocks: TokenBlocks
    tokenizer: str = "byte"  # fpbench.llm.text.tokenizer_for

    def __len__(self) -> int:
        return len(self.blocks)

    def batches(self, batch_size: int, **kwargs: Any):  # noqa: ANN201 - TokenBlocks.batches
        return self.blocks.batches(batch_size, **kwargs)

    def tensor(self, idx: torch.Tensor | slice | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        ids = self.blocks.ids if idx is None else self.blocks.ids[idx]
        return ids.to(device)

    def accuracy(self, model: nn.Module, device: torch.device | str = "cpu") -> float:
        """Greedy next-token accuracy of ``model`` on this split's texts (``fpbench.train.accuracy`` asks)."""
        return token_accuracy(hf_model(model).to(device), tokenizer_for(self.tokenizer), self.texts, device)


@dataclass
class TextBundle:
    """The language task: splits of text on one tokenizer every model of the zoo shares (``data.tokenizer``, byte-level
    by default; ``num_classes`` is its vocabulary)."""

    id: str
    name: str
    block_size: int
    splits: dict[str, TextSplit]
    sources: dict[str, str] = field(default_factory=dict)  # split -> its corpus source
    modality: str = "language"
    class_names: list[str] = field(default_factory=list)  # a language model predicts tokens, not named classes
    tokenizer: str = "byte"

    @property
    def num_classes(self) -> int:
        return len(tokenizer_for(self.tokenizer))

    def split(self, name: str) -> TextSplit:
        if name not in self.splits:
            raise ConfigError(f"data split '{name}' not in {self.name}; splits: {', '.join(self.splits)}")
        return self.splits[name]

    def input_spec(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "tokenizer": self.tokenizer}


def _split_size(name: str, spec: dict[str, Any]) -> tuple[str, int]:
    kinds = [k for k in ("blocks", "texts") if k in spec]
    if "source" not in spec or len(kinds) != 1:
        raise ConfigError(f"data.splits.{name}: give a source and one of blocks (training) or texts (probe, test), "
                          f"e.g. {{source: fortunes, blocks: 600}}; got {spec}")
    return kinds[0], int(spec[kinds[0]])


def _token_count(tok: Any, tokenizer: str, text: str) -> int:
    """Tokens of ``text``: its UTF-8 bytes for the byte-level tokenizer (no call needed), else the tokenizer's."""
    if tokenizer == "byte":
        return len(text.encode("utf-8"))
    return len(tok(text, add_special_tokens=False).input_ids)


@lru_cache(maxsize=4)
def _load(frozen: str) -> TextBundle:
    cfg = json.loads(frozen)
    block = int(cfg.get("block_size", 64))
    seed = int(cfg.get("seed", 0))
    tokenizer = str(cfg.get("tokenizer", "byte"))
    tok = tokenizer_for(tokenizer)
    pools: dict[str, list[str]] = {}
    used: dict[str, int] = {}
    splits: dict[str, TextSplit] = {}
    sources: dict[str, str] = {}
    for name, spec in cfg["splits"].items():
        kind, n = _split_size(name, spec)
        source = str(spec["source"])
        pool = pools.setdefault(source, corpora.texts(source, seed=seed))
        start = used.get(source, 0)
        if kind == "texts":
            texts = [_cut(t, block) for t in pool[start : start + n]]
            taken = len(texts)
            blocks = token_blocks(tok, texts, block)
        else:  # enough texts for n blocks of block_size tokens (each text ends with eos)
            taken, tokens = 0, 0
            while start + taken < len(pool) and tokens < n * block:
                tokens += _token_count(tok, tokenizer, pool[start + taken]) + 1
                taken += 1
            texts = pool[start : start + taken]
            blocks = token_blocks(tok, texts, block, limit=n)
        if (kind == "texts" and taken < n) or (kind == "blocks" and len(blocks) < n):
            raise ConfigError(f"data.splits.{name}: source '{source}' has {len(pool) - start} texts left after the "
                              f"splits before it, too few for {n} {kind}; shrink the split or use another source")
        used[source] = start + taken
        splits[name] = TextSplit(texts, blocks, tokenizer)
        sources[name] = source
    digest = hashlib.sha256(frozen.encode()).hexdigest()[:10]
    return TextBundle(id=f"text-{block}-{digest}", name="text", block_size=block, splits=splits, sources=sources,
                      tokenizer=tokenizer)


def load_text_bundle(cfg: dict[str, Any]) -> TextBundle:
    """The (memoised) language task a zoo config's ``data`` section describes."""
    return _load(json.dumps(dict(cfg), sort_keys=True, default=str))
