"""LeaFBench's distillation of language models: a family's base fine-tuned on another family's generations. The
teacher -- the next root of another architecture in the zoo (``partner_arch = "other"``) -- continues the first
``prompt_chars`` bytes of each of ``queries`` token blocks of ``split`` (sampled at ``temperature``, seeded), and the
parent is fine-tuned on those prompt + continuation texts.

Label policy (LeaFBench's): the child is a positive for its own root only; for the teacher's root it is a negative
(the teacher is recorded in the child's info, not as a parent: no lineage edge). A method that scores it high
against the teacher's owner is recognising borrowed behaviour, which the tables show as a false positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fpbench.api import ModelSpec, Transform, TransformContext, TransformResult, require
from fpbench.llm.models import hf_model
from fpbench.llm.text import token_blocks, tokenizer_of
from fpbench.train import TrainingParams, train


@dataclass(frozen=True)
class GenDistillParams(TrainingParams):
    split: str = "train_c"  # where the prompts come from
    queries: int = 400  # prompts sent to the teacher
    prompt_chars: int = 16
    max_new_tokens: int = 40
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.queries >= 1 and self.prompt_chars >= 1 and self.max_new_tokens >= 1, "queries",
                "queries, prompt_chars and max_new_tokens must be >= 1")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


class GenDistill(Transform):
    Params = GenDistillParams
    p: GenDistillParams
    version = "1"
    modalities = ("language",)
    partners = 1
    partner_arch = "other"
    partner_is_parent = False

    @torch.no_grad()
    def generations(self, teacher: nn.Module, prompts: list[str], ctx: TransformContext, tok: Any) -> list[str]:
        net = hf_model(teacher).to(ctx.device).eval()  # a zoo's models share one tokenizer: the teacher reads ``tok``
        out: list[str] = []
        for i in range(0, len(prompts), 32):
            enc = tok(prompts[i : i + 32], add_special_tokens=False, padding=True, return_tensors="pt")
            torch.manual_seed(ctx.seed + i)
            ids = net.generate(input_ids=enc.input_ids.to(ctx.device), attention_mask=enc.attention_mask.to(ctx.device),
                               max_new_tokens=self.p.max_new_tokens, do_sample=True, temperature=self.p.temperature,
                               top_k=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            out += tok.batch_decode(ids, skip_special_tokens=True)
        return out

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        require(ctx.partner is not None, "partner", "gen_distill needs the zoo to pass the teacher (ctx.partner)")
        blocks = ctx.data.split(p.split).blocks.ids
        require(len(blocks) >= p.queries, "queries",
                f"split '{p.split}' has {len(blocks)} token blocks, fewer than {p.queries}")
        tok = tokenizer_of(spec)  # each prompt: the first prompt_chars tokens of a block of the split
        prompts = [tok.decode(row[: p.prompt_chars], skip_special_tokens=True) or " " for row in blocks[: p.queries]]
        generated = self.generations(ctx.partner, prompts, ctx, tok)
        corpus = token_blocks(tok, generated, int(spec.input.get("block_size", 64)))
        stats = train(model, corpus, p.train_config(), seed=ctx.seed, device=ctx.device, desc="gen distill",
                      progress=ctx.progress)
        return TransformResult(model, spec, {"teacher_generations": len(generated), "blocks": len(corpus),
                                             "finetune_loss": stats["final_loss"], "steps": int(stats["steps"])})
