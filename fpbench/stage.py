"""What every stage app (``python -m fpbench.zoo``, ``.report``, ``.lineage``, ``.transfer``, ``.cmf.attacks``)
does the same way around its Hydra main.

- Before Hydra starts: an unknown top-level key (``methds=cmf``) or an unknown group option (``zoo=bogus``) is
  one line naming it and the valid ones; ``methods=cmf,sac`` outside ``--multirun`` means the list ``[cmf,sac]``
  (Hydra alone would call it ambiguous; under ``-m`` it stays a sweep).
- Before the stage runs: the common values are checked (``target_fpr``, ``device``, ``runs_dir``, booleans that
  are real booleans, numbers that are numbers, required values that are not empty).
- While it runs: an ``FpbenchError`` is one line ``error: ...`` and exit code 2 (no traceback); Ctrl-C is one line
  saying what finished and that re-running the same command resumes (what was written is reused), exit code 130.

A stage module declares a :class:`Stage`, decorates its main with ``hydra.main(config_path=CONF_PATH,
config_name=STAGE.config)``, wraps its body in ``with STAGE.running(cfg):`` and calls ``STAGE.launch(main)``
from its ``cli()``. The checks are plain functions too (``check_values``, ``check_target_fpr``, ...), for apps
that do not use :class:`Stage`.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from fpbench.config import CONF_DIR, check_option, list_options
from fpbench.errors import ConfigError, FpbenchError

CONF_PATH = str(CONF_DIR)  # hydra.main's config_path: the project's conf/, wherever the stage module lives
EXIT_ERROR = 2  # bad input: the message says what to change
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
PARAMS_PREFIXES = ("method.params.", "transform.params.")


# ---------------------------------------------------------------------------------------------- value checks
def _invalid(key: str, message: str) -> ConfigError:
    return ConfigError(f"invalid option '{key}': {message}")


def check_target_fpr(value: Any, key: str = "target_fpr") -> float:
    """A false-positive rate strictly between 0 and 1."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and 0 < value < 1
    if not ok:
        raise _invalid(key, f"must be a number in (0, 1), got {value!r}; e.g. {key}=0.01")
    return float(value)


def check_device(value: Any, key: str = "device") -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a CUDA device must exist on this machine."""
    name = str(value).strip() if value is not None else ""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise _invalid(key, f"must be one of {DEVICE_FORMS}, got {value!r}; e.g. {key}=auto")
    if name.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            seen = f"{count} CUDA device(s) are visible" if count else "no CUDA GPU is visible to torch"
            raise _invalid(key, f"'{name}' asked for, but {seen}; use {key}=cpu or {key}=auto "
                                "(CUDA when present, else the CPU)")
    return name


def check_runs_dir(value: Any, key: str = "runs_dir") -> Path:
    """A directory that exists or can be made: not empty, not a file, no file on its way."""
    if value is None or not str(value).strip():
        raise _invalid(key, f"is empty; give a directory, e.g. {key}=runs")
    path = Path(str(value))
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is an existing file" if p == path else f"lies under '{p}', which is a file"
                raise _invalid(key, f"'{path}' {what}; give a directory, e.g. {key}=runs")
            break
    return path


def check_bool(value: Any, key: str) -> bool:
    """A real boolean: ``yes``, ``1`` or ``on`` are refused rather than read one way or the other."""
    if not isinstance(value, bool):
        raise _invalid(key, f"must be true or false, got {value!r}; e.g. {key}=true")
    return value


def check_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(key, f"must be an integer, got {value!r}")
    return value


def check_number(value: Any, key: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise _invalid(key, f"must be a finite number, got {value!r}")
    return float(value)


def check_nonempty(value: Any, key: str) -> None:
    empty = value is None or (str(value).strip() == "" if isinstance(value, str) else
                              isinstance(value, list | tuple | ListConfig) and len(value) == 0)
    if empty:
        raise _invalid(key, f"is empty; give a value ({key}=...)")


def as_list(value: Any, key: str) -> list[str]:
    """A list value given as a list (``[a,b]``, the config's own) or as one sweep value (``a`` or ``a,b``)."""
    if isinstance(value, ListConfig | list | tuple):
        items = [str(v).strip() for v in value]
    else:
        items = [v.strip() for v in str(value if value is not None else "").split(",")]
    if not items or any(not v for v in items):
        raise _invalid(key, f"needs one or more names separated by commas, got {value!r}; e.g. {key}=[a,b]")
    return items


def check_values(cfg: Mapping[str, Any], defaults: Mapping[str, Any], required: tuple[str, ...] = (),
                 list_keys: tuple[str, ...] = ()) -> None:
    """Every top-level value has the type of its default (a bool stays a bool, a number a number), the common
    keys are valid when present, and no required or list value is empty. Raises ConfigError naming the key."""
    for key, default in defaults.items():
        value = cfg.get(key)
        if isinstance(default, bool):
            check_bool(value, key)
        elif isinstance(default, int):
            check_int(value, key)
        elif isinstance(default, float) and key != "target_fpr":
            check_number(value, key)
    if "target_fpr" in cfg:
        check_target_fpr(cfg.get("target_fpr"))
    if "device" in cfg:
        check_device(cfg.get("device"))
    if "runs_dir" in cfg:
        check_runs_dir(cfg.get("runs_dir"))
    for key in required:
        check_nonempty(cfg.get(key), key)
    for key in list_keys:
        if cfg.get(key) is not None:
            as_list(cfg.get(key), key)


# ------------------------------------------------------------------------------------ the command line
def _flag_multirun(argv: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in argv)


def _override_key(arg: str) -> str | None:
    """The key of a Hydra override (``+a.b=1`` -> ``a.b``); None for flags and their values."""
    if arg.startswith("-") or "=" not in arg:
        return None
    return arg.partition("=")[0].lstrip("+~")


@dataclass
class Stage:
    """One stage app: how a user runs it, its primary config, and what it finished so far (for Ctrl-C)."""

    module: str  # e.g. "fpbench.zoo": printed in the resume hint as `python -m <module> ...`
    config: str  # the primary config, conf/<config>.yaml
    list_keys: tuple[str, ...] = ()  # keys holding lists of names (e.g. methods)
    required: tuple[str, ...] = ()  # keys that may not be empty
    unit: str | None = None  # what `finished` counts, e.g. "models"; None: the stage does not count
    resume: str = "re-run the same command to resume, what was written is reused"  # said on Ctrl-C
    total: int | None = None  # how many units the run has, when known
    finished: list[str] = field(default_factory=list)

    # -- the primary config as written (its defaults give the types, its keys the valid options)
    def _primary(self) -> tuple[dict[str, Any], list[str]]:
        """(top-level defaults of the primary config and the configs it includes, the config groups it selects)."""
        values: dict[str, Any] = {}
        groups: list[str] = []
        pending, seen = [self.config], set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"), resolve=False)
            assert isinstance(raw, dict)
            for entry in raw.pop("defaults", None) or []:
                if isinstance(entry, dict):
                    groups += [str(k).split("@")[0].removeprefix("override ") for k in entry]
                elif entry != "_self_":
                    pending.append(str(entry))
            raw.pop("hydra", None)
            values = {**raw, **values}  # the including config wins, as _self_ after the include does
        return values, groups

    def defaults(self) -> dict[str, Any]:
        return self._primary()[0]

    def check_argv(self, argv: list[str]) -> list[str]:
        """Reject unknown keys and group options before Hydra starts; returns argv with lists made explicit."""
        values, groups = self._primary()
        known = sorted({*values, *groups})
        multirun = _flag_multirun(argv)
        out = []
        for arg in argv:
            key = _override_key(arg)
            if key is None or key.split(".")[0].split("/")[0] == "hydra":
                out.append(arg)
                continue
            top = key.split(".")[0].split("@")[0]
            value = arg.partition("=")[2]
            if top not in known:
                close = difflib.get_close_matches(top, known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ConfigError(f"unknown option '{top}' for python -m {self.module}; {hint}valid: "
                                  f"{', '.join(known)}")
            if key in groups:
                if not value.strip():
                    raise _invalid(key, f"is empty; give one of: {', '.join(list_options(key))}")
                for name in value.split(","):
                    check_option(key, name.strip())
            if key in self.list_keys and "," in value and not multirun and not value.startswith(("[", "'", '"')):
                arg = f"{arg.partition('=')[0]}=[{value}]"
            if key.startswith(PARAMS_PREFIXES) and not arg.startswith("+"):
                # A config lists only the parameters it changes; the others still have defaults (in their Params
                # dataclass), so `transform.params.steps=300` adds or overrides; a misspelled one is refused by
                # the Params dataclass, naming the valid parameters.
                arg = f"++{arg.lstrip('~')}"
            if key == "runs_dir":  # Hydra writes its logs under it before the stage runs: check it first
                for one in value.split(",") if multirun else [value]:
                    check_runs_dir(one)
            out.append(arg)
        if "runs_dir" in values and not any(_override_key(a) == "runs_dir" for a in argv):
            check_runs_dir(values["runs_dir"])
        return out

    def launch(self, main: Callable[[], Any], argv: list[str] | None = None) -> None:
        """The stage's ``cli()``: check the command line, then hand it to the Hydra-decorated ``main``."""
        try:
            args = self.check_argv(sys.argv[1:] if argv is None else argv)
        except FpbenchError as exc:
            fail(exc)
        sys.argv = [sys.argv[0], *args]
        main()

    # -- while running
    def done(self, what: str) -> None:
        """Record one finished unit (the Ctrl-C line names the last one)."""
        self.finished.append(what)

    def interrupted_line(self, argv: list[str] | None = None) -> str:
        args = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        command = f"python -m {self.module}{' ' + args if args else ''}"
        of = f" of {self.total}" if self.total is not None else ""
        if self.unit is None:
            what = "stopped before the end"
        elif self.finished:
            what = f"{len(self.finished)}{of} {self.unit} finished (last: {self.finished[-1]})"
        else:
            what = f"none of the {self.total} {self.unit} finished" if self.total else f"no {self.unit} finished"
        return f"interrupted: {what}; {self.resume}: {command}"

    @contextmanager
    def running(self, cfg: DictConfig | Mapping[str, Any]) -> Iterator[None]:
        """Check the values, then run the body: FpbenchError -> one line, exit 2; Ctrl-C -> one line, exit 130."""
        self.finished.clear()
        self.total = None
        try:
            check_values(cfg, self.defaults(), self.required, self.list_keys)
            yield
        except FpbenchError as exc:
            fail(exc)
        except KeyboardInterrupt:
            interrupted(self.interrupted_line())


def fail(exc: BaseException) -> None:
    """One line on stderr, exit code 2."""
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(EXIT_ERROR)


def interrupted(line: str) -> None:
    """The Ctrl-C line on stderr, exit code 130."""
    print(f"\n{line}", file=sys.stderr, flush=True)
    sys.exit(EXIT_INTERRUPTED)
