"""The everyday question: does this suspect model derive from my model? ``python -m fpbench.verify``.

    python -m fpbench.verify method=sac owner=mine.safetensors suspect=theirs.safetensors arch=resnet
    python -m fpbench.verify export zoo=ci model=resnet-s0/finetune out=child.safetensors

Models are read from safetensors only (a pickle checkpoint is refused unless ``allow_pickle=true``, and is
then loaded weights-only). The architecture is a zoo arch key (``arch=resnet`` of ``zoo=tiny``), a timm
model name (``arch=resnet18``), or a model spec JSON written next to the file (``<file>.json``, as
``export`` writes it: this is how CLIP-style children with an open_clip config are named). The method's
fixed threshold is reported with the threshold calibrated on the zoo's held-out independent roots, when
calibration records exist, so the decision says at which false-positive rate it was made.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpbench import metrics as M
from fpbench.api import ConfigError, Fingerprint, FpbenchError, MethodContext, ModelSpec
from fpbench.config import load_option
from fpbench.records import cell_path, read_cell
from fpbench.registry import UnknownName, method_class
from fpbench.safeload import load_model
from fpbench.subject import ModelSubject
from fpbench.utils import configure_threads, file_sha256, resolve_device, stable_hash
from fpbench.zoo.store import ArtefactStore

CALIBRATION = "_calibration"
USAGE = ("usage: python -m fpbench.verify method=NAME owner=FILE suspect=FILE [arch=NAME] [suspect_arch=NAME] "
         "[zoo=tiny] [runs_dir=runs] [target_fpr=0.01] [allow_pickle=false] [device=auto]\n"
         "       python -m fpbench.verify export zoo=NAME model=ID out=FILE [runs_dir=runs]")


@dataclass
class Verdict:
    method: str
    score: float
    threshold: float
    decision: bool
    calibrated_threshold: float | None
    calibrated_decision: bool | None
    calibration: str  # where the calibrated threshold comes from, in words

    def lines(self) -> list[str]:
        out = [f"method {self.method}: score {self.score:.4f}",
               f"fixed threshold {self.threshold:.4f} -> {'DERIVED' if self.decision else 'not derived'}"]
        if self.calibrated_threshold is not None:
            out.append(f"calibrated threshold {self.calibrated_threshold:.4f} -> "
                       f"{'DERIVED' if self.calibrated_decision else 'not derived'} ({self.calibration})")
        else:
            out.append(f"no calibrated threshold: {self.calibration}")
        return out


def spec_for(path: Path, arch: str | None, zoo_cfg: dict[str, Any], data: Any) -> ModelSpec:
    """A model's spec: ``<file>.json`` beside it, else a zoo arch key, else a timm model name."""
    sidecar = path.with_suffix(".json")
    if arch is None and sidecar.exists():
        return ModelSpec.from_dict(json.loads(sidecar.read_text()))
    if arch is None:
        raise ConfigError(f"no architecture for {path}: pass arch=NAME (a zoo arch key: "
                          f"{', '.join(zoo_cfg['archs'])}; or a timm model name) or put its spec in {sidecar}")
    arch_cfg = dict(zoo_cfg["archs"][arch]) if arch in zoo_cfg["archs"] else {"builder": "timm", "name": arch}
    if arch_cfg.get("builder", "timm") == "timm":
        import timm

        if not timm.is_model(arch_cfg["name"]):
            raise ConfigError(f"arch '{arch}' is neither an arch of zoo '{zoo_cfg['name']}' "
                              f"({', '.join(zoo_cfg['archs'])}) nor a timm model name")
    return ModelSpec(arch=arch_cfg, num_classes=data.num_classes, class_names=list(data.class_names),
                     input=data.input_spec(), data_id=data.id)


def _with_wrapper_prefix(path: Path, spec: ModelSpec, allow_pickle: bool) -> nn.Module:
    """Load a zoo-format file (``net.*`` keys) or a plain timm state dict (keys without the prefix)."""
    from fpbench.safeload import load_state

    state = load_state(path, allow_pickle=allow_pickle)
    if spec.arch.get("builder", "timm") in ("timm", "timm_vgg") and not any(k.startswith("net.") for k in state):
        import tempfile

        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as tmp:
            fixed = Path(tmp) / "prefixed.safetensors"
            save_file({f"net.{k}": v.contiguous() for k, v in state.items()}, str(fixed))
            return load_model(fixed, spec)
    return load_model(path, spec, allow_pickle=allow_pickle)


def calibrated(runs_dir: Path, zoo: str, method: str, target_fpr: float) -> tuple[float | None, str]:
    df = read_cell(cell_path(runs_dir, zoo, method, CALIBRATION))
    if df is None or df.empty or not (df["status"] == "ok").any():
        return None, (f"no calibration records for method '{method}' on zoo '{zoo}' under {runs_dir}; run "
                      f"`python -m fpbench.run zoo={zoo} method={method}` once to create them")
    ok = df[df["status"] == "ok"]
    t = M.calibrate_threshold(ok["score"].to_numpy(), target_fpr)
    suspects = sorted(set(ok["suspect"]))
    return t, (f"calibrated at FPR {target_fpr:g} on {len(ok)} negative pairs: zoo '{zoo}' owners vs its "
               f"held-out independent roots {', '.join(suspects)}")


def verify(method_name: str, owner: Path, suspect: Path, arch: str | None = None, suspect_arch: str | None = None,
           zoo: str = "tiny", runs_dir: Path = Path("runs"), target_fpr: float = 0.01, allow_pickle: bool = False,
           device: str = "auto") -> Verdict:
    from fpbench.data import load_bundle

    configure_threads()
    dev = resolve_device(device)
    method_cfg = load_option("method", method_name)
    zoo_cfg = load_option("zoo", zoo)
    data = load_bundle(zoo_cfg["data"])
    owner_spec = spec_for(owner, arch, zoo_cfg, data)
    suspect_spec = spec_for(suspect, suspect_arch or arch, zoo_cfg, data)
    owner_subject = ModelSubject(owner.stem, _with_wrapper_prefix(owner, owner_spec, allow_pickle), owner_spec, dev)
    suspect_subject = ModelSubject(suspect.stem, _with_wrapper_prefix(suspect, suspect_spec, allow_pickle),
                                   suspect_spec, dev)

    workdir = Path(runs_dir) / "cache" / "methods" / zoo / method_name
    workdir.mkdir(parents=True, exist_ok=True)
    cls = method_class(method_cfg.get("impl", method_cfg["name"]))
    method = cls(method_cfg.get("params", {}), MethodContext(data=data, device=dev, seed=0, workdir=workdir,
                                                             progress=False))
    params = {k: v for k, v in method.params.items() if k not in ("threshold", "query_budget")}
    key = stable_hash({"verify": method_name, "v": method.version, "params": params, "owner": file_sha256(owner),
                       "data": data.id})
    store = ArtefactStore(Path(runs_dir) / "cache" / "fingerprints")
    meta, tensors, _ = store.get_or_build(key, lambda: _fingerprint(method, owner_subject))
    fp = Fingerprint(tensors=dict(tensors or {}), meta=meta["meta"])
    method.check_applicable(owner_subject, suspect_subject)
    suspect_subject.query_budget = method.query_budget
    score = float(method.score(fp, suspect_subject))
    cal_t, how = calibrated(Path(runs_dir), zoo, method_name, target_fpr)
    return Verdict(method=method_name, score=score, threshold=method.threshold, decision=score >= method.threshold,
                   calibrated_threshold=cal_t, calibrated_decision=None if cal_t is None else score >= cal_t,
                   calibration=how)


def _fingerprint(method: Any, owner: ModelSubject) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    fp = method.fingerprint(owner)
    return {"meta": fp.meta}, fp.tensors


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


def parse(argv: list[str]) -> tuple[str, dict[str, str]]:
    command = "export" if argv and argv[0] == "export" else "verify"
    args: dict[str, str] = {}
    for arg in argv[1:] if command == "export" else argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"unexpected argument '{arg}'. {USAGE}")
        args[key] = value
    allowed = ({"zoo", "model", "out", "runs_dir"} if command == "export" else
               {"method", "owner", "suspect", "arch", "suspect_arch", "zoo", "runs_dir", "target_fpr",
                "allow_pickle", "device"})
    unknown = set(args) - allowed
    required = {"zoo", "model", "out"} if command == "export" else {"method", "owner", "suspect"}
    if unknown:
        raise ConfigError(f"unknown argument(s) {', '.join(sorted(unknown))}. {USAGE}")
    if required - set(args):
        raise ConfigError(f"missing {', '.join(sorted(required - set(args)))}. {USAGE}")
    return command, args


def cli(argv: list[str] | None = None) -> None:
    try:
        command, a = parse(sys.argv[1:] if argv is None else argv)
        if command == "export":
            out = export(a["zoo"], a["model"], Path(a["out"]), Path(a.get("runs_dir", "runs")))
            print(f"wrote {out} and {out.with_suffix('.json')}")
            return
        verdict = verify(a["method"], Path(a["owner"]), Path(a["suspect"]), arch=a.get("arch"),
                         suspect_arch=a.get("suspect_arch"), zoo=a.get("zoo", "tiny"),
                         runs_dir=Path(a.get("runs_dir", "runs")), target_fpr=float(a.get("target_fpr", 0.01)),
                         allow_pickle=a.get("allow_pickle", "false").lower() == "true",
                         device=a.get("device", "auto"))
    except (FpbenchError, UnknownName, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(verdict.lines()))


if __name__ == "__main__":
    cli()
