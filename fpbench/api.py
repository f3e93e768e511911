"""The contracts every method, transform and model wrapper of fpbench keeps.

Ground floor: imports nothing of ours. A method sees models only through a :class:`Subject`;
a transform sees an ``nn.Module`` plus its :class:`ModelSpec` and returns a new one.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from fpbench.data import DataBundle

Access = Literal["white-box weights", "white-box features", "black-box probabilities", "black-box labels"]
ACCESS_LEVELS: tuple[str, ...] = (
    "white-box weights",
    "white-box features",
    "black-box probabilities",
    "black-box labels",
)


class FpbenchError(Exception):
    """Base class of the errors fpbench raises on purpose (bad input, not bugs)."""


class ConfigError(FpbenchError, ValueError):
    """A configuration value is unknown or out of range; the message names the field and the fix."""


class QueryBudgetExceeded(FpbenchError):
    """A method asked a suspect for more inputs than its declared ``query_budget``."""


class NotApplicable(FpbenchError):
    """A transform cannot apply to a model, or a method cannot score a pair; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's module, JSON-serialisable.

    ``arch`` is read by ``fpbench.models.build_module``; ``wrappers`` records module rewrites a
    transform made (e.g. LoRA layers, quantized linears) so the module can be rebuilt before its
    state dict is loaded. Images enter every model in [0, 1]; the model normalises them itself
    (``input.mean``/``input.std``), so nothing upstream may normalise again.
    """

    arch: dict[str, Any]
    num_classes: int
    class_names: list[str]
    input: dict[str, Any]  # {"channels": 3, "size": 32, "mean": [...], "std": [...]}
    modality: str = "vision"  # "vision" | "vision-language"
    data_id: str = ""
    wrappers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@runtime_checkable
class Subject(Protocol):
    """A model as a fingerprinting method may query it (see ``fpbench.subject.ModelSubject``)."""

    id: str
    spec: ModelSpec
    model: nn.Module
    device: torch.device
    query_count: int

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...  # x: [N,C,H,W] in [0,1]
    def probs(self, x: torch.Tensor) -> torch.Tensor: ...
    def labels(self, x: torch.Tensor) -> torch.Tensor: ...
    def features(self, x: torch.Tensor) -> torch.Tensor: ...  # penultimate / image embedding
    def named_weights(self) -> dict[str, torch.Tensor]: ...  # effective weights of the vision trunk


@dataclass
class Fingerprint:
    """What a method keeps of an owner: tensors (stored as safetensors) and JSON-able metadata."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodContext:
    """What a method may use besides the owner: the owner's task data, a device, a seed, a scratch dir.

    ``data.splits['probe']`` are held-out natural inputs; ``data.splits['train_a']`` is the owner's own
    training data (a defender has it). A method never sees the zoo's independents or children except
    as the suspect passed to ``score``.
    """

    data: DataBundle
    device: torch.device
    seed: int
    workdir: Path
    progress: bool = True


class Method(abc.ABC):
    """A fingerprinting method: ``fingerprint(owner)`` once, then ``score(fp, suspect)`` per suspect.

    Higher scores mean "more likely derived". ``params['threshold']`` is the method's fixed threshold.
    """

    name: ClassVar[str]
    access: ClassVar[Access]
    version: ClassVar[str] = "1"

    def __init__(self, params: dict[str, Any], ctx: MethodContext) -> None:
        self.params = dict(params)
        self.ctx = ctx
        self.validate()

    def validate(self) -> None:
        """Reject out-of-range parameters before any work starts (raise ConfigError naming the field)."""

    @property
    def threshold(self) -> float:
        return float(self.params.get("threshold", 0.5))

    @property
    def query_budget(self) -> int | None:
        """Inputs ``score`` may send to one suspect (``params['query_budget']``); the runner enforces it."""
        budget = self.params.get("query_budget")
        return None if budget is None else int(budget)

    def check_applicable(self, owner: Subject, suspect: Subject) -> None:
        """Raise NotApplicable when this method cannot score this pair.

        Default: a method that compares the suspect's labels with the owner's needs both to predict the same
        classes (a transfer-learned child answers in another label space); every other pair can be scored.
        """
        if self.access == "black-box labels" and list(owner.spec.class_names) != list(suspect.spec.class_names):
            raise NotApplicable(
                f"{self.name} compares predicted labels, but the suspect's label space ({suspect.spec.num_classes} "
                f"classes) is not the owner's ({owner.spec.num_classes} classes)")

    @abc.abstractmethod
    def fingerprint(self, owner: Subject) -> Fingerprint: ...

    @abc.abstractmethod
    def score(self, fp: Fingerprint, suspect: Subject) -> float: ...


@dataclass
class TransformContext:
    """What a transform may use: the task data, a device, a seed and whether to show progress.

    ``archs`` is the zoo's architecture table (``zoo.archs``: key -> arch dict), for transforms that
    build a model of another architecture (e.g. a distilled student).
    """

    data: DataBundle
    device: torch.device
    seed: int
    progress: bool = True
    archs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TransformResult:
    model: nn.Module
    spec: ModelSpec
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the child's JSON spec


class Transform(abc.ABC):
    """Makes a child from a parent. ``cheap`` transforms are stored as a recipe and re-applied on load."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    cheap: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)
        self.validate()

    def validate(self) -> None:
        """Reject out-of-range parameters before any work starts (raise ConfigError naming the field)."""

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        """Raise NotApplicable when this transform cannot apply to this model."""

    @abc.abstractmethod
    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult: ...


def require(cond: bool, field_name: str, message: str) -> None:
    """Raise a ConfigError naming ``field_name`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(f"invalid parameter '{field_name}': {message}")
