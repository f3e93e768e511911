"""Run one cell (method x transform on a zoo) and store its records: ``python -m fpbench.run``.

    python -m fpbench.run method=cmf transform=prune30            # one cell on the default zoo
    python -m fpbench.run -m method=cmf transform=finetune,quant8 # a Hydra multirun sweep
    python -m fpbench.run zoo=ci method=cmf transform=finetune    # the tiny test tier

A cell is skipped when its records exist with the same config hash (``force=true`` re-runs it).
A failing cell writes an error record and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fpbench import metrics as M
from fpbench.api import Fingerprint, FpbenchError, Method, MethodContext, NotApplicable, QueryBudgetExceeded
from fpbench.config import check_option
from fpbench.records import Record, cell_done, cell_path, read_cell, to_frame, write_cell
from fpbench.registry import UnknownName, method_class
from fpbench.subject import ModelSubject
from fpbench.utils import available_cores, configure_threads, git_commit, library_versions, resolve_device, stable_hash
from fpbench.zoo.build import Zoo, ZooModel, resolved_transform, transform_config
from fpbench.zoo.store import ArtefactStore

log = logging.getLogger("fpbench.run")
RECORD_VERSION = "1"
CALIBRATION = "_calibration"
ACCURACY_PROBE = 1000  # test images used to check each model's accuracy through Subject.logits
ACCURACY_TOLERANCE = 0.02


class PipelineMismatch(FpbenchError):
    """A model's accuracy through the query pipeline differs from the accuracy measured when it was built."""


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
    def _protect(self) -> dict[str, Any]:
        # A method that protects its owners (``protect: cmf_embed``) re-runs when that transform changes.
        protect = self.method_cfg.get("protect")
        return {"protect": resolved_transform(protect)} if protect else {}

    @property
    def config_hash(self) -> str:
        return stable_hash({"v": RECORD_VERSION, "zoo": self.zoo_cfg, "method": self._method,
                            "transform": resolved_transform(self.transform_cfg), "seed": self.seed, **self._protect})

    @property
    def calibration_hash(self) -> str:
        return stable_hash({"v": RECORD_VERSION, "zoo": self.zoo_cfg, "method": self._method, "seed": self.seed,
                            **self._protect})

    @property
    def _method(self) -> dict[str, Any]:
        """The method config with its implementation's version: changed method code re-runs the method's cells."""
        return {**self.method_cfg, "v": method_class(self.method_cfg.get("impl", self.method_cfg["name"])).version}


class CellRunner:
    """Runs cells that share a zoo and a process: models and fingerprints are loaded once."""

    def __init__(self, spec: CellSpec) -> None:
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.zoo = Zoo(spec.zoo_cfg, spec.runs_dir, self.device, seed=spec.seed, progress=spec.progress)
        self.fp_store = ArtefactStore(Path(spec.runs_dir) / "cache" / "fingerprints")
        self._checked: dict[str, float] = {}

    # ------------------------------------------------------------------ public
    def run(self) -> tuple[pd.DataFrame, bool]:
        """Records of the cell (from disk when already done) and whether they were cached."""
        s = self.spec
        path = cell_path(s.runs_dir, s.zoo_cfg["name"], s.method_cfg["name"], s.transform_cfg["name"])
        if not s.force and cell_done(path, s.config_hash):
            return read_cell(path), True  # type: ignore[return-value]
        try:
            df = self._score_cell()
        except Exception as exc:  # the sweep goes on: the failure is a record the tables show
            log.error("cell %s x %s failed: %s", s.method_cfg["name"], s.transform_cfg["name"], exc)
            df = to_frame([self._status_record("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")])
        write_cell(path, df)
        self._write_models()
        return df, False

    def _write_models(self) -> None:
        """Record every zoo model this process knows (accuracy vs parent, transform info) for the effects table."""
        rows = {}
        for zm in self.zoo.models():
            info = {k: v for k, v in zm.meta.get("info", {}).items() if isinstance(v, (int, float, str, bool))}
            rows[zm.id] = {"id": zm.id, "root": zm.root_id, "arch": zm.arch, "parent": zm.parent_id or "",
                           "transform": zm.transform or "", "key": zm.key, **info}
        path = Path(self.spec.runs_dir) / "records" / self.spec.zoo_cfg["name"] / "_models.parquet"
        old = pd.read_parquet(path) if path.exists() else pd.DataFrame()
        new = pd.DataFrame(list(rows.values()))
        merged = pd.concat([old[~old["id"].isin(new["id"])] if len(old) else old, new], ignore_index=True)
        write_cell(path, merged.sort_values("id").reset_index(drop=True))

    def calibration(self, method: Method) -> pd.DataFrame:
        """Scores of every owner root against the held-out calibration roots (stored once per method)."""
        s = self.spec
        path = cell_path(s.runs_dir, s.zoo_cfg["name"], s.method_cfg["name"], CALIBRATION)
        if not s.force and cell_done(path, s.calibration_hash):
            return read_cell(path)  # type: ignore[return-value]
        owners = self._protected(self.zoo.roots())
        suspects = self._protected(self.zoo.calibration_roots())
        df = to_frame(self._score_pairs(method, owners, [(c, None) for c in suspects], CALIBRATION,
                                        s.calibration_hash, role="calibration"))
        write_cell(path, df)
        return df

    # ------------------------------------------------------------------ internals
    def _protected(self, roots: list[ZooModel]) -> list[ZooModel]:
        """Roots as the method's owners: with ``protect`` in the method config (a signature-embedding
        transform), every root -- calibration roots too, each with its own secret -- is replaced by its
        protected version, and the cell's transform is applied to that."""
        protect = self.spec.method_cfg.get("protect")
        return [self.zoo.child(r, protect) for r in roots] if protect else roots

    def _score_cell(self) -> pd.DataFrame:
        s = self.spec
        method = self._method()
        self.calibration(method)
        owners = self._protected(self.zoo.roots())
        suspects: list[tuple[ZooModel, str | None]] = []
        for root in owners:
            try:
                suspects.append((self.zoo.child(root, s.transform_cfg), None))
            except NotApplicable as exc:
                suspects.append((root, exc.reason))
        if all(reason is not None for _, reason in suspects):
            return to_frame([self._status_record("n/a", suspects[0][1] or "")])
        return to_frame(self._score_pairs(method, owners, suspects, s.transform_cfg["name"], s.config_hash))

    def _method(self) -> Method:
        s = self.spec
        cls = method_class(s.method_cfg.get("impl", s.method_cfg["name"]))
        workdir = Path(s.runs_dir) / "cache" / "methods" / s.zoo_cfg["name"] / s.method_cfg["name"]
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = MethodContext(data=self.zoo.data, device=self.device, seed=s.seed, workdir=workdir, progress=s.progress)
        return cls(s.method_cfg.get("params", {}), ctx)

    def _checked_subject(self, zm: ZooModel) -> ModelSubject:
        """Load a model and check its task accuracy through the exact query pipeline methods use."""
        subject = self.zoo.subject(zm)
        if zm.key not in self._checked:
            test = self.zoo.data.split("test")
            n = min(ACCURACY_PROBE, len(test))
            acc = float((subject.labels(test.tensor(slice(0, n))).cpu() == test.labels[:n]).float().mean())
            stored = zm.accuracy
            full = len(test) <= ACCURACY_PROBE
            tol = 1e-6 if full else ACCURACY_TOLERANCE + 2.0 / math.sqrt(n)
            if math.isfinite(stored) and abs(acc - stored) > tol:
                raise PipelineMismatch(
                    f"{zm.id}: accuracy through Subject.logits is {acc:.3f} but {stored:.3f} when built; "
                    "inputs are being prepared differently (double normalisation?)")
            self._checked[zm.key] = acc
        subject.query_count = 0
        return subject

    def _fingerprint(self, method: Method, owner: ZooModel, subject: ModelSubject) -> tuple[Fingerprint, float]:
        params = {k: v for k, v in method.params.items() if k not in ("threshold", "query_budget")}
        key = stable_hash({"method": method.name, "v": method.version, "params": params, "owner": owner.key,
                           "data": self.zoo.data.id, "seed": self.spec.seed})
        t0 = time.perf_counter()
        box: dict[str, float] = {}

        def build() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            fp = method.fingerprint(subject)
            box["seconds"] = time.perf_counter() - t0
            return {"meta": fp.meta, "seconds": box["seconds"], "owner": owner.id}, fp.tensors

        meta, tensors, _ = self.fp_store.get_or_build(key, build, on_corrupt=lambda k, e: log.warning("%s; rebuilding", e))
        return Fingerprint(tensors=dict(tensors or {}), meta=meta["meta"]), float(meta["seconds"])

    def _score_pairs(self, method: Method, owners: list[ZooModel], suspects: list[tuple[ZooModel, str | None]],
                     transform: str, config_hash: str, role: str = "pair") -> list[Record]:
        fps: dict[str, tuple[Fingerprint, float, float]] = {}
        for owner in owners:
            subject = self._checked_subject(owner)
            # What only the owner knows of its model (an embedded signature's secret); never given to suspects.
            subject.owner_private = dict(owner.meta.get("info", {}).get("owner_private") or {})
            fp, seconds = self._fingerprint(method, owner, subject)
            fps[owner.id] = (fp, seconds, self._checked[owner.key])
            del subject
        records = []
        for zm, na_reason in suspects:  # stream suspects: one loaded at a time
            suspect = None if na_reason else self._checked_subject(zm)
            for owner in owners:
                fp, fp_seconds, owner_acc = fps[owner.id]
                label = int(zm.root_id == owner.root_id) if role == "pair" else 0
                rec = self._record(owner, zm, label, transform, config_hash, role, fp_seconds, owner_acc)
                if na_reason:
                    rec.status, rec.error = "n/a", na_reason
                    records.append(rec)
                    continue
                assert suspect is not None
                rec.suspect_accuracy = self._checked[zm.key]
                try:
                    method.check_applicable(ModelSubject(owner.id, torch.nn.Identity(), owner.spec, self.device), suspect)
                    suspect.query_count, suspect.query_budget = 0, method.query_budget
                    t0 = time.perf_counter()
                    try:
                        score = float(method.score(fp, suspect))
                    finally:
                        suspect.query_budget = None
                    rec.verify_seconds = time.perf_counter() - t0
                    rec.queries = suspect.query_count
                    rec.score = score
                    rec.decision = int(math.isfinite(score) and score >= method.threshold)
                    if not math.isfinite(score):
                        rec.error = "non-finite score"
                except NotApplicable as exc:
                    rec.status, rec.error = "n/a", exc.reason
                except QueryBudgetExceeded as exc:  # a method over its budget is a failed pair, never a score
                    rec.status, rec.error = "error", str(exc)
                records.append(rec)
        return records

    def _record(self, owner: ZooModel, suspect: ZooModel, label: int, transform: str, config_hash: str, role: str,
                fp_seconds: float, owner_acc: float) -> Record:
        s = self.spec
        return Record(
            zoo=s.zoo_cfg["name"], method=s.method_cfg["name"], transform=transform, owner=owner.id,
            suspect=suspect.id, owner_arch=owner.arch, suspect_arch=suspect.arch, label=label, score=float("nan"),
            threshold=float(s.method_cfg.get("params", {}).get("threshold", float("nan"))), decision=0,
            fingerprint_seconds=fp_seconds, verify_seconds=float("nan"), owner_accuracy=owner_acc,
            suspect_accuracy=float("nan"), seed=s.seed, config_hash=config_hash,
            versions=json.dumps(library_versions(), sort_keys=True), git_commit=git_commit(), role=role,
            created=time.time(),
        )

    def _status_record(self, status: str, message: str) -> Record:
        s = self.spec
        return Record(
            zoo=s.zoo_cfg["name"], method=s.method_cfg["name"], transform=s.transform_cfg["name"], owner="",
            suspect="", owner_arch="", suspect_arch="", label=-1, score=float("nan"),
            threshold=float(s.method_cfg.get("params", {}).get("threshold", float("nan"))), decision=0,
            fingerprint_seconds=float("nan"), verify_seconds=float("nan"), owner_accuracy=float("nan"),
            suspect_accuracy=float("nan"), seed=s.seed, config_hash=s.config_hash,
            versions=json.dumps(library_versions(), sort_keys=True), git_commit=git_commit(), status=status,
            error=message, created=time.time(),
        )


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
    if calibration is not None and not calibration.empty:
        cal_t = M.calibrate_threshold(calibration.loc[calibration["status"] == "ok", "score"].to_numpy(), target_fpr)
        mc = M.compute(ok["label"].to_numpy(), ok["score"].to_numpy(), cal_t, target_fpr)
        out.update(cal_threshold=cal_t, cal_tpr=mc.tpr, cal_fpr=mc.fpr, cal_accuracy=mc.accuracy)
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
    cal = read_cell(cell_path(spec.runs_dir, spec.zoo_cfg["name"], spec.method_cfg["name"], CALIBRATION))
    return df, summarize(df, cal, spec.target_fpr), cached


def spec_from_cfg(cfg: Any) -> CellSpec:
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    return CellSpec(zoo_cfg=c["zoo"], method_cfg=c["method"], transform_cfg=transform_config(c["transform"]),
                    seed=int(c["seed"]), target_fpr=float(c["target_fpr"]), runs_dir=Path(c["runs_dir"]),
                    device=str(c["device"]), progress=bool(c["progress"]), force=bool(c["force"]))


def validate_cell(spec: CellSpec) -> None:
    """Reject out-of-range method or transform parameters (each chain step too) before anything is built."""
    from fpbench.api import ConfigError
    from fpbench.registry import transform_class

    cls = method_class(spec.method_cfg.get("impl", spec.method_cfg["name"]))
    probe = cls.__new__(cls)  # validate() reads only params; the real context needs the zoo's data
    probe.params = dict(spec.method_cfg.get("params") or {})
    probe.validate()
    budget = probe.params.get("query_budget")
    if budget is not None and not (isinstance(budget, int) and budget >= 0):
        raise ConfigError(f"invalid parameter 'query_budget' of method '{spec.method_cfg['name']}': "
                          f"must be an integer >= 0 (0: the method may not query the suspect), got {budget!r}")

    def check_transform(cfg: dict[str, Any]) -> None:
        if cfg["impl"] == "chain":
            steps = cfg["params"].get("steps") or []
            if not steps:
                raise ConfigError(f"invalid parameter 'steps' of transform '{cfg['name']}': the chain is empty")
            for step in steps:
                check_transform(transform_config(step))
        else:
            transform_class(cfg["impl"])(cfg["params"])

    check_transform(spec.transform_cfg)
    if spec.method_cfg.get("protect"):
        check_transform(transform_config(spec.method_cfg["protect"]))


def precheck_argv(argv: list[str]) -> None:
    """Fail fast, in one line, on an unknown method/transform/zoo before Hydra starts anything."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        if sep and group in ("method", "transform", "zoo", "experiment"):
            for name in value.split(","):
                check_option(group, name.strip())


def _hydra_main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def main(cfg: Any) -> None:
        logging.getLogger("fpbench").setLevel(logging.INFO)
        spec = spec_from_cfg(cfg)
        try:
            validate_cell(spec)
        except FpbenchError as exc:
            print(f"error: {exc} (cell {spec.method_cfg['name']} x {spec.transform_cfg['name']}; nothing was run)",
                  file=sys.stderr)
            sys.exit(2)
        df, summary, cached = run_cell(spec, cores_per_worker(HydraConfig.get().launcher, available_cores()))
        print(summary_line(spec.method_cfg["name"], spec.transform_cfg["name"], spec.zoo_cfg["name"], summary, cached),
              flush=True)
        if summary["status"] == "error" and HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)

    main()


def cli() -> None:
    try:
        precheck_argv(sys.argv[1:])
    except UnknownName as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    cli()
