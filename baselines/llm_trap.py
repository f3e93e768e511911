"""TRAP, targeted random adversarial prompts (Gubri et al., "TRAP: Targeted Random Adversarial Prompt Honeypot for
Black-Box Identification", Findings of ACL 2024; LeaFBench ``fingerprint/trap/``): the owner asks for a random
string of ``digits`` digits; for each of ``goals`` target strings, an adversarial suffix is optimised with GCG
(Zou et al. 2023) on the owner's own weights so that the owner answers with exactly that string; a suspect is
given the suffixed prompts ``tests`` times each (sampled) and the score is the share of answers that contain
their target (a model that merely answers "random digits" hits a given 3-digit string once in a thousand).

As in LeaFBench: 10 goals of 3 digits ("number_simpletarget": the target is the digits alone), 100 GCG steps,
one token replaced per candidate, a suffix of 20 tokens initialised as nanogcg's (``x x x ...``; here 20 bytes
of ``x``), only ASCII tokens as candidates, 5 tests per prompt, the score the share of matches.

Deviations: nanogcg (LeaFBench's GCG) pins transformers 4.47, which this harness cannot use (transformers 5), so
GCG is our own (``gcg``): per step the gradient of the target loss with respect to the suffix's one-hot tokens, the
``topk`` best replacements per position, ``search_width`` random single-token candidates evaluated exactly, the
best kept (LeaFBench's settings are topk 256 / width 512; ours 64 / 64, for the CPU and a 256-byte vocabulary). The
fingerprint records how often the owner itself answers its suffixed prompts with their targets
(``owner_hit_rate``, asked as a suspect is): where GCG found no suffix that works on the owner (a model too small to
follow the request or copy digits), the method has nothing to transfer, and the tables show it.
The zoo's models read 64 bytes of context, so the request is ``Write <digits> random digits.`` instead of
LeaFBench's longer sentence; the targets are drawn once from the seed (LeaFBench redraws them each run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fpbench.api import Fingerprint, Method, MethodParams, NotApplicable, require
from fpbench.llm.subject import AnswerMemo


@dataclass(frozen=True)
class TrapParams(MethodParams):
    goals: int = 10
    digits: int = 3
    suffix_tokens: int = 20
    steps: int = 100
    topk: int = 64
    search_width: int = 64
    tests: int = 5  # sampled answers per suffixed prompt
    max_tokens: int = 8
    temperature: float = 0.7
    threshold: float = 0.5
    query_budget: int | None = 50  # goals x tests

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.goals >= 1 and self.digits >= 1, "goals", "need >= 1 goal of >= 1 digit")
        require(self.max_tokens >= self.digits, "max_tokens", "an answer must have room for the target digits")
        require(1 <= self.topk <= 95, "topk", f"1..95 (the printable ASCII bytes), got {self.topk}")


def ascii_token_ids(tok: Any) -> torch.Tensor:
    """Ids of the printable ASCII characters (what GCG may put in a suffix)."""
    return torch.tensor([tok(chr(c), add_special_tokens=False).input_ids[0] for c in range(32, 127)])


def _target_losses(model: nn.Module, ids: torch.Tensor, start: int, target: torch.Tensor) -> torch.Tensor:
    """Per row of ``ids`` [B, T] (target at positions ``start``...): the mean cross-entropy of the target tokens."""
    logits = model(input_ids=ids).logits[:, start - 1 : start - 1 + len(target)].float()
    return F.cross_entropy(logits.transpose(1, 2), target.expand(ids.shape[0], -1), reduction="none").mean(1)


def gcg(model: nn.Module, prefix: torch.Tensor, suffix: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor,
        steps: int, topk: int, width: int, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Greedy coordinate gradient: the suffix (token ids) after ``prefix`` that makes ``target`` most likely next;
    returns the best suffix found and its loss."""
    embed = model.get_input_embeddings()
    vocab = embed.weight.shape[0]
    forbidden = torch.ones(vocab, dtype=torch.bool)
    forbidden[allowed] = False
    start = len(prefix) + len(suffix)
    best, best_loss = suffix.clone(), float("inf")
    for _ in range(steps):
        one_hot = F.one_hot(suffix, vocab).to(embed.weight.dtype).requires_grad_(True)
        inputs = torch.cat([embed(prefix), one_hot @ embed.weight, embed(target)])[None]
        logits = model(inputs_embeds=inputs).logits[0, start - 1 : start - 1 + len(target)].float()
        grad, = torch.autograd.grad(F.cross_entropy(logits, target), one_hot)
        top = (-grad.masked_fill(forbidden, float("inf"))).topk(topk, dim=1).indices  # [L, topk]
        positions = torch.randint(len(suffix), (width,), generator=generator)
        candidates = suffix.repeat(width, 1)
        candidates[torch.arange(width), positions] = top[positions, torch.randint(topk, (width,), generator=generator)]
        with torch.no_grad():
            ids = torch.cat([prefix.expand(width, -1), candidates, target.expand(width, -1)], dim=1)
            losses = _target_losses(model, ids, start, target)
        i = int(losses.argmin())
        suffix = candidates[i]
        if float(losses[i]) < best_loss:
            best, best_loss = suffix.clone(), float(losses[i])
    return best, best_loss


class LLMTrap(Method):
    Params = TrapParams
    p: TrapParams
    access = "black-box labels"
    modality = "language"
    version = "1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answers = AnswerMemo()

    def request(self) -> str:
        return f"Write {self.p.digits} random digits."

    def targets(self) -> list[str]:
        g = torch.Generator().manual_seed(self.ctx.seed)
        return ["".join(str(int(d)) for d in torch.randint(10, (self.p.digits,), generator=g)) for _ in range(self.p.goals)]

    def fingerprint(self, owner) -> Fingerprint:  # noqa: ANN001 - an LMSubject with full access
        model, tok = owner.model, owner.tok
        context = int(getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 0))
        prefix = torch.tensor(tok(self.request(), add_special_tokens=False).input_ids)
        if context and len(prefix) + self.p.suffix_tokens + self.p.max_tokens > context:
            raise NotApplicable(f"{self.name}: the request, a {self.p.suffix_tokens}-token suffix and the answer do "
                                f"not fit the model's context of {context} tokens")
        x = tok("x", add_special_tokens=False).input_ids[0]
        allowed = ascii_token_ids(tok)
        g = torch.Generator().manual_seed(self.ctx.seed)
        prompts, losses = [], []
        was_training = model.training
        model.eval()
        for target in self.targets():
            suffix, loss = gcg(model, prefix.to(owner.device),
                               torch.full((self.p.suffix_tokens,), x, device=owner.device),
                               torch.tensor(tok(target, add_special_tokens=False).input_ids, device=owner.device),
                               allowed.to(owner.device), self.p.steps, self.p.topk, self.p.search_width, g)
            prompts.append(self.request() + tok.decode(suffix.tolist()))
            losses.append(loss)
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        fp = Fingerprint(meta={"prompts": prompts, "targets": self.targets(), "gcg_losses": losses})
        fp.meta["owner_hit_rate"] = self._hits(fp, owner.view(self.access), self.ctx.seed + 2)
        return fp

    def _hits(self, fp: Fingerprint, subject, seed: int) -> float:  # noqa: ANN001
        """The share of ``subject``'s sampled answers to the suffixed prompts that contain their target."""
        prompts = [p for p in fp.meta["prompts"] for _ in range(self.p.tests)]
        targets = [t for t in fp.meta["targets"] for _ in range(self.p.tests)]

        def ask() -> list[str]:
            return subject.generate(prompts, self.p.max_tokens, sample=True, temperature=self.p.temperature, seed=seed)

        key = ("trap", seed, tuple(fp.meta["prompts"]))  # the prompts depend on the owner: once per owner x suspect
        answers = self._answers.get(subject, key, ask, len(prompts), len(prompts) * self.p.max_tokens)
        return sum(t in a for t, a in zip(targets, answers, strict=True)) / len(prompts)

    def score(self, fp: Fingerprint, suspect) -> float:  # noqa: ANN001
        return self._hits(fp, suspect, self.ctx.seed + 1)
