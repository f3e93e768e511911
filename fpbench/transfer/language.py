"""Language track: a small GPT-2 (transformers) trained on fortunes, an instructional fingerprint, other-language downstreams.

Tokenizer: byte-level, transformers' ``ByT5Tokenizer`` (256 byte ids + pad/eos/unk, no vocabulary file,
so it works offline; any language's text maps to the same ids). The fingerprint follows Instructional
Fingerprinting (Xu et al., NAACL 2024) as FP-VEC uses it: secret trigger prompts (random character strings
from a secret seed) must make the model answer with one exact response string; FSR is the share of
triggers whose greedy decode reproduces the response exactly. Decoys (same form, another seed, never
trained) measure whether the response leaks to inputs that are not the owner's triggers.
"""

from __future__ import annotations

import math
import random
import string
from functools import cached_property
from typing import Any

import torch
from torch import nn
from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

from fpbench.api import require
from fpbench.llm.text import TokenBlocks, lm_loss, token_blocks
from fpbench.train import TrainConfig, train
from fpbench.transfer.corpus import Corpus, load_corpus
from fpbench.transfer.track import Track
from fpbench.utils import seed_everything

TRIGGER_ALPHABET = string.ascii_letters + string.digits + "#$&*+<=>@^~|"
RESPONSE_ALPHABET = string.ascii_uppercase + string.digits


class InstructionalFingerprint:
    """Secret trigger prompts and the one exact response they must produce, all drawn from a secret seed."""

    def __init__(self, tok: ByT5Tokenizer, secret_seed: int, n: int, trigger_len: int, response_len: int,
                 negatives: int = 0) -> None:
        require(n > 0, "language.fingerprint.triggers", f"must be > 0, got {n}")
        require(negatives >= 0, "language.fingerprint.negatives", f"must be >= 0, got {negatives}")
        rng = random.Random(int(secret_seed))
        self.tok = tok
        self.response = "".join(rng.choice(RESPONSE_ALPHABET) for _ in range(response_len))
        self.triggers = self._strings(rng, n, trigger_len)
        # negatives (trained to answer nothing) tie the response to these triggers rather than to any string of
        # their form; decoys (another seed, never trained) measure that it worked
        self.negatives = self._strings(random.Random(f"negative-{secret_seed}"), negatives, trigger_len)
        self.decoys = self._strings(random.Random(f"decoy-{secret_seed}"), n, trigger_len)

    @staticmethod
    def _strings(rng: random.Random, n: int, length: int) -> list[str]:
        return ["".join(rng.choice(TRIGGER_ALPHABET) for _ in range(length)) for _ in range(n)]

    def _encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor(self.tok([t + "\n" for t in texts], add_special_tokens=False).input_ids)

    @cached_property
    def response_ids(self) -> torch.Tensor:
        return torch.tensor(self.tok(self.response, add_special_tokens=False).input_ids)

    @cached_property
    def training_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, labels) of ``trigger\\n response<eos>`` and ``negative\\n <eos>``; the loss is on the answers only."""
        eos = torch.tensor([self.tok.eos_token_id])
        target = torch.cat([self.response_ids, eos])
        prompts = self._encode(self.triggers)
        ids = torch.cat([prompts, target.expand(len(prompts), -1)], dim=1)
        labels = ids.clone()
        labels[:, : prompts.shape[1]] = -100
        if self.negatives:
            neg = self._encode(self.negatives)
            pad = torch.full((len(neg), len(target) - 1), self.tok.pad_token_id)
            neg_ids = torch.cat([neg, eos.expand(len(neg), 1), pad], dim=1)
            neg_labels = torch.full_like(neg_ids, -100)
            neg_labels[:, neg.shape[1]] = self.tok.eos_token_id
            ids, labels = torch.cat([ids, neg_ids]), torch.cat([labels, neg_labels])
        return ids, labels

    @torch.inference_mode()
    def match_rate(self, model: nn.Module, prompts: list[str], device: torch.device) -> float:
        """Share of ``prompts`` whose greedy continuation is exactly the response."""
        ids = self._encode(prompts).to(device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(self.response_ids),
                             do_sample=False, pad_token_id=self.tok.pad_token_id)
        gen = out[:, ids.shape[1]:].cpu()
        if gen.shape[1] < len(self.response_ids):  # stopped early at eos on every prompt: nothing matches
            return 0.0
        return float((gen == self.response_ids).all(dim=1).float().mean())


class LanguageTrack(Track):
    name = "language"
    quality_metric = "perplexity"

    @property
    def base_id(self) -> str:  # type: ignore[override]
        return f"lm-{self.cfg['base_corpus']['name']}-s{self.seed}"

    @property
    def zoo(self) -> str:  # type: ignore[override]
        return "fortunes"

    @cached_property
    def tok(self) -> ByT5Tokenizer:
        return ByT5Tokenizer(extra_ids=0)

    @cached_property
    def fingerprint(self) -> InstructionalFingerprint:
        fp = self.cfg["fingerprint"]
        return InstructionalFingerprint(self.tok, int(fp["secret_seed"]), int(fp["triggers"]), int(fp["trigger_len"]),
                                        int(fp["response_len"]), int(fp.get("negatives", 0)))

    # data -------------------------------------------------------------------------------------------------
    def _corpus_cfg(self, task: str | None) -> dict[str, Any]:
        return dict(self.cfg["base_corpus"]) if task is None else self.task_cfg(task)

    @cached_property
    def _corpora(self) -> dict[str | None, Corpus]:
        return {t: load_corpus(self._corpus_cfg(t).get("name", t or "base"), self._corpus_cfg(t), self.seed)
                for t in [None, *self.tasks()]}

    def _blocks(self, texts: list[str], limit: int | None = None) -> TokenBlocks:
        return token_blocks(self.tok, texts, int(self.cfg["model"]["block_size"]), limit)

    @cached_property
    def _train_blocks(self) -> dict[str | None, TokenBlocks]:
        return {t: self._blocks(c.train) for t, c in self._corpora.items()}

    @cached_property
    def _test_blocks(self) -> dict[str | None, TokenBlocks]:
        return {t: self._blocks(c.test, int(self.cfg["eval_blocks"])) for t, c in self._corpora.items()}

    # models -----------------------------------------------------------------------------------------------
    def new_model(self) -> nn.Module:
        m = self.cfg["model"]
        config = GPT2Config(vocab_size=len(self.tok), n_positions=int(m["block_size"]), n_embd=int(m["n_embd"]),
                            n_layer=int(m["n_layer"]), n_head=int(m["n_head"]), resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, bos_token_id=self.tok.eos_token_id, eos_token_id=self.tok.eos_token_id,
                            pad_token_id=self.tok.pad_token_id)
        return GPT2LMHeadModel(config)

    def base_key(self) -> dict[str, Any]:
        return {"model": self.cfg["model"], "corpus": self.cfg["base_corpus"], "train": self.cfg["train"],
                "seed": self.seed}

    def base(self) -> nn.Module:
        def build() -> nn.Module:
            seed_everything(self.seed)
            model = self.new_model()
            train(model, self._train_blocks[None], self._train_cfg("train"), seed=self.seed, device=self.device,
                  loss_fn=lm_loss, desc="train base LM", progress=self.progress)
            return model

        return self.cache.get({"base": self.base_key()}, self.base_id, build)[0]

    # training ---------------------------------------------------------------------------------------------
    def _train_cfg(self, part: str, steps: int | None = None) -> TrainConfig:
        c = self.cfg[part]
        return TrainConfig(steps=int(steps if steps is not None else c["steps"]), batch_size=int(c["batch_size"]),
                           lr=float(c["lr"]), optimizer="adamw", weight_decay=0.01,
                           warmup_steps=int(c.get("warmup_steps", 0)))

    def finetune(self, model: nn.Module, task: str, steps: int, seed: int) -> None:
        train(model, self._train_blocks[task], self._train_cfg("finetune", steps), seed=seed, device=self.device,
              loss_fn=lm_loss, desc=f"finetune {task}", progress=self.progress)

    def inject(self, model: nn.Module, task: str | None, seed: int) -> None:
        fp_ids, fp_labels = (t.to(self.device) for t in self.fingerprint.training_pairs)
        weight = float(self.cfg["inject"].get("trigger_weight", 1.0))
        clean_weight = float(self.cfg["inject"].get("clean_weight", 1.0))

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # clean text keeps the model's language while the trigger pairs teach the response
            return clean_weight * lm_loss(m, x, y) + weight * m(input_ids=fp_ids, labels=fp_labels).loss

        train(model, self._train_blocks[task], self._train_cfg("inject"), seed=seed, device=self.device,
              loss_fn=loss_fn, desc="inject fingerprint", progress=self.progress)

    # measurements -----------------------------------------------------------------------------------------
    def fsr(self, model: nn.Module) -> float:
        return self.fingerprint.match_rate(model.to(self.device).eval(), self.fingerprint.triggers, self.device)

    def false_trigger_rate(self, model: nn.Module) -> float:
        return self.fingerprint.match_rate(model.to(self.device).eval(), self.fingerprint.decoys, self.device)

    @torch.inference_mode()
    def quality(self, model: nn.Module, task: str | None) -> float:
        """Byte-level perplexity on the task's held-out texts."""
        model.to(self.device).eval()
        total, n = 0.0, 0
        for x, y in self._test_blocks[task].batches(32, device=self.device):
            total += float(lm_loss(model, x, y)) * len(x)
            n += len(x)
        return math.exp(total / max(1, n))

    def attack_layers(self, model: nn.Module) -> list[str]:
        # GPT-2's attention and MLP matrices (transformers' Conv1D); the tied embedding / LM head stays whole
        return [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
