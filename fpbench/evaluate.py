"""The one evaluation path: every stage that scores pairs (a cell, ``verify``, lineage, the attack study, the
tests) goes through the functions here, after lm-evaluation-harness's ``simple_evaluate`` / ``evaluate`` split:

- :func:`make_method` turns a method config into a Method (context, workdir, seed, device): the only place a
  method is built from its config.
- :func:`fingerprint_key`: the one cache-key schema of fingerprints (method, implementation version,
  resolved parameters, owner's content key, data, seed).
- :class:`Evaluator` scores owners x suspects of already-built models and returns records: the owner is
  loaded in full (``ModelSubject``), a suspect is reached only through a ``SuspectView`` at the method's
  declared access; every model's task accuracy is checked through the exact query pipeline before it is
  scored; the query budget is enforced; a pair the method cannot compare is recorded n/a with the reason, a
  pair over budget or over access is an error record, never a score; fingerprint and verify times are recorded.

``fpbench.run.CellRunner`` is the resume-and-cache wrapper around it for the grid.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpbench.api import Fingerprint, Method, MethodContext, ModelSpec, PoolModel
from fpbench.data import DataBundle
from fpbench.errors import AccessViolation, NotApplicable, PipelineMismatch, QueryBudgetExceeded
from fpbench.records import Record
from fpbench.registry import method_class
from fpbench.subject import ModelSubject, SuspectView
from fpbench.utils import git_commit, library_versions, module_digest, stable_hash
from fpbench.zoo.store import ArtefactStore

log = logging.getLogger("fpbench.evaluate")
ACCURACY_PROBE = 1000  # test images used to check each model's accuracy through the query pipeline
ACCURACY_TOLERANCE = 0.02
FINGERPRINT_KEY_VERSION = "2"


def method_impl(method_cfg: dict[str, Any]) -> str:
    """The registry key of a method config (``impl``, else its ``name``)."""
    return str(method_cfg.get("impl", method_cfg["name"]))


def resolved_method(method_cfg: dict[str, Any]) -> dict[str, Any]:
    """A method config with its parameters resolved (defaults of the code filled in, validated) and its
    implementation's version: what a cell's hash covers, so changed method code or defaults re-run its cells."""
    cls = method_class(method_impl(method_cfg))
    return {**method_cfg, "params": cls.resolve_params(method_cfg.get("params"), method_cfg["name"]),
            "v": cls.version}


def make_method(method_cfg: dict[str, Any], data: DataBundle, device: torch.device, seed: int,
                workdir: Path | str, progress: bool = False,
                training_pool: tuple[Callable[[str], Iterator[PoolModel]], str] | None = None) -> Method:
    """The method of ``method_cfg`` (``name``, optional ``impl``, ``params``) with its scratch dir under
    ``workdir/<data id>/<method name>`` (shadow models, encoders: per task, so two tasks never share them);
    ``training_pool`` = (the zoo's training models at an access, their key) for methods that learn from models."""
    cls = method_class(method_impl(method_cfg))
    scratch = Path(workdir) / str(method_cfg["name"])
    scratch.mkdir(parents=True, exist_ok=True)
    pool, pool_key = training_pool or (None, "")
    ctx = MethodContext(data=data, device=device, seed=seed, workdir=scratch, progress=progress,
                        training_pool=pool, training_pool_key=pool_key)
    return cls(method_cfg.get("params") or {}, ctx, name=str(method_cfg["name"]))


def owner_content(subject: ModelSubject) -> str:
    """What a fingerprint of this owner depends on: its weights, its spec and what only the owner knows -- the
    same for a zoo model and for the same model exported to a file."""
    return stable_hash({"weights": module_digest(subject.model), "spec": subject.spec.to_dict(),
                        "private": subject.owner_private})


def fingerprint_key(method: Method, owner_content: str, data_id: str, seed: int) -> str:
    """The one cache-key schema of fingerprints: the decision threshold and the query budget do not change a
    fingerprint; the implementation, its version and other parameters, the owner, the data and the seed do."""
    params = {k: v for k, v in method.params.items() if k not in ("threshold", "query_budget")}
    key = {"v": FINGERPRINT_KEY_VERSION, "method": type(method).__name__, "impl_v": method.version,
           "params": params, "owner": owner_content, "data": data_id, "seed": seed}
    if depends := method.fingerprint_depends_on():  # absent for most methods: their keys stay as they were
        key["depends_on"] = depends
    return stable_hash(key)


@dataclass
class Candidate:
    """A model the evaluation can load and score, wherever it comes from (the zoo, a user's file)."""

    id: str
    key: str  # identifies the model for the accuracy check (a zoo artefact key, a file digest)
    spec: ModelSpec
    load: Callable[[], nn.Module]
    root_ids: tuple[str, ...] = ()  # the roots it derives from (two for a cross-root merge); () = unknown
    arch: str = ""
    stored_accuracy: float = float("nan")  # measured when it was built; the pipeline check compares with it
    owner_private: dict[str, Any] = field(default_factory=dict)  # what only its owner knows (a signature's secret)


@dataclass
class Provenance:
    """What every record of one evaluation carries besides the pair."""

    zoo: str
    method: str
    transform: str
    config_hash: str
    seed: int
    role: str = "pair"  # "pair" | "calibration"
    labelled: bool = True  # False: the truth is unknown (a user's pair): label -1


def pair_label(owner: Candidate, suspect: Candidate, prov: Provenance) -> int:
    """1 when the suspect derives from one of the owner's roots, 0 otherwise; calibration pairs are negatives."""
    if not prov.labelled:
        return -1
    if prov.role == "calibration":
        return 0
    return int(any(r in suspect.root_ids for r in owner.root_ids))


def base_record(prov: Provenance, threshold: float, owner: Candidate | None = None,
                suspect: Candidate | None = None, **fields: Any) -> Record:
    """A record of this evaluation, filled with what is known before scoring."""
    values: dict[str, Any] = dict(
        zoo=prov.zoo, method=prov.method, transform=prov.transform, owner=owner.id if owner else "",
        suspect=suspect.id if suspect else "", owner_arch=owner.arch if owner else "",
        suspect_arch=suspect.arch if suspect else "",
        label=pair_label(owner, suspect, prov) if owner and suspect else -1, score=float("nan"),
        threshold=float(threshold), decision=0, fingerprint_seconds=float("nan"), verify_seconds=float("nan"),
        owner_accuracy=float("nan"), suspect_accuracy=float("nan"), seed=prov.seed, config_hash=prov.config_hash,
        versions=json.dumps(library_versions(), sort_keys=True), git_commit=git_commit(), role=prov.role,
        created=time.time())
    values.update(fields)
    return Record(**values)


class Evaluator:
    """Scores owners x suspects with one method; loads each model once and checks it before scoring."""

    def __init__(self, method: Method, data: DataBundle, device: torch.device, fingerprints: ArtefactStore,
                 seed: int = 0, accuracy_memo: dict[str, float] | None = None) -> None:
        self.method = method
        self.data = data
        self.device = device
        self.fingerprints = fingerprints
        self.seed = seed
        self.accuracy: dict[str, float] = {} if accuracy_memo is None else accuracy_memo  # key -> checked acc

    # ------------------------------------------------------------------ models
    def subject(self, cand: Candidate) -> ModelSubject:
        """The model loaded in full, its task accuracy checked through the query pipeline methods use (a language
        model behind ``fpbench.llm.subject.LMSubject``, which language methods query)."""
        return checked_subject(cand, self.data, self.device, self.accuracy)


    # ------------------------------------------------------------------ fingerprints
    def fingerprint(self, owner: Candidate) -> tuple[Fingerprint, float]:
        """The owner's fingerprint (cached under :func:`fingerprint_key`) and the seconds it took to make."""
        subject = self.subject(owner)  # loaded (and checked) even when cached: the key hashes its weights
        key = fingerprint_key(self.method, owner_content(subject), self.data.id, self.seed)
        box: dict[str, Any] = {}

        def build() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            t0 = time.perf_counter()
            fp = self.method.fingerprint(subject)
            box["seconds"] = time.perf_counter() - t0
            return {"meta": fp.meta, "seconds": box["seconds"], "owner": owner.id}, fp.tensors

        meta, tensors, _ = self.fingerprints.get_or_build(
            key, build, on_corrupt=lambda k, e: log.warning("%s; rebuilding the fingerprint", e))
        return Fingerprint(tensors=dict(tensors or {}), meta=meta["meta"]), float(meta["seconds"])

    # ------------------------------------------------------------------ scoring
    def score_pair(self, fp: Fingerprint, owner: Candidate, suspect: ModelSubject, rec: Record) -> Record:
        """Score one pair into ``rec``: n/a with the reason, an error over budget or access, else the score."""
        method = self.method
        try:
            method.check_applicable(_SpecOnly(owner), suspect)
            view = suspect_view(suspect, method.access, method.query_budget)
            t0 = time.perf_counter()
            try:
                score = float(method.score(fp, view))
            finally:
                suspect.query_budget = None
            rec.verify_seconds = time.perf_counter() - t0
            rec.queries = view.query_count
            rec.score = score
            rec.decision = int(math.isfinite(score) and score >= method.threshold)
            if not math.isfinite(score):
                rec.error = "non-finite score"
        except NotApplicable as exc:
            rec.status, rec.error = "n/a", exc.reason
        except (QueryBudgetExceeded, AccessViolation) as exc:  # over its declaration: a failed pair, never a score
            rec.status, rec.error = "error", str(exc)
        return rec

    def evaluate(self, owners: list[Candidate], suspects: list[tuple[Candidate, str | None]],
                 prov: Provenance, include: Callable[[Candidate, Candidate], bool] | None = None) -> list[Record]:
        """Records of every owner x suspect (``include(owner, suspect)`` filters the pairs); a suspect given with
        a reason (its transform does not apply) is recorded n/a against every owner without being loaded.
        Suspects are streamed: one in memory at a time."""
        fps: dict[str, tuple[Fingerprint, float] | NotApplicable] = {}
        for owner in owners:  # an owner the method cannot fingerprint makes its pairs n/a, not the whole cell
            try:
                fps[owner.id] = self.fingerprint(owner)
            except NotApplicable as exc:
                log.warning("%s cannot fingerprint %s: %s", self.method.name, owner.id, exc.reason)
                fps[owner.id] = exc
        records = []
        for cand, na_reason in suspects:
            pair_owners = [o for o in owners if include is None or include(o, cand)]
            if not pair_owners:
                continue
            suspect = None if na_reason else self.subject(cand)
            for owner in pair_owners:
                made = fps[owner.id]
                fp, fp_seconds = (None, float("nan")) if isinstance(made, NotApplicable) else made
                rec = base_record(prov, self.method.threshold, owner, cand, fingerprint_seconds=fp_seconds,
                                  owner_accuracy=self.accuracy[owner.key])
                if isinstance(made, NotApplicable):
                    rec.status, rec.error = "n/a", f"the owner cannot be fingerprinted: {made.reason}"
                elif na_reason or suspect is None:
                    rec.status, rec.error = "n/a", na_reason or ""
                else:
                    rec.suspect_accuracy = self.accuracy[cand.key]
                    self.score_pair(fp, owner, suspect, rec)
                records.append(rec)
        return records



def checked_subject(cand: Candidate, data: DataBundle, device: torch.device, memo: dict[str, float]) -> ModelSubject:
    """``cand`` loaded in full, its task accuracy checked through the query pipeline once (``memo``: key ->
    checked accuracy)."""
    if cand.spec.modality == "language":
        from fpbench.llm.subject import LMSubject
        from fpbench.llm.text import tokenizer_of

        subject = LMSubject(cand.id, cand.load(), tokenizer_of(cand.spec), device, spec=cand.spec,
                            owner_private=cand.owner_private)
    else:
        subject = ModelSubject(cand.id, cand.load(), cand.spec, device, owner_private=cand.owner_private)
    if cand.key not in memo:
        memo[cand.key] = _checked_accuracy(cand, subject, data)
    if isinstance(subject, ModelSubject):
        subject.query_count = 0
    return subject


def _checked_accuracy(cand: Candidate, subject: ModelSubject, data: DataBundle) -> float:
    test = data.split("test")
    if cand.spec.modality == "language":  # next-token accuracy on the test texts, tokenized as prompts are
        texts = test.texts[:ACCURACY_PROBE]
        n, total = len(texts), len(test.texts)
        acc = subject.token_accuracy(texts)
    else:
        n, total = min(ACCURACY_PROBE, len(test)), len(test)
        acc = float((subject.labels(test.tensor(slice(0, n))).cpu() == test.labels[:n]).float().mean())
    stored = cand.stored_accuracy
    tol = 1e-6 if n == total else ACCURACY_TOLERANCE + 2.0 / math.sqrt(n)
    if math.isfinite(stored) and abs(acc - stored) > tol:
        raise PipelineMismatch(
            f"{cand.id}: accuracy through the query pipeline is {acc:.3f} but {stored:.3f} when built; "
            "inputs are being prepared differently (double normalisation?)")
    return acc


def suspect_view(subject: Any, access: str, budget: int | None) -> Any:
    """What a method's ``score`` gets of a suspect: a ``SuspectView`` of a vision subject, a language subject's
    own access-limited view (its budget counts prompts)."""
    if isinstance(subject, ModelSubject):
        return SuspectView(subject, access, budget)
    return subject.view(access, budget)


class _SpecOnly:
    """What ``Method.check_applicable`` may read of the owner without loading it: its id and spec."""

    def __init__(self, cand: Candidate) -> None:
        self.id, self.spec = cand.id, cand.spec
