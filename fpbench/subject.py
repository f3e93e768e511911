"""ModelSubject: a model as a fingerprinting method may query it.

Queries go through ``logits`` (counted, batched, inference mode): images in [0, 1], the model
normalises them itself. White-box methods read ``named_weights`` (effective weights of the vision
trunk, with LoRA deltas merged and quantized layers dequantized, named as in the plain timm model)
and ``features``.
"""

from __future__ import annotations

import torch
from torch import nn

from fpbench.api import ModelSpec, QueryBudgetExceeded
from fpbench.weights import effective_named_weights


class ModelSubject:
    def __init__(self, id: str, model: nn.Module, spec: ModelSpec, device: torch.device, batch_size: int = 512) -> None:
        self.id = id
        self.model = model.to(device).eval()
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        self.query_count = 0  # input images sent through logits/probs/labels/features
        self.query_budget: int | None = None  # when set, a query that would exceed it is refused, not run
        self._weights: dict[str, torch.Tensor] | None = None
        self.owner_private: dict = {}  # set by the runner for an owner only (e.g. an embedded signature's secret)

    def __repr__(self) -> str:
        return f"ModelSubject({self.id!r}, {self.spec.arch.get('name', self.spec.arch.get('builder'))})"

    def _spend(self, n: int) -> None:
        if self.query_budget is not None and self.query_count + n > self.query_budget:
            raise QueryBudgetExceeded(
                f"{self.id}: a query of {n} inputs would bring the total to {self.query_count + n}, over the "
                f"method's query_budget of {self.query_budget}; lower the method's queries or raise query_budget")
        self.query_count += n

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self._spend(int(x.shape[0]))
        x = x.to(self.device)
        return torch.cat([self.model(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]).float()

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(-1)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(-1)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        self._spend(int(x.shape[0]))
        x = x.to(self.device)
        feats = self.model.features  # type: ignore[attr-defined]
        return torch.cat([feats(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]).float()

    def named_weights(self) -> dict[str, torch.Tensor]:
        if self._weights is None:
            self._weights = effective_named_weights(self.model.trunk)  # type: ignore[attr-defined]
        return self._weights
