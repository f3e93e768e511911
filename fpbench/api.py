"""The contracts every method, transform and model wrapper of fpbench keeps.

Ground floor: imports only ``fpbench.errors`` and ``fpbench.params``. A method sees its owner as an
:class:`Owner` (the defender's own model: full access) and a suspect as a :class:`Suspect` (reached only
through queries at the method's declared access); a transform sees an ``nn.Module`` plus its
:class:`ModelSpec` and returns a new one.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import nn

# The errors live in fpbench.errors (so that imports point one way); re-exported here for methods and transforms.
from fpbench.errors import (  # noqa: F401
    AccessViolation,
    ConfigError,
    FpbenchError,
    NotApplicable,
    QueryBudgetExceeded,
    require,
)
from fpbench.params import MethodParams, Params, TransformParams, build_params  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    from fpbench.data import DataBundle

Access = Literal["white-box weights", "white-box features", "black-box probabilities", "black-box labels"]
ACCESS_LEVELS: tuple[str, ...] = (
    "white-box weights",
    "white-box features",
    "black-box probabilities",
    "black-box labels",
)


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
    modality: str = "vision"  # "vision" | "vision-language" | "language" (a causal LM: builder causal_lm)
    data_id: str = ""
    wrappers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@runtime_checkable
class Suspect(Protocol):
    """A suspect model as a method may query it (``fpbench.subject.SuspectView``): only what the method's
    declared ``access`` allows -- labels < probabilities/logits < features and per-layer activations < weights.
    Asking for more raises :class:`AccessViolation`; every query is counted against the method's budget."""

    id: str
    spec: ModelSpec
    device: torch.device
    query_count: int

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...  # x: [N,C,H,W] in [0,1]
    def probs(self, x: torch.Tensor) -> torch.Tensor: ...
    def labels(self, x: torch.Tensor) -> torch.Tensor: ...
    def features(self, x: torch.Tensor) -> torch.Tensor: ...  # penultimate / image embedding
    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...  # per-layer outputs of the trunk
    def named_weights(self) -> dict[str, torch.Tensor]: ...  # effective weights of the vision trunk


@runtime_checkable
class Owner(Suspect, Protocol):
    """The defender's own model (``fpbench.subject.ModelSubject``): everything a suspect offers at full access,
    plus the module itself (gradients allowed) and what only the owner knows (``owner_private``, e.g. an
    embedded signature's secret)."""

    model: nn.Module
    owner_private: dict[str, Any]


Subject = Suspect  # the older name of the query interface


@dataclass
class Fingerprint:
    """What a method keeps of an owner: tensors (stored as safetensors) and JSON-able metadata."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolModel:
    """A model of the zoo's training pool (``zoo.training``) as a method that learns from other models sees it:
    its id, the root it derives from (its lineage) and a view at the method's access, without a query budget."""

    id: str
    root: str
    subject: Suspect


@dataclass
class MethodContext:
    """What a method may use besides the owner: the owner's task data, a device, a seed, a scratch dir.

    ``data.splits['probe']`` are held-out natural inputs; ``data.splits['train_a']`` is the owner's own
    training data (a defender has it). A method never sees the zoo's independents or children except
    as the suspect passed to ``score``. ``training_pool(access)`` yields the zoo's training models (roots and
    children that are never scored and never calibrated on), one at a time; None where there are none (a
    user's own task).
    """

    data: DataBundle
    device: torch.device
    seed: int
    workdir: Path
    progress: bool = True
    training_pool: Callable[[str], Iterator[PoolModel]] | None = None
    training_pool_key: str = ""  # identifies the pool's models: what a method trained on it depends on


class Method(abc.ABC):
    """A fingerprinting method: ``fingerprint(owner)`` once, then ``score(fp, suspect)`` per suspect.

    Higher scores mean "more likely derived". Parameters are the class's ``Params`` dataclass (the one home of
    their defaults, validated at construction); ``self.p`` holds them typed, ``self.params`` as a plain dict.
    ``name`` is the config's name (``sac_w`` of implementation ``sac``); the registry key is the implementation's.
    """

    Params: ClassVar[type[MethodParams]] = MethodParams
    access: ClassVar[Access]
    version: ClassVar[str] = "1"
    compares_outputs: ClassVar[bool] = False  # True: owner's and suspect's output vectors are compared entry-wise
    modality: ClassVar[str] = "vision"  # the models it fingerprints: "vision" (and their multimodal children) | "language"

    def __init__(self, params: dict[str, Any] | None, ctx: MethodContext, name: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()
        self.p = build_params(self.Params, params, f"method '{self.name}'")
        self.params = self.p.as_dict()
        self.ctx = ctx

    @classmethod
    def resolve_params(cls, params: dict[str, Any] | None, name: str) -> dict[str, Any]:
        """The parameters a config resolves to (defaults filled in), validated, without building the method."""
        return build_params(cls.Params, params, f"method '{name}'").as_dict()

    @property
    def threshold(self) -> float:
        return float(self.p.threshold)

    @property
    def query_budget(self) -> int | None:
        """Inputs ``score`` may send to one suspect (``params.query_budget``); the Subject enforces it."""
        return self.p.query_budget

    def check_applicable(self, owner: Suspect, suspect: Suspect) -> None:
        """Raise NotApplicable when this method cannot score this pair.

        Default: a method that compares the suspect's labels with the owner's needs both to predict the same
        classes (a transfer-learned child answers in another label space), one that compares output vectors
        (``compares_outputs``) the same number of them; every other pair can be scored.
        """
        if self.access == "black-box labels" and list(owner.spec.class_names) != list(suspect.spec.class_names):
            raise NotApplicable(
                f"{self.name} compares predicted labels, but the suspect's label space ({suspect.spec.num_classes} "
                f"classes) is not the owner's ({owner.spec.num_classes} classes)")
        if self.access.startswith("white-box") and any(w.get("kind") == "deploy" for w in suspect.spec.wrappers):
            raise NotApplicable(f"{self.name} reads the model itself, but this suspect is a black-box deployment "
                                "variant (system prompt, paraphrase, logit noise, sampling) of its parent's weights: "
                                "only black-box methods are scored on it")
        if self.compares_outputs and suspect.spec.num_classes != owner.spec.num_classes:
            raise NotApplicable(f"{self.name} compares output vectors: the suspect has {suspect.spec.num_classes} "
                                f"classes, the owner {owner.spec.num_classes}")

    def fingerprint_depends_on(self) -> str:
        """What an owner's fingerprint depends on besides the owner, the parameters and the seed (e.g. the training
        pool an inference model learnt from); part of the fingerprint cache key when not empty."""
        return ""

    def shadow_families(self) -> frozenset[str]:
        """The transform families (``fpbench.shadows.transform_families``) of the shadow models this method trains
        on: a cell of such a family scores the method on an attack it was trained against, and the tables say so.
        Methods that train on no shadow models return the empty set."""
        return frozenset()

    @abc.abstractmethod
    def fingerprint(self, owner: Owner) -> Fingerprint: ...

    @abc.abstractmethod
    def score(self, fp: Fingerprint, suspect: Suspect) -> float: ...


@dataclass
class TransformContext:
    """What a transform may use: the task data, a device, a seed and whether to show progress.

    ``archs`` is the zoo's architecture table (``zoo.archs``: key -> arch dict), for transforms that
    build a model of another architecture (e.g. a distilled student). ``partner`` is the second parent of a
    transform with ``partners = 1`` (a cross-root merge): another root's model of the same architecture.
    """

    data: DataBundle
    device: torch.device
    seed: int
    progress: bool = True
    archs: dict[str, dict[str, Any]] = field(default_factory=dict)
    partner: nn.Module | None = None


@dataclass
class TransformResult:
    model: nn.Module
    spec: ModelSpec
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the child's JSON spec


class Transform(abc.ABC):
    """Makes a child from a parent. A ``cheap`` transform (deterministic and fast, e.g. prune without recovery)
    is stored as a recipe and re-applied on load. Parameters: the class's ``Params`` dataclass, as for methods."""

    Params: ClassVar[type[TransformParams]] = TransformParams
    version: ClassVar[str] = "1"
    partners: ClassVar[int] = 0  # 1: the transform uses a second model, another root's (``ctx.partner``)
    partner_arch: ClassVar[str] = "same"  # that root's architecture: "same" as the parent's, or "other"
    partner_is_parent: ClassVar[bool] = True  # False: it is a teacher, not an ancestor (the child is not its positive)
    # the kinds of model (``ModelSpec.modality``) it makes children of; the zoo refuses others with the reason
    modalities: ClassVar[tuple[str, ...]] = ("vision", "vision-language")

    def __init__(self, params: dict[str, Any] | None, name: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()
        self.p = build_params(self.Params, params, f"transform '{self.name}'")
        self.params = self.p.as_dict()

    @classmethod
    def resolve_params(cls, params: dict[str, Any] | None, name: str) -> dict[str, Any]:
        """The parameters a config resolves to (defaults filled in), validated, without building the transform."""
        return build_params(cls.Params, params, f"transform '{name}'").as_dict()

    @property
    def cheap(self) -> bool:
        """Whether the child is stored as its recipe only (override for transforms cheap under some params)."""
        return False

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        """Raise NotApplicable when this transform cannot apply to this model."""

    @abc.abstractmethod
    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult: ...
