"""Instruct tuning (supervised fine-tuning) of a language model: LeaFBench's "instruct" derivation. The parent
learns to answer ``Define <word>:`` with the word's dictionary definition -- (word, definition) pairs read from
a split of the zoo's text task whose texts are ``word: definition`` (GCIDE or WordNet, ``fpbench.llm.corpora``) --
with the loss on the answer's tokens only (the prompt's labels are -100, as in TRL's completion-only training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformResult
from fpbench.llm.text import TokenBlocks, tokenizer_of
from fpbench.train import TrainingParams, train

PROMPT = "Define {word}:"


def examples(texts: list[str], length: int, tok: Any) -> TokenBlocks:
    """Instruction examples of ``word: definition`` texts, each cut to ``length`` tokens: prompt and answer
    right-padded to one length, targets -100 outside the answer (``tok``: the zoo's tokenizer)."""
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
    return TokenBlocks(torch.tensor(rows), targets=torch.tensor(labels))


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
        data = examples(ctx.data.split(p.split).texts, int(spec.input.get("block_size", 64)), tokenizer_of(spec))
        if not len(data):
            raise NotApplicable(f"instruct: split '{p.split}' holds no 'word: definition' texts; give it a "
                                "dictionary source (gcide or wordnet)")
        stats = train(model, data, p.train_config(), seed=ctx.seed, device=ctx.device, desc="instruct",
                      progress=ctx.progress)
        return TransformResult(model, spec, {"instruct_examples": len(data), "finetune_loss": stats["final_loss"],
                                             "steps": int(stats["steps"])})
