"""A model as a fingerprinting method reaches it: the owner in full, a suspect only through queries.

:class:`ModelSubject` is the owner's handle (the defender's own model: the module itself, gradients,
``owner_private``). :class:`SuspectView` is what a method's ``score`` gets for a suspect: the same query
interface, cut to the method's declared access level --

    black-box labels < black-box probabilities (logits, probs) < white-box features (penultimate features,
    per-layer activations) < white-box weights (effective weights; everything below too)

-- so a black-box method that asks for weights, or that reaches for ``.model``, fails with
:class:`AccessViolation` instead of scoring with more than it declared. Every query (images sent through the
model) is counted and checked against the method's query budget. Images enter in [0, 1]; the model normalises
them itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fpbench.api import ACCESS_LEVELS, ModelSpec
from fpbench.errors import AccessViolation, QueryBudgetExceeded
from fpbench.weights import effective_named_weights, normalize_name

# What each query needs, as an index into ACCESS_LEVELS counted from the least access (labels) up.
_RANK = {level: len(ACCESS_LEVELS) - 1 - i for i, level in enumerate(ACCESS_LEVELS)}
_NEEDS = {"labels": "black-box labels", "logits": "black-box probabilities", "probs": "black-box probabilities",
          "features": "white-box features", "activations": "white-box features",
          "named_weights": "white-box weights"}


def allows(access: str, query: str) -> bool:
    """Whether a method of ``access`` may make ``query`` (a name of the query interface)."""
    return _RANK[access] >= _RANK[_NEEDS[query]]


def weight_layers(trunk: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weight is a matrix or kernel, named as in the plain model (a LoRA wrapper counts as
    its layer, so a hook sees the adapted output); the same units ``named_weights`` lists."""
    out = []
    for name, sub in trunk.named_modules():
        if name.endswith(("lora_A", "lora_B", "base_layer")) or ".lora_" in name or ".base_layer" in name:
            continue
        weight = getattr(sub, "weight", None)
        if hasattr(sub, "base_layer") or (isinstance(weight, torch.Tensor) and weight.ndim >= 2
                                           and not list(sub.children())):
            out.append((normalize_name(name), sub))
    return out


class ModelSubject:
    """The owner's model with full access (and the query interface every method uses)."""

    def __init__(self, id: str, model: nn.Module, spec: ModelSpec, device: torch.device, batch_size: int = 512,
                 owner_private: dict[str, Any] | None = None) -> None:
        self.id = id
        self.model = model.to(device).eval()
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        self.query_count = 0  # input images sent through logits/probs/labels/features/activations
        self.query_budget: int | None = None  # when set, a query that would exceed it is refused, not run
        self._weights: dict[str, torch.Tensor] | None = None
        self.owner_private: dict[str, Any] = dict(owner_private or {})  # what only the owner knows

    def __repr__(self) -> str:
        return f"ModelSubject({self.id!r}, {self.spec.arch.get('name', self.spec.arch.get('builder'))})"

    def _spend(self, n: int) -> None:
        if self.query_budget is not None and self.query_count + n > self.query_budget:
            raise QueryBudgetExceeded(
                f"{self.id}: a query of {n} inputs would bring the total to {self.query_count + n}, over the "
                f"method's query_budget of {self.query_budget}; lower the method's queries or raise query_budget")
        self.query_count += n

    def _batched(self, fn: Any, x: torch.Tensor) -> torch.Tensor:
        self._spend(int(x.shape[0]))
        x = x.to(self.device)
        return torch.cat([fn(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]).float()

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._batched(self.model, x)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(-1)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(-1)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._batched(self.model.features, x)  # type: ignore[attr-defined]

    @torch.inference_mode()
    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of every weight layer of the trunk on ``x`` (conv maps averaged over space), ``{name: [n, C]}``."""
        acts: dict[str, list[torch.Tensor]] = {}

        def hook(name: str):  # noqa: ANN202
            def fn(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
                out = out.float()
                acts.setdefault(name, []).append((out.mean(dim=(2, 3)) if out.ndim == 4 else out.flatten(1)).cpu())
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in weight_layers(self.model.trunk)]  # type: ignore[attr-defined]
        try:
            self.features(x)
        finally:
            for h in handles:
                h.remove()
        return {n: torch.cat(v) for n, v in acts.items()}

    def named_weights(self) -> dict[str, torch.Tensor]:
        if self._weights is None:
            self._weights = effective_named_weights(self.model.trunk)  # type: ignore[attr-defined]
        return self._weights


class SuspectView:
    """A suspect as a method of ``access`` reaches it: the queries that access allows, nothing else."""

    def __init__(self, subject: ModelSubject, access: str, query_budget: int | None = None) -> None:
        if access not in _RANK:
            raise ValueError(f"unknown access level {access!r}; valid: {', '.join(ACCESS_LEVELS)}")
        self._subject = subject
        self.access = access
        subject.query_count, subject.query_budget = 0, query_budget
        self.id, self.spec, self.device = subject.id, subject.spec, subject.device

    def __repr__(self) -> str:
        return f"SuspectView({self.id!r}, {self.access})"

    @property
    def query_count(self) -> int:
        return self._subject.query_count

    def _allowed(self, query: str) -> ModelSubject:
        if not allows(self.access, query):
            raise AccessViolation(f"a method of access '{self.access}' asked suspect {self.id} for {query}(), "
                                  f"which needs '{_NEEDS[query]}'; declare that access or use the queries it allows")
        return self._subject

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._allowed("logits").logits(x)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self._allowed("probs").probs(x)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        return self._allowed("labels").labels(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._allowed("features").features(x)

    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._allowed("activations").activations(x)

    def named_weights(self) -> dict[str, torch.Tensor]:
        return self._allowed("named_weights").named_weights()

    def __getattr__(self, name: str) -> Any:  # only reached for attributes a suspect does not offer
        if name.startswith("__"):
            raise AttributeError(name)
        raise AccessViolation(f"suspect {self.id} offers no '{name}': a suspect is reached only through its "
                              f"queries ({', '.join(q for q in _NEEDS if allows(self.access, q))} at access "
                              f"'{self.access}'), never as a module")
