"""A language model as a fingerprinting method reaches it: prompts in, next-token logits, generated text, hidden
states per layer, gradients and canonical weights out -- each cut to the method's declared access level and
counted against its query budget (prompts sent, and tokens generated).

Access levels are the vision subject's (``fpbench.api.ACCESS_LEVELS``): generation is what a black-box API with
text output gives ("black-box labels"), next-token logits "black-box probabilities", hidden states "white-box
features", gradients and weights "white-box weights". A query over the access or over a budget raises
:class:`AccessViolation` / :class:`QueryBudgetExceeded` before the model runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import ByT5Tokenizer, LogitsProcessor, LogitsProcessorList

from fpbench.errors import AccessViolation, QueryBudgetExceeded
from fpbench.llm.deploy import Deployment
from fpbench.llm.models import canonical_gradients, canonical_weights, hf_model, num_layers
from fpbench.llm.text import token_accuracy
from fpbench.subject import allows


class _Noise(LogitsProcessor):
    """A deployment's logit noise on every generation step (seeded per call and step)."""

    def __init__(self, deployment: Deployment, salt: int) -> None:
        self.deployment, self.salt, self.step = deployment, salt, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.step += 1
        return self.deployment.noise(scores, salt=self.salt * 10_007 + self.step)


# each query of this interface, as the vision subject's query it needs the same access for
_AS_VISION_QUERY = {"generate": "labels", "next_token_logits": "logits", "hidden_states": "activations",
                    "gradients": "named_weights", "named_weights": "named_weights"}


class LMSubject:
    """A causal LM behind a budgeted, access-limited query interface."""

    def __init__(self, id: str, model: nn.Module, tokenizer: ByT5Tokenizer, device: torch.device,
                 access: str = "white-box weights", prompt_budget: int | None = None,
                 token_budget: int | None = None, batch_size: int = 64, spec: Any = None,
                 owner_private: dict[str, Any] | None = None) -> None:
        self.id = id
        self._model = hf_model(model).to(device).eval()  # the transformers model (a zoo LanguageModel unwrapped)
        self.spec = spec  # the zoo's ModelSpec when the harness made the subject
        self.deployment = Deployment.of(spec)  # a deployment variant's API behaviour, applied to black-box queries
        self.owner_private: dict[str, Any] = dict(owner_private or {})
        self.tok = tokenizer
        self.device = device
        self.access = access
        self.prompt_budget, self.token_budget = prompt_budget, token_budget
        self.prompts_sent = 0
        self.tokens_generated = 0
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"LMSubject({self.id!r}, {self._model.config.model_type})"

    @property
    def model(self) -> nn.Module:
        """The transformers model itself, for a method with white-box access (a black-box method that reaches for
        it fails, as a vision suspect's ``.model`` does)."""
        if not allows(self.access, "activations"):
            raise AccessViolation(f"{self.id}: a method of access '{self.access}' reached for the model itself; a "
                                  "black-box method queries the suspect only through next_token_logits / generate")
        return self._model

    @property
    def query_count(self) -> int:
        """Prompts sent so far (the harness records it as a pair's queries)."""
        return self.prompts_sent

    def view(self, access: str, prompt_budget: int | None = None) -> LMSubject:
        """The same model as a suspect reached by a method of ``access`` (its counters start at zero): what the
        harness passes to ``score``."""
        return LMSubject(self.id, self._model, self.tok, self.device, access=access, prompt_budget=prompt_budget,
                         batch_size=self.batch_size, spec=self.spec)

    # ------------------------------------------------------------------ accounting
    def _allow(self, query: str) -> None:
        if not allows(self.access, _AS_VISION_QUERY[query]):
            raise AccessViolation(f"{self.id}: '{query}' needs more than this method's declared access "
                                  f"('{self.access}'); declare a higher access level or use another query")

    def charge(self, prompts: int, tokens: int = 0) -> None:
        """Count queries a method answers from what it already got from this model (``AnswerMemo``)."""
        self._spend(prompts, tokens)

    def _spend(self, prompts: int, tokens: int = 0) -> None:
        if self.prompt_budget is not None and self.prompts_sent + prompts > self.prompt_budget:
            raise QueryBudgetExceeded(f"{self.id}: {prompts} more prompts would bring the total to "
                                      f"{self.prompts_sent + prompts}, over the prompt budget of {self.prompt_budget}")
        if self.token_budget is not None and self.tokens_generated + tokens > self.token_budget:
            raise QueryBudgetExceeded(f"{self.id}: generating {tokens} more tokens would bring the total to "
                                      f"{self.tokens_generated + tokens}, over the token budget of {self.token_budget}")
        self.prompts_sent += prompts
        self.tokens_generated += tokens

    def _encode(self, prompts: list[str], room: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask, each prompt cut from the left to the model's context less ``room`` (tokens to
        generate): a model with learned positions (GPT-2) cannot read past its context."""
        cfg = self._model.config
        context = int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 0) or 0)
        enc = self.tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
        ids, mask = enc.input_ids, enc.attention_mask
        if context and ids.shape[1] > context - room:
            keep = max(1, context - room)
            ids, mask = ids[:, -keep:], mask[:, -keep:]  # left padding: the last positions are every prompt's end
        return ids.to(self.device), mask.to(self.device)

    def _chunks(self, prompts: list[str]) -> list[list[str]]:
        return [prompts[i : i + self.batch_size] for i in range(0, len(prompts), self.batch_size)]

    # ------------------------------------------------------------------ queries
    def token_accuracy(self, texts: list[str]) -> float:
        """Greedy next-token accuracy on ``texts``, tokenized as every prompt is: the task-accuracy check the
        harness makes through the query pipeline before a model is scored (not counted against the budget)."""
        return token_accuracy(self._model, self.tok, texts, self.device, self.batch_size)

    @torch.no_grad()
    def next_token_logits(self, prompts: list[str]) -> torch.Tensor:
        """[N, vocab] logits of the token after each prompt."""
        self._allow("next_token_logits")
        self._spend(len(prompts))
        out = []
        for i, chunk in enumerate(self._chunks(self._served(prompts))):
            ids, mask = self._encode(chunk)
            logits = self._model(input_ids=ids, attention_mask=mask).logits[:, -1].float().cpu()
            out.append(self.deployment.noise(logits, salt=i) if self.deployment else logits)
        return torch.cat(out)

    def _served(self, prompts: list[str]) -> list[str]:
        """What the model is given for black-box ``prompts``: a deployment's system prompt and paraphrase."""
        return self.deployment.prompts(prompts) if self.deployment else prompts

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int, *, sample: bool = False, temperature: float = 1.0,
                 top_k: int = 0, seed: int = 0) -> list[str]:
        """Each prompt's continuation (text), greedy or sampled; sampling is seeded, so the same call gives the
        same text. The budget counts ``max_new_tokens`` per prompt (the most it can generate)."""
        self._allow("generate")
        self._spend(len(prompts), len(prompts) * max_new_tokens)
        deployed = self.deployment
        if deployed and deployed.temperature is not None:  # the API's sampling settings, not the caller's
            sample, temperature = True, deployed.temperature
        texts: list[str] = []
        for i, chunk in enumerate(self._chunks(self._served(prompts))):
            ids, mask = self._encode(chunk, room=max_new_tokens)
            kwargs = {"do_sample": True, "temperature": temperature, "top_k": top_k} if sample else {
                "do_sample": False}
            if deployed and deployed.logit_noise:
                kwargs["logits_processor"] = LogitsProcessorList([_Noise(deployed, seed + i)])
            torch.manual_seed(seed + i)
            out = self._model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id,
                                      **kwargs)
            texts += self.tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        return texts

    @torch.no_grad()
    def hidden_states(self, prompts: list[str], layers: list[int] | None = None,
                      pool: str = "last") -> dict[int, torch.Tensor]:
        """Per layer (0 = the embeddings, L = the last block's output), [N, hidden] states of each prompt's last
        token (``pool='last'``) or the mean over its tokens (``'mean'``)."""
        self._allow("hidden_states")
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
        wanted = list(range(num_layers(self._model) + 1)) if layers is None else list(layers)
        self._spend(len(prompts))
        out: dict[int, list[torch.Tensor]] = {i: [] for i in wanted}
        for chunk in self._chunks(prompts):
            ids, mask = self._encode(chunk)
            states = self._model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            for i in wanted:
                h = states[i].float()
                if pool == "last":
                    out[i].append(h[:, -1].cpu())  # left padding: the last position is every prompt's last token
                else:
                    m = mask.unsqueeze(-1).float()
                    out[i].append(((h * m).sum(1) / m.sum(1)).cpu())
        return {i: torch.cat(v) for i, v in out.items()}

    def gradients(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Gradients of the mean next-token loss on ``texts`` with respect to every canonical weight."""
        self._allow("gradients")
        self._spend(len(texts))
        self._model.zero_grad(set_to_none=True)
        ids, mask = self._encode(texts)
        labels = ids.masked_fill(mask == 0, -100)  # padding is not predicted
        self._model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads = {k: g.detach().float().cpu().clone() for k, g in canonical_gradients(self._model).items()}
        self._model.zero_grad(set_to_none=True)
        return grads

    def named_weights(self) -> dict[str, torch.Tensor]:
        """Every canonical weight (detached copies)."""
        self._allow("named_weights")
        return {k: v.detach().float().cpu().clone() for k, v in canonical_weights(self._model).items()}



class AnswerMemo:
    """Answers a black-box method got from a suspect, kept for the suspect's pairs with other owners: when the
    queries do not depend on the owner (fixed prompts, seeded sampling), asking again returns the same answers, so
    each suspect is asked once. Every pair is still charged the queries its verdict rests on (budgets are per pair).
    Keys: the suspect's id and spec (a deployment variant is another suspect) and the caller's key."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str, Any], Any] = {}

    def get(self, subject: Any, key: Any, compute: Any, prompts: int, tokens: int = 0) -> Any:
        import json

        if not getattr(subject, "id", None):  # a stand-in without an identity: nothing to key its answers by
            return compute()
        spec = getattr(subject, "spec", None)
        k = (str(subject.id), json.dumps(spec.to_dict() if spec is not None else None, sort_keys=True, default=str),
             key)
        if k in self._memo:
            charge = getattr(subject, "charge", None)
            if charge is not None:
                charge(prompts, tokens)
            return self._memo[k]
        self._memo[k] = value = compute()
        return value
