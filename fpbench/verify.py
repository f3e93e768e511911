"""The everyday question: does this suspect model derive from my model? ``python -m fpbench.verify``.

    python -m fpbench.verify method=sac owner=mine.safetensors suspect=theirs.safetensors arch=resnet
    python -m fpbench.verify method=cmf,sac,ipguard owner=mine.safetensors suspect=suspects/ data=my_images/ \
        calibrate=20 target_fpr=0.05
    python -m fpbench.verify export zoo=ci model=resnet-s0/finetune out=child.safetensors

A Hydra app (``conf/verify.yaml``; ``conf/export.yaml`` for ``export``). Scoring goes through
``fpbench.evaluate`` -- the path of a grid cell: the same method construction, fingerprint cache (one owner is
fingerprinted once, whatever it is compared with), access-limited suspects, query budget and accuracy check.

- **The owner's data** (``data=``): a folder of images (ImageFolder layout, or flat with a labels file), an
  ``.npz`` or a named dataset (``fpbench.userdata``). Methods query with it; data-hungry methods train on it.
  Without ``data=`` the zoo's task (``zoo=``) is used.
- **Models** (``fpbench.modelfiles``): safetensors files (with an optional ``<file>.json`` spec) or Hugging
  Face-style folders of timm models; ``suspect=`` may be a folder of them. Input normalisation comes from the
  model's files, ``mean=``/``std=``/``size=``, or timm's ``pretrained_cfg``. Pickles are refused unless
  ``allow_pickle=true`` (then read weights-only).
- **Calibration for the task**: ``negatives=DIR`` (independent models of the same task) and/or ``calibrate=K``
  (K models of the owner's architecture trained here on ``data``; ``fpbench.nulls``). Every verdict gives the
  score, the size n of the null it was compared with, the empirical p-value (1 + #null >= score) / (1 + n), the
  decision at ``target_fpr`` and a warning when n < 1/target_fpr. Without data= and without negatives the zoo's
  stored calibration records are used; with data= and no negatives the fixed-threshold decision is printed as
  "uncalibrated for this task".
- **Sanity**: both models' accuracy on the given data through the exact query pipeline, with a warning near chance.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fpbench import thresholds
from fpbench.api import ModelSpec
from fpbench.config import load_option
from fpbench.data import DataBundle, load_bundle
from fpbench.errors import ConfigError, FpbenchError
from fpbench.evaluate import Candidate, Evaluator, Provenance, make_method
from fpbench.modelfiles import Declared, build_spec, declared, find_models, load_module, timm_defaults, weights_file
from fpbench.nulls import CalibrationRecipe, trained_independents
from fpbench.records import Record
from fpbench.stage import CONF_PATH, Stage
from fpbench.userdata import user_bundle
from fpbench.utils import configure_threads, file_sha256, resolve_device
from fpbench.zoo.store import ArtefactStore


@dataclass
class Verdict:
    """One suspect against the owner under one method."""

    method: str
    suspect: str
    score: float
    threshold: float  # the method's fixed threshold
    decision: bool
    calibrated_threshold: float | None
    calibrated_decision: bool | None
    calibration: str  # where the null / calibrated threshold comes from, in words
    null_size: int = 0
    p_value: float | None = None
    owner_accuracy: float = float("nan")
    suspect_accuracy: float = float("nan")
    warnings: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok" | "n/a" (the method cannot compare this pair; ``calibration`` says why) | "error"

    def lines(self) -> list[str]:
        fixed = "DERIVED" if self.decision else "not derived"
        out = [f"method {self.method}: score {self.score:.4f}"]
        if self.null_size:
            out.append(f"null: {self.null_size} negatives, p-value {self.p_value:.4f}")
        note = " (uncalibrated for this task)" if "uncalibrated" in self.calibration else ""
        out.append(f"fixed threshold {self.threshold:.4f} -> {fixed}{note}")
        if self.calibrated_threshold is not None:
            out.append(f"calibrated threshold {self.calibrated_threshold:.4f} -> "
                       f"{'DERIVED' if self.calibrated_decision else 'not derived'} ({self.calibration})")
        else:
            out.append(f"no calibrated threshold: {self.calibration}")
        out += [f"warning: {w}" for w in self.warnings]
        return out

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = "; ".join(self.warnings)
        return d


@dataclass
class Request:
    """Everything one verification is asked: owner, suspects, methods, the task's data and calibration."""

    owner: Path
    suspects: list[Path]
    methods: list[dict[str, Any]]  # method configs
    zoo_cfg: dict[str, Any]
    data: str | None = None
    labels: str | None = None
    root: str | None = None
    size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    arch: str | None = None
    suspect_arch: str | None = None
    negatives: Path | None = None
    calibrate: int = 0
    calibrate_steps: int = 300
    calibrate_lr: float = 0.05
    calibrate_batch: int = 128
    calibrate_optimizer: str = "sgd"
    runs_dir: Path = Path("runs")
    target_fpr: float = 0.01
    allow_pickle: bool = False
    device: str = "auto"
    progress: bool = False


# ---------------------------------------------------------------------------------------------- models and data
def arch_override(arch: str | None, zoo_cfg: dict[str, Any]) -> Declared:
    """``arch=``: an arch key of the zoo config or a timm model name."""
    if arch is None:
        return Declared()
    cfg = dict(zoo_cfg["archs"][arch]) if arch in zoo_cfg.get("archs", {}) else {"builder": "timm", "name": arch}
    if cfg.get("builder", "timm") == "timm":
        import timm

        if not timm.is_model(cfg["name"]):
            raise ConfigError(f"arch '{arch}' is neither an arch of zoo '{zoo_cfg['name']}' "
                              f"({', '.join(zoo_cfg.get('archs', {}))}) nor a timm model name")
    return Declared(arch=cfg, notes=[f"architecture from arch={arch}"])


def describe(path: Path, arch: str | None, req: Request, zoo_data: DataBundle | None,
             fallback: Declared | None = None) -> Declared:
    """What is known of a model, first source first: the command line, the model's own files, the zoo's input
    (on the zoo's task), ``fallback`` (for a suspect: the owner's), then timm's ``pretrained_cfg``."""
    d = arch_override(arch, req.zoo_cfg).merged(Declared(size=req.size, mean=req.mean, std=req.std))
    own = declared(path)
    if own.spec is not None and (arch is not None or req.size or req.mean or req.std):
        own = own.unpacked()  # the command line overrides part of a complete spec: keep the rest of it
    d = d.merged(own)
    if zoo_data is not None:  # the zoo's task: its models take the zoo's input
        d = d.merged(Declared(**{k: v for k, v in zoo_data.input_spec().items() if k in ("size", "mean", "std",
                                                                                           "channels")}))
    if fallback is not None:
        d = d.merged(fallback)
    return d.merged(timm_defaults(d.arch))


def task_data(req: Request, owner: Declared) -> DataBundle:
    """The owner's data at the owner's input size (or the zoo's data when none is given)."""
    if req.data is None:
        return load_bundle(req.zoo_cfg["data"])
    spec_input = owner.spec.input if owner.spec is not None else {}
    size = owner.size or spec_input.get("size")
    if size is None:
        raise ConfigError("the owner's input size is unknown: pass size=N (the image size it was trained at)")
    mean = owner.mean or spec_input.get("mean") or [0.5, 0.5, 0.5]
    std = owner.std or spec_input.get("std") or [0.5, 0.5, 0.5]
    channels = owner.channels or spec_input.get("channels") or len(mean)
    return user_bundle(req.data, int(size), int(channels), mean, std, labels=req.labels, root=req.root)


def model_candidate(path: Path, spec: ModelSpec, allow_pickle: bool, prefix: str = "") -> Candidate:
    """A model file as the evaluation sees it (its key: the weights file's digest)."""
    file = weights_file(path)
    name = path.name if path.is_dir() else path.stem
    return Candidate(id=f"{prefix}{name}", key=f"file:{file_sha256(file)}", spec=spec,
                     load=lambda: load_module(path, spec, allow_pickle), arch=str(spec.arch.get("name", "")))


def _spec(path: Path, arch: str | None, req: Request, zoo_data: DataBundle | None, data: DataBundle,
          fallback: Declared) -> ModelSpec:
    return build_spec(describe(path, arch, req, zoo_data, fallback), list(data.class_names), data.id)


# ---------------------------------------------------------------------------------------------- the verification
def near_chance(acc: float, classes: int, n: int) -> bool:
    """Whether an accuracy is within three binomial standard errors (or 0.1) of guessing."""
    chance = 1.0 / max(classes, 1)
    return math.isfinite(acc) and acc < chance + max(0.1, 3 * math.sqrt(chance * (1 - chance) / max(n, 1)))


def run(req: Request) -> list[Verdict]:
    """Every suspect against the owner under every method, each compared with the task's null."""
    configure_threads()
    dev = resolve_device(req.device)
    zoo_data = None if req.data is not None else load_bundle(req.zoo_cfg["data"])
    owner_decl = describe(req.owner, req.arch, req, zoo_data)
    data = task_data(req, owner_decl)
    owner_spec = build_spec(owner_decl, list(data.class_names), data.id)
    owner = model_candidate(req.owner, owner_spec, req.allow_pickle)
    like_owner = Declared(arch=owner_spec.arch, size=owner_spec.input["size"], channels=owner_spec.input["channels"],
                          mean=owner_spec.input["mean"], std=owner_spec.input["std"])
    suspects = [model_candidate(p, _spec(p, req.suspect_arch or req.arch, req, zoo_data, data, like_owner),
                                req.allow_pickle) for p in req.suspects]
    negatives: list[Candidate] = []
    sources = []
    if req.negatives is not None:
        negatives += [model_candidate(p, _spec(p, req.suspect_arch or req.arch, req, zoo_data, data, like_owner),
                                      req.allow_pickle, prefix="negative:") for p in find_models(req.negatives)]
        sources.append(f"{len(negatives)} independent models in {req.negatives}")
    if req.calibrate:
        recipe = CalibrationRecipe(models=req.calibrate, steps=req.calibrate_steps, lr=req.calibrate_lr,
                                   batch_size=req.calibrate_batch, optimizer=req.calibrate_optimizer)
        trained = trained_independents(owner_spec, data, recipe, Path(req.runs_dir) / "cache" / "verify_null", dev,
                                       progress=req.progress)
        negatives += trained
        sources.append(f"{len(trained)} models of the owner's architecture trained here on the given data "
                       f"({recipe.budget()})")
    store = ArtefactStore(Path(req.runs_dir) / "cache" / "fingerprints")
    workdir = Path(req.runs_dir) / "cache" / "methods" / (req.zoo_cfg["name"] if req.data is None else data.id)
    verdicts = []
    for method_cfg in req.methods:
        method = make_method(method_cfg, data, dev, 0, workdir, req.progress)
        evaluator = Evaluator(method, data, dev, store)
        prov = Provenance(req.zoo_cfg["name"] if req.data is None else data.id, method_cfg["name"], "verify", "", 0,
                          labelled=False)
        records = evaluator.evaluate([owner], [(c, None) for c in suspects + negatives], prov)
        scored, null_recs = records[: len(suspects)], records[len(suspects):]
        null = np.array([r.score for r in null_recs if r.status == "ok" and math.isfinite(r.score)])
        how = "; ".join(sources)
        if not sources and req.data is None:
            null, how = thresholds.stored_null(req.runs_dir, req.zoo_cfg["name"], method_cfg["name"])
        if null.size == 0:
            how = ("uncalibrated for this task: give negatives=DIR (independent models of the same task) or "
                   "calibrate=K (train K here)" if req.data is not None or sources else
                   f"no calibration records for method '{method_cfg['name']}' on zoo '{req.zoo_cfg['name']}' under "
                   f"{req.runs_dir}; run `python -m fpbench.run zoo={req.zoo_cfg['name']} method={method_cfg['name']}`"
                   " once to create them")
        cal = thresholds.conformal_from_scores(null, req.target_fpr, how) if null.size else None
        for rec in scored:
            verdicts.append(_verdict(rec, method.threshold, cal, null, how, data))
    if all(v.status != "ok" for v in verdicts):  # nothing could be scored: say why, as an error
        v = verdicts[0]
        raise FpbenchError(f"method {v.method} cannot score {v.suspect} against {owner.id}: {v.calibration}")
    return verdicts


def _verdict(rec: Record, threshold: float, cal: thresholds.Threshold | None, null: np.ndarray, how: str,
             data: DataBundle) -> Verdict:
    if rec.status != "ok" or not math.isfinite(rec.score):
        why = rec.error if rec.status != "ok" else (f"a non-finite score ({rec.score}): a model with non-finite "
                                                     "weights or outputs? No verdict is possible")
        return Verdict(method=rec.method, suspect=rec.suspect, score=float("nan"), threshold=threshold, decision=False,
                       calibrated_threshold=None, calibrated_decision=None, calibration=why,
                       status="n/a" if rec.status == "n/a" else "error", owner_accuracy=rec.owner_accuracy,
                       suspect_accuracy=rec.suspect_accuracy)
    n_test = min(len(data.split("test")), 1000)
    warnings = []
    for who, acc in (("owner", rec.owner_accuracy), (f"suspect {rec.suspect}", rec.suspect_accuracy)):
        if near_chance(acc, data.num_classes, n_test):
            warnings.append(f"{who} accuracy {acc:.3f} on the given data is near chance ({1 / data.num_classes:.3f}): "
                            "wrong normalisation (mean=/std=), wrong data or wrong labels?")
    if cal is not None and not cal.supported:
        warnings.append(f"the null has {cal.negatives} negatives: too few to support FPR {cal.target_fpr:g} (needs "
                        f">= {math.ceil(1 / cal.target_fpr)}); raise calibrate= or add negatives")
    return Verdict(method=rec.method, suspect=rec.suspect, score=float(rec.score), threshold=threshold,
                   decision=rec.score >= threshold, calibrated_threshold=cal.value if cal else None,
                   calibrated_decision=None if cal is None else rec.score >= cal.value,
                   calibration=cal.describe() if cal else how, null_size=int(null.size),
                   p_value=thresholds.empirical_p_value(rec.score, null) if null.size else None,
                   owner_accuracy=rec.owner_accuracy, suspect_accuracy=rec.suspect_accuracy, warnings=warnings)


def verify(method_name: str, owner: Path, suspect: Path, arch: str | None = None, suspect_arch: str | None = None,
           zoo: str = "tiny", runs_dir: Path = Path("runs"), target_fpr: float = 0.01, allow_pickle: bool = False,
           device: str = "auto", **options: Any) -> Verdict:
    """One suspect file against one owner file with one method (``options``: the other fields of :class:`Request`)."""
    req = Request(owner=Path(owner), suspects=[Path(suspect)], methods=[load_option("method", method_name)],
                  zoo_cfg=load_option("zoo", zoo), arch=arch, suspect_arch=suspect_arch, runs_dir=Path(runs_dir),
                  target_fpr=target_fpr, allow_pickle=allow_pickle, device=device, **options)
    return run(req)[0]


def export(zoo: str, model_id: str, out: Path, runs_dir: Path = Path("runs")) -> Path:
    """Write a built zoo model as ``out`` (safetensors) plus its spec as ``out.json``."""
    from safetensors.torch import save_file

    from fpbench.zoo.build import Zoo

    z = Zoo(load_option("zoo", zoo), runs_dir, torch.device("cpu"), progress=False)
    roots = {r.id: r for r in z.roots()}
    root_id, _, rest = model_id.partition("/")
    if root_id not in roots:
        raise ConfigError(f"model '{model_id}': unknown root '{root_id}'; roots of zoo {zoo}: {', '.join(roots)}")
    zm = roots[root_id]
    if rest:
        zm = z.child(zm, rest)
    model = z.load_module(zm)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    out.with_suffix(".json").write_text(json.dumps(zm.spec.to_dict(), indent=1))
    return out


def _names(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _floats(value: Any, key: str) -> list[float] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        return [float(v) for v in items]
    except ValueError:
        raise ConfigError(f"{key}={value}: give numbers, one per channel (e.g. {key}=[0.5,0.5,0.5])") from None


def request_from(c: dict[str, Any]) -> Request:
    """A :class:`Request` from the resolved ``conf/verify.yaml`` (types and common values already checked by the
    stage: ``fpbench.stage``)."""
    for key in ("calibrate", "calibrate_steps"):
        if c[key] < 0:
            raise ConfigError(f"invalid option '{key}': must be an integer >= 0, got {c[key]}")
    fpr = float(c["target_fpr"])
    suspect = Path(str(c["suspect"]))
    return Request(
        owner=Path(str(c["owner"])), suspects=find_models(suspect), zoo_cfg=c["zoo"],
        methods=[load_option("method", m) for m in _names(c["methods"])], data=c.get("data"), labels=c.get("labels"),
        root=c.get("root"), size=c.get("size"), mean=_floats(c.get("mean"), "mean"), std=_floats(c.get("std"), "std"),
        arch=c.get("arch"), suspect_arch=c.get("suspect_arch"),
        negatives=Path(str(c["negatives"])) if c.get("negatives") else None, calibrate=int(c["calibrate"]),
        calibrate_steps=int(c["calibrate_steps"]), calibrate_lr=float(c["calibrate_lr"]),
        calibrate_batch=int(c["calibrate_batch"]), calibrate_optimizer=str(c["calibrate_optimizer"]), runs_dir=Path(c["runs_dir"]), target_fpr=fpr,
        allow_pickle=c["allow_pickle"], device=str(c["device"]), progress=c["progress"])


def render(verdicts: list[Verdict], fmt: str) -> str:
    """One verdict as lines; several as a table (``format=json``: a JSON list)."""
    if fmt == "json":
        return json.dumps([v.row() for v in verdicts], indent=1)
    if len(verdicts) == 1:
        return "\n".join(verdicts[0].lines())
    table = pd.DataFrame([{
        "suspect": v.suspect, "method": v.method, "score": round(v.score, 4), "threshold": round(v.threshold, 4),
        "fixed": ("DERIVED" if v.decision else "not derived") if v.status == "ok" else v.status,
        "null n": v.null_size,
        "p-value": None if v.p_value is None else round(v.p_value, 4),
        "calibrated t": None if v.calibrated_threshold is None else round(v.calibrated_threshold, 4),
        "calibrated": "-" if v.calibrated_decision is None else ("DERIVED" if v.calibrated_decision else "not derived"),
    } for v in verdicts])
    notes = sorted({f"{v.method}: {v.calibration}" for v in verdicts if v.status == "ok"}
                   | {f"{v.method} x {v.suspect}: {v.status}: {v.calibration}" for v in verdicts if v.status != "ok"}
                   | {f"warning: {w}" for v in verdicts for w in v.warnings})
    return table.to_markdown(index=False) + "\n\n" + "\n".join(notes)


VERIFY = Stage(module="fpbench.verify", config="verify", list_keys=("methods",), required=("owner", "suspect"))
EXPORT = Stage(module="fpbench.verify export", config="export", required=("model", "out"))


@hydra.main(config_path=CONF_PATH, config_name=VERIFY.config, version_base="1.3")
def verify_main(cfg: DictConfig) -> None:
    with VERIFY.running(cfg):
        c = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(c, dict)
        if c["format"] not in ("table", "json"):
            raise ConfigError(f"format={c['format']}: must be table or json")
        out = Path(c["out"]) if c.get("out") else None
        if out is not None and (out.is_dir() or out.suffix != ".csv"):
            raise ConfigError(f"out={out}: give a file name ending in .csv (the verdicts are written as CSV)")
        verdicts = run(request_from(c))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([v.row() for v in verdicts]).to_csv(out, index=False)
        print(render(verdicts, c["format"]))


@hydra.main(config_path=CONF_PATH, config_name=EXPORT.config, version_base="1.3")
def export_main(cfg: DictConfig) -> None:
    with EXPORT.running(cfg):
        out = Path(str(cfg.out))
        if out.suffix != ".safetensors":
            raise ConfigError(f"out={out}: the weights are written as safetensors and the spec beside them as "
                              f"<out>.json; give a file name ending in .safetensors")
        if out.is_dir():
            raise ConfigError(f"out={out} is a directory; give a file name ending in .safetensors")
        out = export(str(cfg.zoo.name), str(cfg.model), out, Path(str(cfg.runs_dir)))
        print(f"wrote {out} and {out.with_suffix('.json')}")


def _listify(argv: list[str]) -> list[str]:
    """``method=a,b,c`` as the config's ``methods`` list (``method`` is also a config group, which Hydra would try
    to select); ``mean=``/``std=`` comma lists as lists."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in ("method", "mean", "std") and value[:1] not in "[\"'":
            arg = f"{'methods' if key == 'method' else key}=[{value}]"
        out.append(arg)
    return out


def cli(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        EXPORT.launch(export_main, argv[1:])
    else:
        VERIFY.launch(verify_main, _listify(argv))


if __name__ == "__main__":
    cli()
