"""The everyday question: does this suspect model derive from my model? ``python -m fpbench.verify``.

    python -m fpbench.verify method=sac owner=mine.safetensors suspect=theirs.safetensors arch=resnet
    python -m fpbench.verify export zoo=ci model=resnet-s0/finetune out=child.safetensors

A Hydra app (``conf/verify.yaml``; ``conf/export.yaml`` for ``export``): ``method=`` and ``zoo=`` select configs of
their groups, so ``method.params.threshold=0.9`` works as in ``fpbench.run``. Scoring goes through
``fpbench.evaluate`` -- the same path as a grid cell: the same method construction, fingerprint cache,
access-limited suspect, query budget and accuracy check. Models are read from safetensors only (a pickle
checkpoint is refused unless ``allow_pickle=true``, and is then loaded weights-only). The architecture is a zoo
arch key (``arch=resnet`` of ``zoo=tiny``), a timm model name (``arch=resnet18``), or a model spec JSON written
next to the file (``<file>.json``, as ``export`` writes it: this is how CLIP-style children with an open_clip
config are named). The method's fixed threshold is reported with the threshold calibrated on the zoo's
held-out independent roots, when calibration records exist, so the decision says at which false-positive rate
it was made.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpbench import thresholds
from fpbench.api import ModelSpec
from fpbench.config import load_option
from fpbench.errors import ConfigError, FpbenchError
from fpbench.evaluate import Candidate, Evaluator, Provenance, make_method
from fpbench.records import to_frame
from fpbench.safeload import load_model
from fpbench.utils import configure_threads, file_sha256, resolve_device
from fpbench.zoo.store import ArtefactStore

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


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


def file_candidate(path: Path, spec: ModelSpec, allow_pickle: bool) -> Candidate:
    """A model file as the evaluation sees it: its content digest is its key (fingerprints are cached by it)."""
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist (or is not a file); give the path of a .safetensors file")
    return Candidate(id=path.stem, key=f"file:{file_sha256(path)}", spec=spec,
                     load=lambda: _with_wrapper_prefix(path, spec, allow_pickle), arch=str(spec.arch.get("name", "")))


def verify(method_name: str, owner: Path, suspect: Path, arch: str | None = None, suspect_arch: str | None = None,
           zoo: str = "tiny", runs_dir: Path = Path("runs"), target_fpr: float = 0.01, allow_pickle: bool = False,
           device: str = "auto", method_cfg: dict[str, Any] | None = None, zoo_cfg: dict[str, Any] | None = None,
           ) -> Verdict:
    """Score one suspect file against one owner file with one method, through the grid's evaluation path."""
    from fpbench.data import load_bundle

    configure_threads()
    dev = resolve_device(device)
    method_cfg = method_cfg or load_option("method", method_name)
    zoo_cfg = zoo_cfg or load_option("zoo", zoo)
    data = load_bundle(zoo_cfg["data"])
    owner_c = file_candidate(Path(owner), spec_for(Path(owner), arch, zoo_cfg, data), allow_pickle)
    suspect_c = file_candidate(Path(suspect), spec_for(Path(suspect), suspect_arch or arch, zoo_cfg, data),
                               allow_pickle)
    method = make_method(method_cfg, data, dev, 0, Path(runs_dir) / "cache" / "methods" / zoo_cfg["name"])
    evaluator = Evaluator(method, data, dev, ArtefactStore(Path(runs_dir) / "cache" / "fingerprints"))
    prov = Provenance(zoo_cfg["name"], method_cfg["name"], "verify", "", 0, labelled=False)
    rec = to_frame(evaluator.evaluate([owner_c], [(suspect_c, None)], prov)).iloc[0]
    if rec["status"] != "ok":
        raise FpbenchError(f"method {method_cfg['name']} cannot score this pair: {rec['error']}")
    score = float(rec["score"])
    if not math.isfinite(score):
        raise FpbenchError(f"method {method_cfg['name']} gave a non-finite score ({score}) for this pair: a model "
                           "with non-finite weights or outputs? No verdict is possible")
    cal = thresholds.stored(runs_dir, zoo_cfg["name"], method_cfg["name"], target_fpr)
    how = cal.describe() if cal else (
        f"no calibration records for method '{method_cfg['name']}' on zoo '{zoo_cfg['name']}' under {runs_dir}; run "
        f"`python -m fpbench.run zoo={zoo_cfg['name']} method={method_cfg['name']}` once to create them")
    return Verdict(method=method_cfg["name"], score=score, threshold=method.threshold,
                   decision=score >= method.threshold, calibrated_threshold=cal.value if cal else None,
                   calibrated_decision=None if cal is None else score >= cal.value, calibration=how)


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


def _hydra(config_name: str, argv: list[str], body: Any) -> None:
    """Run ``body(cfg)`` as the Hydra app ``config_name`` on ``argv``; an FpbenchError is one line, exit code 2."""
    import hydra

    @hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")
    def main(cfg: Any) -> None:
        from omegaconf import OmegaConf

        c = OmegaConf.to_container(cfg, resolve=True)
        try:
            body(c)
        except (FpbenchError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    saved = sys.argv
    sys.argv = [f"fpbench.{config_name}", *argv]
    try:
        main()
    finally:
        sys.argv = saved


def _required(c: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if c.get(key) in (None, ""):
            raise ConfigError(f"missing {key}=...: give the path of a model file (e.g. {key}=model.safetensors)"
                              if key in ("owner", "suspect", "out") else f"missing {key}=...")


def _verify_body(c: dict[str, Any]) -> None:
    _required(c, "owner", "suspect")
    verdict = verify(c["method"]["name"], Path(c["owner"]), Path(c["suspect"]), arch=c.get("arch"),
                     suspect_arch=c.get("suspect_arch"), runs_dir=Path(c["runs_dir"]),
                     target_fpr=float(c["target_fpr"]), allow_pickle=bool(c["allow_pickle"]), device=str(c["device"]),
                     method_cfg=c["method"], zoo_cfg=c["zoo"])
    print("\n".join(verdict.lines()))


def _export_body(c: dict[str, Any]) -> None:
    _required(c, "model", "out")
    out = Path(c["out"])
    if out.suffix != ".safetensors":
        raise ConfigError(f"out={out}: the weights are written as safetensors and the spec beside them as "
                          f"<out>.json; give a file name ending in .safetensors")
    if out.is_dir():
        raise ConfigError(f"out={out} is a directory; give a file name ending in .safetensors")
    out = export(c["zoo"]["name"], c["model"], out, Path(c["runs_dir"]))
    print(f"wrote {out} and {out.with_suffix('.json')}")


def cli(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        _hydra("export", argv[1:], _export_body)
    else:
        _hydra("verify", argv, _verify_body)


if __name__ == "__main__":
    cli()
