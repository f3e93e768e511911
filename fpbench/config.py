"""Reading the Hydra config groups outside Hydra (chains name other transforms; checks list options)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fpbench.registry import UnknownName, unknown_name_message

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUP_KIND = {"method": "method", "transform": "transform", "zoo": "zoo", "experiment": "experiment"}


def list_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def tagged_options(group: str, tag: str) -> list[str]:
    """The options of ``group`` whose YAML lists ``tag`` under ``tags:`` (sorted by name).

    Lists that used to be written in code (e.g. the attack study's transforms) are tags in config instead, so a
    new option joins them by its own YAML alone."""
    return [name for name in list_options(group) if tag in (load_option(group, name).get("tags") or [])]


def check_option(group: str, name: str) -> None:
    valid = list_options(group)
    if name not in valid:
        raise UnknownName(unknown_name_message(GROUP_KIND.get(group, group), name, valid))


def load_option(group: str, name: str) -> dict[str, Any]:
    """The resolved contents of ``conf/<group>/<name>.yaml`` as a plain dict.

    A ``defaults: [other, _self_]`` list is honoured as Hydra does for a config of the same group (this
    option extends ``other``; lists are replaced, not appended).
    """
    check_option(group, name)
    cfg = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    defaults = cfg.pop("defaults", None) if isinstance(cfg, DictConfig) else None
    if defaults:
        bases = [OmegaConf.create(load_option(group, str(d))) for d in defaults if str(d) != "_self_"]
        cfg = OmegaConf.merge(*bases, cfg)
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def zoo_modality(zoo: str | dict[str, Any]) -> str:
    """The kind of model a zoo (its name or config) holds: ``language`` for a text task (``data.name: text``),
    else ``vision``."""
    cfg = load_option("zoo", zoo) if isinstance(zoo, str) else zoo
    return "language" if (cfg.get("data") or {}).get("name") == "text" else "vision"
