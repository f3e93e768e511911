"""The comparison of one track: transfer vs direct injection vs inheritance, over its downstream models.

For each downstream model ``down`` (the base fine-tuned on another task, built before any fingerprint):
  - transfer:    ``down + lambda * tau`` with ``tau = theta_fp - theta_base`` (one injection into the base, no training);
  - direct:      the fingerprint trained into ``down`` itself (one injection per model);
  - inheritance: the fingerprinted base fine-tuned on the task again (the downstream model rebuilt);
  - none:        ``down`` as it is, which never saw the fingerprint (the false-positive side).
Every way is measured clean and after four removal pressures (further fine-tuning, pruning, quantization,
merging with a sibling downstream model), and transfer over a sweep of lambda. Cost is training seconds per
fingerprinted model: the base injection is shared by all downstream models (transfer, inheritance), the
rebuild is inheritance's own, and a direct injection is paid by each model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fpbench.transfer import attacks
from fpbench.transfer.track import Track, trained
from fpbench.transfer.vector import FingerprintVector
from fpbench.zoo.build import derive_seed

WAYS = ("none", "transfer", "direct", "inheritance")
VERIFY_ALPHA = 1e-3  # a model is verified when FSR this high has probability < alpha for a model that never saw it


def binomial_p_value(hits: int, n: int, chance: float) -> float:
    """P[X >= hits] for X ~ Binomial(n, chance): how surprising ``hits`` trigger matches are by chance alone."""
    if math.isnan(chance):
        return float("nan")
    return float(sum(math.comb(n, i) * chance**i * (1 - chance) ** (n - i) for i in range(hits, n + 1)))

CONDITIONS = ("clean", "finetune", "prune", "quantize", "merge")


@dataclass
class Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    vector: FingerprintVector | None = None


@dataclass
class Cost:
    inject: float = 0.0  # fingerprint training attributed to this model
    retrain: float = 0.0  # task training redone because of the fingerprint (inheritance)
    apply: float = 0.0  # vector addition


def fingerprint_base(track: Track) -> tuple[nn.Module, nn.Module, float]:
    """(base, fingerprinted base, seconds of the one injection), both cached."""
    base = track.base()
    key = {"base": track.base_key(), **track.fingerprint_key()}
    fp_base, seconds = track.cache.get(key, f"{track.base_id}+fp",
                                       trained(base, lambda m: track.inject(m, None, derive_seed(track.seed, "inject"))))
    return base, fp_base, seconds


def compare(track: Track, lam: float, lambdas: list[float], log: Any = print) -> Outcome:
    """Run the whole comparison of ``track``; rows are plain dicts (see ``fpbench.transfer.results``)."""
    cfg, cache, tasks = track.cfg, track.cache, track.tasks()
    att = cfg["attacks"]
    ft_steps = int(cfg["finetune"]["steps"])
    out = Outcome()
    base, fp_base, inject_s = fingerprint_base(track)
    base_key = {"base": track.base_key()}
    fp_key = {**base_key, **track.fingerprint_key()}
    fp_id = f"{track.base_id}+fp"
    tau = FingerprintVector.between(fp_base, base, meta={"base": track.base_id, "fingerprinted": fp_id})
    out.vector = tau
    log(f"[{track.name}] base {track.base_id}: FSR {track.fsr(base):.2f}; fingerprinted base FSR {track.fsr(fp_base):.2f} "
        f"({inject_s:.1f} s of injection); |tau| = {tau.norm():.3f}")

    def row(task: str, way: str, condition: str, model_id: str, model: nn.Module, ref: float, cost: Cost,
            lam_: float = float("nan")) -> None:
        q = track.quality(model, None if task == "base" else task)
        fsr = track.fsr(model)
        p_value = binomial_p_value(round(fsr * track.n_triggers), track.n_triggers, track.chance_rate())
        out.rows.append({
            "track": track.name, "zoo": track.zoo, "base": track.base_id, "task": task, "way": way, "lam": float(lam_),
            "condition": condition, "model": model_id, "fsr": fsr, "chance_rate": track.chance_rate(),
            "p_value": p_value, "verified": float(p_value < VERIFY_ALPHA) if not math.isnan(p_value) else float("nan"),
            "false_trigger_rate": track.false_trigger_rate(model), "n_triggers": track.n_triggers,
            "quality_metric": track.quality_metric, "quality": q, "quality_ref": ref, "quality_delta": q - ref,
            "inject_seconds": cost.inject, "retrain_seconds": cost.retrain, "apply_seconds": cost.apply,
            "cost_seconds": cost.inject + cost.retrain + cost.apply, "base_inject_seconds": inject_s,
            "n_downstream": len(tasks),
        })

    base_q = track.quality(base, None)
    row("base", "none", "clean", track.base_id, base, base_q, Cost())
    row("base", "fingerprinted", "clean", fp_id, fp_base, base_q, Cost(inject=inject_s))

    downs: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
    for task in tasks:
        key = {**base_key, **track.task_key(task)}
        seed = derive_seed(track.seed, "finetune", task)
        model, _ = cache.get(key, f"{track.base_id}/ft-{task}", trained(base, lambda m, t=task, s=seed: track.finetune(m, t, ft_steps, s)))
        downs[task] = (model, key)

    share = inject_s / len(tasks)
    for i, task in enumerate(tasks):
        down, down_key = downs[task]
        down_id = f"{track.base_id}/ft-{task}"
        # a sibling: another downstream model of the same base, without the fingerprint (the base if alone)
        partner = downs[tasks[(i + 1) % len(tasks)]][0] if len(tasks) > 1 else base
        ref = track.quality(down, task)
        ft_seed = derive_seed(track.seed, "finetune", task)
        start = time.perf_counter()
        transferred = tau.apply(down, lam, name=f"downstream model '{down_id}'")
        apply_s = time.perf_counter() - start
        direct, direct_s = cache.get({**down_key, **track.fingerprint_key(), "direct": True}, f"{down_id}+fp",
                                     trained(down, lambda m, t=task: track.inject(m, t, derive_seed(track.seed, "inject", t))))
        inherit, inherit_s = cache.get({**fp_key, **track.task_key(task)}, f"{fp_id}/ft-{task}",
                                       trained(fp_base, lambda m, t=task, s=ft_seed: track.finetune(m, t, ft_steps, s)))
        ways = {
            "none": (down_id, down, Cost(), {**down_key}),
            "transfer": (f"{down_id}+tau(lambda={lam:g})", transferred, Cost(inject=share, apply=apply_s), {**down_key, **fp_key, "lam": lam}),
            "direct": (f"{down_id}+fp", direct, Cost(inject=direct_s), {**down_key, **track.fingerprint_key(), "direct": True}),
            "inheritance": (f"{fp_id}/ft-{task}", inherit, Cost(inject=share, retrain=inherit_s), {**fp_key, **track.task_key(task)}),
        }
        for way, (mid, model, cost, key) in ways.items():
            lam_ = lam if way == "transfer" else float("nan")
            row(task, way, "clean", mid, model, ref, cost, lam_)
            layers = track.attack_layers(model)
            pressured = {
                "prune": attacks.prune(model, layers, float(att["prune_amount"])),
                "quantize": attacks.quantize(model, layers, int(att["quant_bits"])),
                "merge": attacks.merge(model, partner, float(att["merge_alpha"])),
            }
            if way != "none":  # the fingerprint-free model needs no removal attempt
                steps = int(att["finetune_steps"])
                s = derive_seed(track.seed, "attack-finetune", task)
                pressured["finetune"], _ = cache.get({**key, "attack_finetune": steps, "seed": s}, f"{mid}/ft-again",
                                                     trained(model, lambda m, t=task, n=steps, s=s: track.finetune(m, t, n, s)))
            for condition, attacked in pressured.items():
                row(task, way, condition, f"{mid}/{condition}", attacked, ref, cost, lam_)
        for lam_s in lambdas:
            if not math.isclose(lam_s, lam):
                row(task, "transfer", "clean", f"{down_id}+tau(lambda={lam_s:g})", tau.apply(down, lam_s), ref,
                    Cost(inject=share), lam_s)
        log(_task_line(track, task, lam, out.rows))
        out.edges += _edges(track, task, down_id, fp_id, out.rows)
    return out


def _task_line(track: Track, task: str, lam: float, rows: list[dict[str, Any]]) -> str:
    clean = {r["way"]: r for r in rows if r["task"] == task and r["condition"] == "clean" and
             (r["way"] != "transfer" or math.isclose(r["lam"], lam))}
    parts = [f"{w} FSR {r['fsr']:.2f} {r['quality_metric'][:3]} {r['quality']:.3f}" for w, r in clean.items()
             if w in WAYS]
    return f"[{track.name}] {task}: " + "; ".join(parts)


def _edges(track: Track, task: str, down_id: str, fp_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every transferred model: a child of its downstream model, and a carrier of the base owner's fingerprint."""
    edges = []
    for r in rows:
        if r["task"] != task or r["way"] != "transfer" or r["condition"] != "clean":
            continue
        params = {"track": track.name, "lambda": r["lam"], "vector": f"{fp_id} - {track.base_id}"}
        edges.append({"parent": down_id, "child": r["model"], "relation": "fingerprint_transfer",
                      "params": json.dumps(params, sort_keys=True), "confidence": float("nan")})
        carry = {**params, "fingerprinted_base": fp_id, "fsr": r["fsr"], "n_triggers": r["n_triggers"]}
        edges.append({"parent": track.base_id, "child": r["model"], "relation": "carries_fingerprint_of",
                      "params": json.dumps(carry, sort_keys=True), "confidence": float(r["fsr"])})
    for e in edges:
        e.update(zoo=track.zoo, track=track.name)
    return edges
