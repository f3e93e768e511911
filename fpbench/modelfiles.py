"""A user's model files as fpbench models: where the weights are, what architecture and input they have.

A model is one of
- a ``.safetensors`` file (a pickle checkpoint is refused unless ``allow_pickle``, then read weights-only), with
  an optional ``<file>.json`` beside it: fpbench's own model spec (as ``fpbench.verify export`` writes it) or a
  plain description (``architecture``/``arch``, ``num_classes``, ``kwargs``, ``input_size``, ``mean``, ``std``);
- a Hugging Face-style folder of a timm model: ``config.json`` (``architecture``, ``num_classes``, ``model_args``,
  ``pretrained_cfg`` with ``mean``/``std``/``input_size``) beside ``model.safetensors``.
The weights may carry a wrapper prefix (``module.`` of DataParallel, ``model.`` of Lightning, fpbench's ``net.``).
What the file does not say comes from the command line (``arch=``, ``mean=``, ``std=``, ``size=``) and then from
timm's ``pretrained_cfg`` for the architecture. A tensor that does not fit is named.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from fpbench.api import ModelSpec
from fpbench.errors import ConfigError
from fpbench.safeload import load_model, load_state

HF_CONFIG, HF_WEIGHTS = "config.json", "model.safetensors"
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
WRAPPER_PREFIXES = ("module.", "model.")


@dataclass
class Declared:
    """What a model file (or the command line) says about the model; None = not said."""

    arch: dict[str, Any] | None = None
    num_classes: int | None = None
    size: int | None = None
    channels: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    spec: ModelSpec | None = None  # a complete fpbench spec (then nothing else is needed)
    notes: list[str] = field(default_factory=list)

    def unpacked(self) -> Declared:
        """A complete spec as separate fields, so that some of them can be overridden."""
        if self.spec is None:
            return self
        i = self.spec.input
        return Declared(arch=self.spec.arch, num_classes=self.spec.num_classes, size=i.get("size"),
                        channels=i.get("channels"), mean=i.get("mean"), std=i.get("std"), notes=self.notes)

    def merged(self, other: Declared) -> Declared:
        """``self`` with what it leaves unsaid taken from ``other``."""
        return Declared(**{k: getattr(self, k) if getattr(self, k) is not None else getattr(other, k)
                           for k in ("arch", "num_classes", "size", "channels", "mean", "std", "spec")},
                        notes=[*self.notes, *other.notes])


def weights_file(path: Path) -> Path:
    """The weights of a model path: the file itself, or an HF-style folder's ``model.safetensors``."""
    if path.is_dir():
        if (path / HF_WEIGHTS).is_file():
            return path / HF_WEIGHTS
        raise ConfigError(f"{path} is a folder without {HF_WEIGHTS}: give a model file or a Hugging Face-style "
                          f"folder ({HF_CONFIG} + {HF_WEIGHTS})")
    if not path.exists():
        raise ConfigError(f"model {path} does not exist; give the path of a .safetensors file or a model folder")
    return path


def is_model(path: Path) -> bool:
    return (path.is_file() and path.suffix in MODEL_SUFFIXES) or (path.is_dir() and (path / HF_WEIGHTS).is_file())


def find_models(path: Path) -> list[Path]:
    """The models a path names: itself when it is one model, else every model in the folder (sorted)."""
    if is_model(path):
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if is_model(p) and p.name != HF_WEIGHTS)
        if found:
            return found
        raise ConfigError(f"{path}: no model files in this folder (looked for {', '.join(MODEL_SUFFIXES)} files and "
                          f"folders holding {HF_WEIGHTS})")
    raise ConfigError(f"{path} does not exist; give a model file or a folder of model files")


def _input_from(d: dict[str, Any]) -> dict[str, Any]:
    size = d.get("input_size") or d.get("size")
    out: dict[str, Any] = {}
    if isinstance(size, (list, tuple)) and len(size) == 3:
        out["channels"], out["size"] = int(size[0]), int(size[-1])
    elif isinstance(size, int):
        out["size"] = size
    for k in ("mean", "std"):
        if d.get(k) is not None:
            out[k] = [float(v) for v in d[k]]
    if d.get("channels") is not None:
        out["channels"] = int(d["channels"])
    return out


def declared(path: Path) -> Declared:
    """What the model's own files say: ``<file>.json`` beside a file, or an HF folder's ``config.json``."""
    meta = path / HF_CONFIG if path.is_dir() else path.with_suffix(".json")
    if not meta.is_file():
        return Declared()
    try:
        d = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta} is not valid JSON ({exc}); fix or remove it") from exc
    if "arch" in d and isinstance(d["arch"], dict) and "input" in d:  # fpbench's own spec
        return Declared(spec=ModelSpec.from_dict(d), notes=[f"spec from {meta.name}"])
    name = d.get("architecture") or d.get("arch")
    kwargs = d.get("model_args") or d.get("kwargs") or {}
    kwargs = {k: v for k, v in kwargs.items() if k not in ("num_classes", "in_chans", "pretrained")}
    inp = {**_input_from(d.get("pretrained_cfg") or {}), **_input_from(d)}
    return Declared(arch={"builder": "timm", "name": str(name), "kwargs": kwargs} if name else None,
                    num_classes=d.get("num_classes"), notes=[f"architecture from {meta.name}"], **inp)


def timm_defaults(arch: dict[str, Any] | None) -> Declared:
    """timm's ``pretrained_cfg`` for the architecture: its normalisation and input size."""
    if not arch or arch.get("builder", "timm") != "timm":
        return Declared()
    import timm

    if not timm.is_model(arch["name"]):
        raise ConfigError(f"arch '{arch['name']}' is not a timm model name (e.g. resnet18, efficientnet_b0) nor an "
                          f"arch key of the zoo config")
    try:
        cfg = timm.get_pretrained_cfg(arch["name"])
    except Exception:  # an architecture timm has no default config for
        cfg = None
    if cfg is None:
        return Declared()
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return Declared(**{k: v for k, v in _input_from(d).items() if k in ("mean", "std")},
                    notes=[f"mean/std from timm's pretrained_cfg of {arch['name']}"])


def build_spec(decl: Declared, class_names: list[str], data_id: str) -> ModelSpec:
    """The full spec from what is declared and the task's classes."""
    if decl.spec is not None:
        return decl.spec
    if decl.arch is None:
        raise ConfigError("no architecture for this model: pass arch=NAME (a timm model name, or an arch key of the "
                          "zoo config) or put a <file>.json / config.json beside it naming its 'architecture'")
    missing = [k for k in ("size", "mean", "std") if getattr(decl, k) is None]
    if missing:
        raise ConfigError(f"the model's input {', '.join(missing)} is unknown: pass {', '.join(m + '=' for m in missing)}"
                          " (the values the model was trained with) or give them in its <file>.json")
    channels = decl.channels or len(decl.mean or [0, 0, 0])
    return ModelSpec(arch=decl.arch, num_classes=int(decl.num_classes or len(class_names)),
                     class_names=list(class_names), data_id=data_id,
                     input={"channels": channels, "size": int(decl.size or 0), "mean": decl.mean, "std": decl.std})


def load_module(path: Path, spec: ModelSpec, allow_pickle: bool = False) -> nn.Module:
    """The model's module with the file's weights: a wrapper prefix (``module.``, ``model.``) is dropped and the
    plain timm keys are put under fpbench's ``net.`` wrapper; a tensor that does not fit is named."""
    file = weights_file(path)
    state = load_state(file, allow_pickle=allow_pickle)
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if spec.arch.get("builder", "timm") in ("timm", "timm_vgg", "timm_pretrained") and not any(
            k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:  # through the same checked loader as every model file
        fixed = Path(tmp) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(fixed))
        return load_model(fixed, spec)
