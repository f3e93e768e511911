"""Instruct tuning (supervised fine-tuning) of a language model: LeaFBench's "instruct" derivation. The parent
learns to answer ``Define <word>:`` with the word's dictionary definition -- (word, definition) pairs read from
a split of the zoo's text task whose texts are ``word: definition`` (GCIDE or WordNet, ``fpbench.llm.corpora``) --
with the loss on the answer's tokens only (the prompt's labels are -100, as in TRL's completion-only training).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult
from fpbench.llm.text import byte_tokenizer
from fpbench.train import TrainingParams, train

PROMPT = "Define {word}:"


class _Examples:
    """(ids, labels) rows: prompt and answer right-padded to one length, labels -100 outside the answer."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            rows = order[start : start + batch_size]
            yield self.ids[rows].to(device), self.labels[rows].to(device)


def examples(texts: list[str], length: int) -> _Examples:
    """Instruction examples of ``word: definition`` texts, each cut to ``length`` tokens."""
    tok = byte_tokenizer()
    rows, labels = [], []
    for text in texts:
        word, sep, definition = text.partition(": ")
        if not sep or not definition:
            continue
        prompt = tok(PROMPT.format(word=word), add_special_tokens=False).input_ids
        answer = tok(" " + definition, add_special_tokens=False).input_ids + [tok.eos_token_id]
        ids = (prompt + answer)[:length]
        label = ([-100] * len(prompt) + answer)[:length]
        pad = length - len(ids)
        rows.append(ids + [tok.pad_token_id] * pad)
        labels.append(label + [-100] * pad)
    return _Examples(torch.tensor(rows), torch.tensor(labels))


@dataclass(frozen=True)
class SFTParams(TrainingParams):
    pass  # split train_b (the definitions), steps, lr, batch size, optimizer: TrainingParams


class SFT(Transform):
    Params = SFTParams
    p: SFTParams
    version = "1"
    modalities = ("language",)

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        data = examples(ctx.data.split(p.split).texts, int(spec.input.get("block_size", 64)))
        if not len(data):
            raise NotApplicable(f"instruct: split '{p.split}' holds no 'word: definition' texts; give it a "
                                "dictionary source (gcide or wordnet)")
        stats = train(model, data, p.train_config(), seed=ctx.seed, device=ctx.device, desc="instruct",
                      progress=ctx.progress)
        return TransformResult(model, spec, {"instruct_examples": len(data), "finetune_loss": stats["final_loss"],
                                             "steps": int(stats["steps"])})
