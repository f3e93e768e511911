"""Text as language models see it here: a byte-level tokenizer (transformers' ``ByT5Tokenizer``: 256 byte ids +
pad/eos/unk, no vocabulary file, so it works offline and maps any language's text to the same ids), a pretrained
model's own tokenizer where a tier has one (``tokenizer_for``), and fixed-length token blocks for training."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import torch
from torch import nn
from transformers import ByT5Tokenizer

TOKENIZERS = ("byte", "smollm2")


@cache
def tokenizer_for(name: str = "byte") -> Any:
    """The tokenizer a language task is tokenized with (``data.tokenizer``; every model of a zoo shares it), left
    padding: ``byte`` (the default) or ``smollm2`` (SmolLM2's own 49152-token BPE, read from its GGUF file)."""
    if name == "byte":
        return byte_tokenizer()
    if name == "smollm2":
        from fpbench.llm.pretrained import load_smollm2_tokenizer

        tok = load_smollm2_tokenizer()
        tok.padding_side = "left"
        return tok
    from fpbench.errors import ConfigError

    raise ConfigError(f"unknown tokenizer '{name}'; valid tokenizers: {', '.join(TOKENIZERS)}")


def tokenizer_of(spec: Any) -> Any:
    """The tokenizer of a language model's spec (``spec.input['tokenizer']``, byte-level when absent)."""
    return tokenizer_for(str((getattr(spec, "input", None) or {}).get("tokenizer", "byte")))


def byte_tokenizer() -> ByT5Tokenizer:
    """The byte-level tokenizer every language model of the harness shares (padding on the left, so the last
    position of a batch row is its prompt's last token and generation continues every row from its own end)."""
    tok = ByT5Tokenizer(extra_ids=0)
    tok.padding_side = "left"
    return tok


class TokenBlocks:
    """Fixed-length rows of token ids with a training target per row; ``batches`` serves (ids, targets) as
    ``fpbench.train.train`` expects of a dataset. Targets default to the ids themselves (next-token training:
    transformers shifts them); a transform may give others (masked labels, row indices into a teacher's outputs)."""

    def __init__(self, ids: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        self.ids = ids  # [N, T] int64
        self.targets = ids if targets is None else targets

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            rows = order[start : start + batch_size]
            yield self.ids[rows].to(device), self.targets[rows].to(device)


def token_blocks(tok: ByT5Tokenizer, texts: list[str], block_size: int, limit: int | None = None) -> TokenBlocks:
    """``texts`` joined into one stream (each ended by eos) and cut into ``block_size`` blocks (at most ``limit``)."""
    stream: list[int] = []
    for ids in tok(texts, add_special_tokens=False).input_ids:
        stream += [*ids, tok.eos_token_id]
        if limit is not None and len(stream) >= limit * block_size:
            break
    n = len(stream) // block_size
    if limit is not None:
        n = min(n, limit)
    return TokenBlocks(torch.tensor(stream[: n * block_size]).view(n, block_size))


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (transformers shifts the labels inside)."""
    return model(input_ids=x, labels=y).loss


@torch.no_grad()
def token_accuracy(model: nn.Module, tok: ByT5Tokenizer, texts: list[str], device: torch.device | str = "cpu",
                   batch_size: int = 64) -> float:
    """Greedy next-token accuracy of a transformers causal LM on ``texts`` (each tokenized alone, left-padded as
    every prompt is): the language task's accuracy, the same number at build time and through a subject."""
    model.eval()
    correct = total = 0
    for start in range(0, len(texts), batch_size):
        enc = tok(texts[start : start + batch_size], add_special_tokens=False, padding=True, return_tensors="pt")
        ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
        pred = model(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
        keep = (mask[:, :-1] * mask[:, 1:]).bool()  # a real token predicting the next real token
        correct += int((pred == ids[:, 1:])[keep].sum())
        total += int(keep.sum())
    return correct / max(1, total)
