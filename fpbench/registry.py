"""Name -> implementation, loaded lazily: one :class:`Registry` class for methods, transforms, model builders,
model wrappers, report sections and commands (after lm-evaluation-harness's ``lm_eval.api.registry``).

An entry is ``"module:attr"`` (imported on first use, so a registry never forces its modules on a caller) or
the object itself. Looking up an unknown name fails with the valid names and a close match; registering a name
twice is an error; a registry with a ``base`` checks on lookup that what it loaded is a subclass of it.
Adding a method = one module in ``baselines/`` + one YAML file in ``conf/method/`` + one line below.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any

from fpbench.errors import ConfigError, UnknownName

__all__ = ["Registry", "UnknownName", "unknown_name_message", "METHODS", "TRANSFORMS", "method_class",
           "transform_class"]


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(sorted(valid))}"


class Registry:
    """A table of named entries of one ``kind``; entries are ``"module:attr"`` strings or objects."""

    def __init__(self, kind: str, base: str | type | None = None) -> None:
        self.kind = kind
        self._base = base  # a class or "module:attr" of one, resolved lazily
        self._entries: dict[str, Any] = {}
        self._loaded: dict[str, Any] = {}

    def register(self, name: str, entry: Any) -> Any:
        """Add ``name``; a second registration of the same name is an error (two things, one name)."""
        if name in self._entries:
            raise ConfigError(f"{self.kind} '{name}' is registered twice ({self._entries[name]!r} and {entry!r})")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> Any:
        """The raw entry (``"module:attr"`` or object) of ``name``."""
        self._check(name)
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The object registered as ``name``, imported on first use and checked against the base class."""
        self._check(name)
        if name not in self._loaded:
            obj = _resolve(self._entries[name])
            base = _resolve(self._base) if self._base is not None else None
            if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
                raise ConfigError(f"{self.kind} '{name}' ({self._entries[name]!r}) is not a subclass of "
                                  f"{base.__module__}.{base.__qualname__}")
            self._loaded[name] = obj
        return self._loaded[name]

    def _check(self, name: str) -> None:
        if name not in self._entries:
            raise UnknownName(unknown_name_message(self.kind, name, self.names()))


def _resolve(entry: Any) -> Any:
    if isinstance(entry, str):
        module_name, sep, attr = entry.partition(":")
        if not sep:
            raise ConfigError(f"registry entry {entry!r} is not of the form 'module:attr'")
        return getattr(importlib.import_module(module_name), attr)
    return entry


def registry_of(kind: str, entries: dict[str, Any], base: str | type | None = None) -> Registry:
    """A registry of ``kind`` holding ``entries`` (name -> "module:attr"), registered in order."""
    registry = Registry(kind, base=base)
    for name, entry in entries.items():
        registry.register(name, entry)
    return registry


METHODS = registry_of("method", base="fpbench.api:Method", entries={
    "cmf": "fpbench.cmf.fingerprinter:CrossModalFingerprinter",
    "sac": "baselines.sac:SAC",
    "modeldiff": "baselines.modeldiff:ModelDiff",
    "cka": "baselines.cka:CKA",
    "cort": "baselines.cort:CoRt",
    "weightcos": "baselines.weightcos:WeightCos",
    "agreement": "baselines.agreement:Agreement",
    "metafinger": "baselines.metafinger:MetaFinger",
    "cae": "baselines.cae:CAE",
    "ipguard": "baselines.ipguard:IPGuard",
    "uap": "baselines.uap:UAP",
    # language models (zoo=llm_ci / llm_tiny: the LLM families of LeaFBench)
    "llm_reef": "baselines.llm_reef:LLMReef",
    "llm_pdf": "baselines.llm_pdf:LLMPdf",
    "llm_huref": "baselines.llm_huref:LLMHuref",
    "llm_gradient": "baselines.llm_gradient:LLMGradient",
    "llm_met": "baselines.llm_met:LLMMet",
    "llm_sef": "baselines.llm_sef:LLMSef",
    "llm_agreement": "baselines.llm_agreement:LLMAgreement",
    "llm_llmmap": "baselines.llm_llmmap:LLMmap",
    "llm_trap": "baselines.llm_trap:LLMTrap",
})

TRANSFORMS = registry_of("transform", base="fpbench.api:Transform", entries={
    "identity": "transforms.identity:Identity",
    "finetune": "transforms.finetune:FineTune",
    "removal": "transforms.removal:RemovalFineTune",
    "prune": "transforms.prune:Prune",
    "quantize": "transforms.quantize:Quantize",
    "permute": "transforms.permute:Permute",
    "rescale": "transforms.rescale:Rescale",
    "vision2mm": "transforms.vision2mm:VisionToMultimodal",
    "cmf_embed": "transforms.cmf_embed:CmfEmbed",
    "cmf_remove": "transforms.cmf_remove:CmfRemove",
    "partial": "transforms.partial:Partial",
    "advtrain": "transforms.advtrain:AdvTrain",
    "distill": "transforms.distill:Distill",
    "lm_distill": "transforms.lm_distill:LMDistill",
    "deploy": "transforms.deploy:Deploy",
    "sft": "transforms.sft:SFT",
    "gen_distill": "transforms.gen_distill:GenDistill",
    "lora": "transforms.lora:LoRA",
    "merge": "transforms.merge:Merge",
    "merge_cross": "transforms.merge:CrossMerge",
    "finetune_transfer": "transforms.transfer:FineTuneTransfer",
})


def method_class(name: str) -> Any:
    return METHODS.get(name)


def transform_class(name: str) -> Any:
    return TRANSFORMS.get(name)
