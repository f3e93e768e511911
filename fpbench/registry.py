"""Name -> implementation, loaded lazily. One pattern for methods and transforms.

Adding a method = one module in ``baselines/`` + one YAML file in ``conf/method/`` + one line below.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from fpbench.api import ConfigError

METHODS: dict[str, str] = {
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
}

TRANSFORMS: dict[str, str] = {
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
    "lora": "transforms.lora:LoRA",
    "finetune_transfer": "transforms.transfer:FineTuneTransfer",
}


class UnknownName(ConfigError):
    """An unknown method/transform/zoo name; the message lists the valid ones."""


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(sorted(valid))}"


def _load(table: dict[str, str], kind: str, name: str) -> Any:
    if name not in table:
        raise UnknownName(unknown_name_message(kind, name, list(table)))
    module_name, attr = table[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def method_class(name: str) -> Any:
    return _load(METHODS, "method", name)


def transform_class(name: str) -> Any:
    return _load(TRANSFORMS, "transform", name)
