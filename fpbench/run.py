"""Run one cell (method x transform on a zoo) and store its records: ``python -m fpbench.run``.

    python -m fpbench.run method=cmf transform=prune30            # one cell on the default zoo
    python -m fpbench.run -m method=cmf transform=finetune,quant8 # a Hydra multirun sweep
    python -m fpbench.run zoo=ci method=cmf transform=finetune    # the tiny test tier

A cell is skipped when its records exist with the same config hash (``force=true`` re-runs it).
A failing cell writes an error record and the sweep goes on. Scoring itself is ``fpbench.evaluate``: this
module is the resume-and-cache wrapper that turns a zoo and a cell config into owners and suspects.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fpbench import metrics as M
from fpbench import thresholds
from fpbench.api import Method, PoolModel
from fpbench.config import zoo_modality
from fpbench.errors import ConfigError, FpbenchError, NotApplicable, PipelineMismatch, UnknownName  # noqa: F401 (re-exported)
from fpbench.evaluate import (
    Candidate,
    Evaluator,
    Provenance,
    base_record,
    checked_subject,
    make_method,
    method_impl,
    resolved_method,
    suspect_view,
)
from fpbench.records import cell_done, cell_path, merge_models, models_path, read_cell, to_frame, write_cell
from fpbench.registry import method_class, transform_class
from fpbench.stage import CONF_PATH, Stage
from fpbench.thresholds import CALIBRATION
from fpbench.utils import available_cores, configure_threads, resolve_device, stable_hash
from fpbench.zoo.build import Zoo, ZooModel, resolved_transform, transform_config
from fpbench.zoo.store import ArtefactStore

log = logging.getLogger("fpbench.run")
RECORD_VERSION = "1"


@dataclass
class CellSpec:
    zoo_cfg: dict[str, Any]
    method_cfg: dict[str, Any]
    transform_cfg: dict[str, Any]
    seed: int = 0
    target_fpr: float = 0.01
    runs_dir: Path = Path("runs")
    device: str = "auto"
    progress: bool = True
    force: bool = False

    @property
    def config_hash(self) -> str:
        return stable_hash({"v": RECORD_VERSION, "zoo": scored_zoo(self.zoo_cfg), **method_identity(self.method_cfg),
                            "transform": resolved_transform(self.transform_cfg), "seed": self.seed})

    @property
    def calibration_hash(self) -> str:
        return calibration_hash(self.zoo_cfg, self.method_cfg, self.seed)


def method_identity(method_cfg: dict[str, Any]) -> dict[str, Any]:
    """What a method's scores depend on: its resolved config and implementation version, and the protecting
    transform of a method that protects its owners (``protect: cmf_embed``). The fixed decision threshold is left
    out: a changed threshold re-decides the stored pairs (:func:`redecide`), it does not re-score them."""
    protect = method_cfg.get("protect")
    method = resolved_method(method_cfg)
    method = {**method, "params": {k: v for k, v in method["params"].items() if k != "threshold"}}
    return {"method": method, **({"protect": resolved_transform(protect)} if protect else {})}


def redecide(df: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, bool]:
    """Stored records at the method's current fixed threshold: ``threshold`` and ``decision`` rewritten where the
    threshold they were decided at differs (scores untouched); whether anything changed."""
    if not np.isfinite(threshold) or "threshold" not in df or not len(df) or (df["threshold"] == threshold).all():
        return df, False
    out = df.copy()
    out["threshold"] = float(threshold)
    ok = out["status"] == "ok"
    scores = out["score"].astype(float)
    out.loc[ok, "decision"] = (np.isfinite(scores[ok]) & (scores[ok] >= threshold)).astype(int)
    return out, True


CALIBRATION_KEYS = ("calibration", "calibration_transforms")


def scored_zoo(zoo_cfg: dict[str, Any]) -> dict[str, Any]:
    """The zoo config a cell's records depend on: more calibration models change thresholds, not cells."""
    return {k: v for k, v in zoo_cfg.items() if k not in CALIBRATION_KEYS}


def calibration_hash(zoo_cfg: dict[str, Any], method_cfg: dict[str, Any], seed: int) -> str:
    return stable_hash({"v": RECORD_VERSION, "zoo": zoo_cfg, **method_identity(method_cfg), "seed": seed})


def training_pool_key(zoo_cfg: dict[str, Any]) -> str:
    """What the zoo's training models are made from (their data, architectures, recipes and seeds)."""
    return stable_hash({k: zoo_cfg.get(k) for k in ("data", "archs", "train", "training", "training_transforms",
                                                    "transform_defaults", "transform_params")})


def unrelated(owner: Candidate, suspect: Candidate) -> bool:
    return not set(owner.root_ids) & set(suspect.root_ids)


def candidate(zoo: Zoo, zm: ZooModel) -> Candidate:
    """A zoo model as the evaluation sees it."""
    return Candidate(id=zm.id, key=zm.key, spec=zm.spec, load=lambda: zoo.load_module(zm), root_ids=zm.root_ids,
                     arch=zm.arch, stored_accuracy=zm.accuracy,
                     owner_private=dict(zm.meta.get("info", {}).get("owner_private") or {}))


def model_row(zm: ZooModel) -> dict[str, Any]:
    """A zoo model's row of ``_models.parquet``: where it came from (both parents of a cross-root merge) and its
    scalar build info (accuracy, parent accuracy, weight change)."""
    info = {k: v for k, v in zm.meta.get("info", {}).items() if isinstance(v, (int, float, str, bool))}
    return {"id": zm.id, "root": zm.root_id, "arch": zm.arch, "parent": zm.parent_id or "",
            "partner": getattr(zm, "partner_id", None) or "", "transform": zm.transform or "", "key": zm.key, **info}


class CellRunner:
    """Runs cells that share a zoo and a process: models, accuracy checks and fingerprints are reused."""

    def __init__(self, spec: CellSpec) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.zoo = Zoo(spec.zoo_cfg, spec.runs_dir, self.device, seed=spec.seed, progress=spec.progress)
        self.fp_store = ArtefactStore(Path(spec.runs_dir) / "cache" / "fingerprints")
        self.accuracy: dict[str, float] = {}  # model key -> accuracy checked through the query pipeline

    # ------------------------------------------------------------------ building blocks (lineage, attacks)
    def method(self, method_cfg: dict[str, Any]) -> Method:
        workdir = Path(self.spec.runs_dir) / "cache" / "methods" / self.spec.zoo_cfg["name"]
        return make_method(method_cfg, self.zoo.data, self.device, self.spec.seed, workdir, self.spec.progress,
                           training_pool=(self.training_pool, training_pool_key(self.spec.zoo_cfg)))

    def training_pool(self, access: str) -> Iterator[PoolModel]:
        """The zoo's training models (built on first use), each checked through the query pipeline and seen at
        ``access``: what a method that learns from other models trains on."""
        for zm in self.zoo.training_models():
            subject = checked_subject(candidate(self.zoo, zm), self.zoo.data, self.device, self.accuracy)
            yield PoolModel(id=zm.id, root=zm.root_id, subject=suspect_view(subject, access, None))

    def evaluator(self, method: Method) -> Evaluator:
        return Evaluator(method, self.zoo.data, self.device, self.fp_store, self.spec.seed, self.accuracy)

    def candidates(self, models: list[ZooModel]) -> list[Candidate]:
        return [candidate(self.zoo, zm) for zm in models]

    def owners(self, method_cfg: dict[str, Any], roots: list[ZooModel]) -> list[ZooModel]:
        """Roots as the method's owners: with ``protect`` in the method config (a signature-embedding
        transform), every root -- calibration roots too, each with its own secret -- is replaced by its
        protected version, and the cell's transform is applied to that."""
        protect = method_cfg.get("protect")
        return [self.zoo.child(r, protect) for r in roots] if protect else roots

    def calibration(self, method: Method, method_cfg: dict[str, Any], force: bool = False) -> pd.DataFrame:
        """Scores of every owner against the held-out calibration models, stored once per method.

        Owners are the roots and the calibration roots; suspects are the calibration roots and their children.
        A pair of a calibration root and its own descendant is left out: every stored pair is a negative."""
        s = self.spec
        path = thresholds.calibration_path(s.runs_dir, s.zoo_cfg["name"], method_cfg["name"])
        chash = calibration_hash(s.zoo_cfg, method_cfg, s.seed)
        if not force and cell_done(path, chash):
            return read_cell(path)  # type: ignore[return-value]
        owners = self.candidates(self.owners(method_cfg, [*self.zoo.roots(), *self.zoo.calibration_roots()]))
        suspects = self.candidates(self.owners(method_cfg, self.zoo.calibration_models()))
        prov = Provenance(s.zoo_cfg["name"], method_cfg["name"], CALIBRATION, chash, s.seed, role="calibration")
        df = to_frame(self.evaluator(method).evaluate(owners, [(c, None) for c in suspects], prov,
                                                      include=unrelated))
        write_cell(path, df)
        return df

    # ------------------------------------------------------------------ one cell
    def run(self) -> tuple[pd.DataFrame, bool]:
        """Records of the cell (from disk when already done) and whether they were cached."""
        s = self.spec
        path = cell_path(s.runs_dir, s.zoo_cfg["name"], s.method_cfg["name"], s.transform_cfg["name"])
        if not s.force and cell_done(path, s.config_hash):
            if not cell_done(thresholds.calibration_path(s.runs_dir, s.zoo_cfg["name"], s.method_cfg["name"]),
                             s.calibration_hash):  # missing or damaged: rebuilt, so the summary is calibrated
                self.calibration(self.method(s.method_cfg), s.method_cfg)
            threshold = self.fixed_threshold()
            df, changed = redecide(read_cell(path), threshold)  # type: ignore[arg-type]
            if changed:
                log.info("%s x %s: re-decided at the config's threshold %g (scores kept)", s.method_cfg["name"],
                         s.transform_cfg["name"], threshold)
                write_cell(path, df)
            return df, True
        try:
            df = self.score_cell()
        except Exception as exc:  # the sweep goes on: the failure is a record the tables show
            log.error("cell %s x %s failed: %s", s.method_cfg["name"], s.transform_cfg["name"], exc)
            df = to_frame([self._status_record("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")])
        write_cell(path, df, keep_good=True)  # a failed re-run never replaces good records
        self.write_models()
        return df, False

    def score_cell(self) -> pd.DataFrame:
        s = self.spec
        method = self.method(s.method_cfg)
        self.calibration(method, s.method_cfg, force=s.force)
        owners = self.owners(s.method_cfg, self.zoo.roots())
        suspects: list[tuple[Candidate, str | None]] = []
        for root in owners:
            try:
                suspects.append((candidate(self.zoo, self.zoo.child(root, s.transform_cfg)), None))
            except NotApplicable as exc:
                suspects.append((candidate(self.zoo, root), exc.reason))
        if all(reason is not None for _, reason in suspects):
            return to_frame([self._status_record("n/a", suspects[0][1] or "")])
        prov = Provenance(s.zoo_cfg["name"], s.method_cfg["name"], s.transform_cfg["name"], s.config_hash, s.seed)
        return to_frame(self.evaluator(method).evaluate(self.candidates(owners), suspects, prov))

    def fixed_threshold(self) -> float:
        """The method config's fixed threshold (its code default where the YAML sets none; NaN when neither)."""
        cfg = self.spec.method_cfg
        try:
            params = resolved_method(cfg)["params"]
        except FpbenchError:  # a config the registry cannot resolve: its own value, if any
            params = cfg.get("params") or {}
        return float(params.get("threshold", float("nan")))

    def _status_record(self, status: str, message: str) -> Any:
        s = self.spec
        prov = Provenance(s.zoo_cfg["name"], s.method_cfg["name"], s.transform_cfg["name"], s.config_hash, s.seed)
        return base_record(prov, self.fixed_threshold(), status=status, error=message)

    def write_models(self) -> None:
        """Record every zoo model this process knows (accuracy vs parent, transform info) for the effects table:
        merged under a file lock, so parallel workers lose no row."""
        rows = {zm.id: model_row(zm) for zm in self.zoo.models()}
        merge_models(models_path(self.spec.runs_dir, self.spec.zoo_cfg["name"]), rows)


def summarize(df: pd.DataFrame, calibration: pd.DataFrame | None, target_fpr: float) -> dict[str, Any]:
    """The cell's headline numbers (at the fixed threshold and at the calibrated one)."""
    ok = df[(df["status"] == "ok") & (df["role"] == "pair")]
    if ok.empty:
        status = df["status"].iloc[0] if len(df) else "empty"
        return {"status": status, "error": df["error"].iloc[0] if len(df) else ""}
    threshold = float(ok["threshold"].iloc[0])
    m = M.compute(ok["label"].to_numpy(), ok["score"].to_numpy(), threshold, target_fpr)
    out: dict[str, Any] = {"status": "ok", **m.as_dict(), "threshold": threshold,
                           "verify_seconds": float(ok["verify_seconds"].mean())}
    cal = thresholds.from_records(calibration, target_fpr)
    if cal is not None:
        mc = M.compute(ok["label"].to_numpy(), ok["score"].to_numpy(), cal.value, target_fpr)
        out.update(cal_threshold=cal.value, cal_negatives=cal.negatives, cal_tpr=mc.tpr, cal_fpr=mc.fpr,
                   cal_accuracy=mc.accuracy)
    return out


def summary_line(method: str, transform: str, zoo: str, s: dict[str, Any], cached: bool) -> str:
    head = f"[{zoo}] {method} x {transform}"
    if s["status"] != "ok":
        return f"{head}: {s['status'].upper()} {str(s.get('error', '')).splitlines()[0] if s.get('error') else ''}"
    cal = ""
    if "cal_threshold" in s:
        cal = f" | calibrated t={s['cal_threshold']:.3f}: TPR {s['cal_tpr']:.2f} FPR {s['cal_fpr']:.2f}"
    return (f"{head}: {s['pairs']} pairs ({s['positives']}+/{s['negatives']}-), AUC {s['auc']:.3f}, "
            f"TPR@1%FPR {s['tpr_at_1fpr']:.2f} | at t={s['threshold']:.2f}: acc {s['accuracy']:.2f} "
            f"TPR {s['tpr']:.2f} FPR {s['fpr']:.2f}{cal} | mean score {s['mean_score']:.3f} "
            f"(+{s['mean_score_pos']:.3f}/-{s['mean_score_neg']:.3f}), verify {s['verify_seconds']:.4f} s/pair"
            + (f" | {s['invalid']} INVALID (non-finite) scores" if s.get("invalid") else "")
            + (" [cached]" if cached else ""))


_RUNNERS: dict[str, CellRunner] = {}  # one per zoo per process: a multirun reuses loaded models


def cores_per_worker(launcher: Mapping[str, Any], cores: int) -> int:
    """A launcher worker's share of ``cores``: ``cpus_per_task`` (submitit), ``cores // n_jobs`` (joblib; n_jobs
    <= 0 counts back from all cores, as joblib does), else every core (the basic launcher runs jobs one by one)."""
    if launcher.get("cpus_per_task"):
        return max(1, min(int(launcher["cpus_per_task"]), cores))
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return cores
    n_jobs = int(n_jobs)
    workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, cores // workers)


def run_cell(spec: CellSpec, cores: int | None = None) -> tuple[pd.DataFrame, dict[str, Any], bool]:
    configure_threads(cores)
    zkey = stable_hash([spec.zoo_cfg, str(spec.runs_dir), spec.device, spec.seed])
    runner = _RUNNERS.get(zkey)
    if runner is None:
        runner = _RUNNERS[zkey] = CellRunner(spec)
    runner.spec = spec
    df, cached = runner.run()
    cal = read_cell(thresholds.calibration_path(spec.runs_dir, spec.zoo_cfg["name"], spec.method_cfg["name"]))
    return df, summarize(df, cal, spec.target_fpr), cached


def spec_from_cfg(cfg: Any) -> CellSpec:
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    return CellSpec(zoo_cfg=c["zoo"], method_cfg=c["method"], transform_cfg=transform_config(c["transform"]),
                    seed=int(c["seed"]), target_fpr=float(c["target_fpr"]), runs_dir=Path(c["runs_dir"]),
                    device=str(c["device"]), progress=bool(c["progress"]), force=bool(c["force"]))


def check_splits(params: dict[str, Any], zoo_cfg: dict[str, Any], where: str) -> None:
    """A parameter naming a data split (``split``, ``recover_split``, ...) must name one of the zoo's splits:
    checked before the cell starts, not when its child is trained."""
    splits = list((zoo_cfg.get("data") or {}).get("splits") or {})
    for key, value in params.items():
        if key.endswith("split") and isinstance(value, str) and splits and value not in splits:
            raise ConfigError(f"invalid parameter '{key}' of {where}: '{value}' is not a data split of zoo "
                              f"'{zoo_cfg['name']}'; valid: {', '.join(splits)}")


def check_modality(method_name: str, cls: Any, zoo_cfg: dict[str, Any]) -> None:
    """A method of image models cannot score a language zoo, nor the reverse: say so with the methods that can."""
    kind = zoo_modality(zoo_cfg)
    if cls.modality != kind:
        from fpbench.registry import METHODS

        fits = sorted(n for n in METHODS.names() if method_class(n).modality == kind)
        raise ConfigError(f"method '{method_name}' fingerprints {cls.modality} models, but zoo '{zoo_cfg['name']}' "
                          f"holds {kind} models; implementations for it: {', '.join(fits)} (conf/method/*.yaml "
                          "names them, e.g. method=reef)")


def validate_cell(spec: CellSpec) -> None:
    """Reject out-of-range method or transform parameters (each chain step too) before anything is built."""
    cls = method_class(method_impl(spec.method_cfg))
    check_modality(spec.method_cfg["name"], cls, spec.zoo_cfg)
    cls.resolve_params(spec.method_cfg.get("params"), spec.method_cfg["name"])

    def check_transform(cfg: dict[str, Any]) -> None:
        if cfg["impl"] == "chain":
            steps = cfg["params"].get("steps") or []
            if not steps:
                raise ConfigError(f"invalid parameter 'steps' of transform '{cfg['name']}': the chain is empty")
            for step in steps:
                check_transform(transform_config(step))
        else:
            params = transform_class(cfg["impl"]).resolve_params(cfg["params"], cfg["name"])
            check_splits(params, spec.zoo_cfg, f"transform '{cfg['name']}'")

    check_transform(spec.transform_cfg)
    if spec.method_cfg.get("protect"):
        check_transform(transform_config(spec.method_cfg["protect"]))


RUN = Stage(module="fpbench.run", config="config", unit="cells",
            resume="cells already recorded are skipped: re-run the same command to resume")


def _hydra_main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    @hydra.main(config_path=CONF_PATH, config_name=RUN.config, version_base="1.3")
    def main(cfg: Any) -> None:
        logging.getLogger("fpbench").setLevel(logging.INFO)
        with RUN.running(cfg):  # value checks; one-line errors (exit 2); Ctrl-C says how to resume (exit 130)
            spec = spec_from_cfg(cfg)
            try:
                validate_cell(spec)
            except FpbenchError as exc:
                raise ConfigError(f"{exc} (cell {spec.method_cfg['name']} x {spec.transform_cfg['name']}; "
                                  "nothing was run)") from None
            df, summary, cached = run_cell(spec, cores_per_worker(HydraConfig.get().launcher, available_cores()))
            RUN.done(f"{spec.method_cfg['name']} x {spec.transform_cfg['name']}")
        print(summary_line(spec.method_cfg["name"], spec.transform_cfg["name"], spec.zoo_cfg["name"], summary, cached),
              flush=True)
        if summary["status"] == "error" and HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)

    main()


def cli(argv: list[str] | None = None) -> None:
    """``python -m fpbench.run``: unknown keys and options are refused in one line before Hydra starts."""
    RUN.launch(_hydra_main, argv)


if __name__ == "__main__":
    cli()
