"""An external case set, made outside fpbench's zoo with plain timm code and its own training loop.

    python scripts/external_cases.py --out runs/external            # the full set (minutes on one core)
    python scripts/external_cases.py --out runs/external-quick --quick         # a tiny set for tests (~30 s)

Data: scikit-learn's digits (the only real image set offline besides the tiny zoo's Fashion-MNIST), upscaled
to 32x32 and coloured (each image's strokes get a random RGB colour), so it is neither the tiny zoo's task nor
the ci zoo's (grey digits at 16x16). fpbench is imported only to read the offline dataset
(``fpbench.data.load_digits``); models, training, pruning and distillation are written here with torch and
timm, as a user outside the project would.

Models (timm resnet18 with small channels, and timm's test_convnext, a family the zoo does not have):
  - owner roots: 2 seeds per architecture, trained with Adam on ``train_a``;
  - children of each owner: fine-tune light (a few SGD steps at a tenth of the root's learning rate), fine-tune
    heavy (Adam at the root's own learning rate for several epochs on the disjoint ``train_b``: as strong as a
    common downstream full fine-tune), prune 30% (global L1 magnitude with ``torch.nn.utils.prune``, then a
    recovery fine-tune with the mask held), and a distilled student (same architecture, fresh weights, trained
    on the teacher's soft labels on ``train_b`` only);
  - calibration independents (never owners): 2 more seeds per architecture, plus their heavy fine-tune and
    prune children (someone else's derived model is the realistic negative).

Written to ``--out``: ``data.npz`` (the splits, uint8, so every scorer queries with the same images),
``<name>.safetensors`` (the plain timm state dict) + ``<name>.json`` (architecture, kwargs, classes, input
size, mean/std, parent, root, transform, strength, seed, test accuracy, relative weight change, seconds; the
keys of an fpbench ``ModelSpec`` too, so ``python -m fpbench.verify`` reads it), ``manifest.csv`` (one row per
pair: owner, suspect, label, transform, strength, role) and ``summary.json`` (timings, accuracies, settings).
Every model's test accuracy is measured and checked against chance; a model below the floor stops the run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import prune

ARCHS: dict[str, dict[str, Any]] = {
    "resnet": {"name": "resnet18", "kwargs": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}},
    "convnext": {"name": "test_convnext", "kwargs": {}},
}
CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SIZE = 32


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the full set, or ``--quick`` for tests."""

    splits: dict[str, int]
    owner_seeds: tuple[int, ...]
    calibration_seeds: tuple[int, ...]
    archs: tuple[str, ...]
    root_steps: int
    light_steps: int
    heavy_epochs: int
    recovery_steps: int
    distill_steps: int
    batch_size: int = 64
    lr: float = 2e-3  # the roots' Adam learning rate (the heavy fine-tune uses it too)
    temperature: float = 4.0
    prune_amount: float = 0.3
    accuracy_floor: float = 0.5  # a model of a 10-class task below this is a bug, not a case


FULL = Settings(splits={"train_a": 700, "train_b": 500, "probe": 200, "test": 397}, owner_seeds=(0, 1),
                calibration_seeds=(100, 101), archs=("resnet", "convnext"), root_steps=150, light_steps=10,
                heavy_epochs=6, recovery_steps=30, distill_steps=150)
QUICK = Settings(splits={"train_a": 700, "train_b": 500, "probe": 200, "test": 397}, owner_seeds=(0, 1),
                 calibration_seeds=(100,), archs=("resnet",), root_steps=60, light_steps=5, heavy_epochs=1,
                 recovery_steps=5, distill_steps=40, accuracy_floor=0.3)


# ---------------------------------------------------------------------------------------------------- data
def colour_digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits at 32x32 RGB, uint8 [N, 3, 32, 32]: upscaled bilinearly, strokes in a random colour per image."""
    from fpbench.data import load_digits  # the only use of fpbench: reading the offline dataset

    x, y, _ = load_digits()  # uint8 [N, 1, 8, 8] in 0..255
    grey = F.interpolate(torch.from_numpy(x).float() / 255.0, size=(SIZE, SIZE), mode="bilinear",
                         align_corners=False).clamp(0, 1)
    g = torch.Generator().manual_seed(seed)
    colour = 0.35 + 0.65 * torch.rand((len(y), 3, 1, 1), generator=g)  # no colour darker than 0.35 per channel
    rgb = (grey * colour * 255.0).round().clamp(0, 255).to(torch.uint8)
    order = torch.randperm(len(y), generator=g)
    return rgb[order].numpy(), y[order]


def make_splits(settings: Settings, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = colour_digits(seed)
    need = sum(settings.splits.values())
    if need > len(y):
        raise SystemExit(f"splits ask for {need} images, digits has {len(y)}")
    out, start = {}, 0
    for name, n in settings.splits.items():
        out[name] = (x[start : start + n], y[start : start + n])
        start += n
    return out


def to_float(x: np.ndarray) -> torch.Tensor:
    """uint8 images -> float [0, 1], the pixel range every scorer is given."""
    return torch.from_numpy(np.ascontiguousarray(x)).float() / 255.0


class Normalised(nn.Module):
    """A timm net behind its input normalisation: what is trained and evaluated here (only ``net`` is saved)."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


# ---------------------------------------------------------------------------------------------------- training
def new_model(arch: str, seed: int, mean: list[float], std: list[float]) -> Normalised:
    torch.manual_seed(seed)
    spec = ARCHS[arch]
    net = timm.create_model(spec["name"], pretrained=False, num_classes=len(CLASSES), in_chans=3, **spec["kwargs"])
    return Normalised(net, mean, std)


def fit(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, steps: int, optimizer: str, lr: float,
        batch_size: int, seed: int, soft: bool = False, temperature: float = 1.0) -> float:
    """Train ``model`` for ``steps`` shuffled mini-batches; hard labels (cross-entropy) or a teacher's logits
    (``soft``: KL at ``temperature``, Hinton et al. 2015). Returns the last loss."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=0.9))
    g = torch.Generator().manual_seed(seed)
    step, last = 0, float("nan")
    while step < steps:
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x) - batch_size + 1, batch_size):  # full batches only (BatchNorm)
            if step >= steps:
                break
            idx = order[start : start + batch_size]
            out = model(x[idx])
            if soft:
                t = temperature
                loss = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(targets[idx] / t, 1), log_target=True,
                                reduction="batchmean") * t * t
            else:
                loss = F.cross_entropy(out, targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
            step += 1
    model.eval()
    if not math.isfinite(last):
        raise SystemExit(f"training diverged (loss {last}); lower the learning rate")
    return last


@torch.inference_mode()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits_of(model, x).argmax(1) == y).float().mean())


def relative_change(child: nn.Module, parent: nn.Module) -> float:
    """||theta_child - theta_parent|| / ||theta_parent|| over the float tensors both have with one shape."""
    a, b = child.state_dict(), parent.state_dict()
    num = den = 0.0
    for k, v in b.items():
        if k in a and v.is_floating_point() and a[k].shape == v.shape:
            num += float((a[k].double() - v.double()).pow(2).sum())
            den += float(v.double().pow(2).sum())
    return math.sqrt(num / den) if den else float("nan")


def prune_and_recover(model: nn.Module, amount: float, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float,
                      batch_size: int, seed: int) -> float:
    """Global L1 magnitude pruning of every conv/linear weight, a recovery fine-tune with the mask held (the
    prune hooks keep pruned weights at zero), then the mask made permanent. Returns the achieved sparsity."""
    targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    fit(model, x, y, steps=steps, optimizer="adam", lr=lr, batch_size=batch_size, seed=seed)
    for m, name in targets:
        prune.remove(m, name)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
    return zeros / sum(m.weight.numel() for m, _ in targets)


# ---------------------------------------------------------------------------------------------------- the set
@dataclass
class Case:
    name: str
    arch: str
    seed: int
    role: str  # "owner" | "calibration"
    root: str
    parent: str = ""
    transform: str = "none"
    strength: str = ""
    model: nn.Module | None = None
    info: dict[str, Any] = field(default_factory=dict)


def children_of(root: Case, s: Settings, data: dict[str, tuple[torch.Tensor, torch.Tensor]], mean: list[float],
                std: list[float], which: tuple[str, ...]) -> list[Case]:
    """The derived models of ``root`` (its model trained), each made from a fresh copy of the root."""
    xa, ya = data["train_a"]
    xb, yb = data["train_b"]
    out = []
    seed = root.seed * 1000 + 7  # every child's randomness is fixed and distinct from its root's

    def copy_root() -> Normalised:
        m = new_model(root.arch, seed, mean, std)
        m.load_state_dict(root.model.state_dict())
        return m

    if "finetune_light" in which:
        m = copy_root()
        t0 = time.perf_counter()
        fit(m, xb, yb, steps=s.light_steps, optimizer="sgd", lr=s.lr / 10, batch_size=s.batch_size, seed=seed)
        out.append(Case(f"{root.name}-ft_light", root.arch, seed, root.role, root.root, root.name, "finetune",
                        "light", m, {"recipe": f"SGD(momentum 0.9) lr={s.lr / 10:g}, {s.light_steps} steps on train_b",
                                     "seconds": time.perf_counter() - t0}))
    if "finetune_heavy" in which:
        m = copy_root()
        steps = s.heavy_epochs * (len(xb) // s.batch_size)
        t0 = time.perf_counter()
        fit(m, xb, yb, steps=steps, optimizer="adam", lr=s.lr, batch_size=s.batch_size, seed=seed)
        out.append(Case(f"{root.name}-ft_heavy", root.arch, seed, root.role, root.root, root.name, "finetune",
                        "heavy", m, {"recipe": f"Adam lr={s.lr:g} (the root's), {s.heavy_epochs} epochs = {steps} "
                                               "steps on train_b (disjoint from the root's train_a)",
                                     "seconds": time.perf_counter() - t0}))
    if "prune30" in which:
        m = copy_root()
        t0 = time.perf_counter()
        sparsity = prune_and_recover(m, s.prune_amount, xb, yb, steps=s.recovery_steps, lr=s.lr / 10,
                                     batch_size=s.batch_size, seed=seed)
        out.append(Case(f"{root.name}-prune30", root.arch, seed, root.role, root.root, root.name, "prune",
                        f"{s.prune_amount:g}", m,
                        {"recipe": f"global L1 unstructured {s.prune_amount:g} of conv/linear weights, recovery "
                                   f"Adam lr={s.lr / 10:g} {s.recovery_steps} steps on train_b, mask held",
                         "sparsity": sparsity, "seconds": time.perf_counter() - t0}))
    if "distill" in which:
        m = new_model(root.arch, seed, mean, std)  # a student with fresh weights: only the outputs are taken
        t0 = time.perf_counter()
        teacher = logits_of(root.model, xb)
        fit(m, xb, teacher, steps=s.distill_steps, optimizer="adam", lr=s.lr, batch_size=s.batch_size, seed=seed,
            soft=True, temperature=s.temperature)
        out.append(Case(f"{root.name}-distill", root.arch, seed, root.role, root.root, root.name, "distill",
                        f"T={s.temperature:g},{s.distill_steps} steps", m,
                        {"recipe": f"student {ARCHS[root.arch]['name']} from scratch, KL at T={s.temperature:g} on "
                                   f"the teacher's logits on train_b, Adam lr={s.lr:g} {s.distill_steps} steps",
                         "seconds": time.perf_counter() - t0}))
    return out


def sidecar(case: Case, mean: list[float], std: list[float], test_acc: float, parent_model: nn.Module | None,
            threads: int) -> dict[str, Any]:
    arch = ARCHS[case.arch]
    return {
        # the keys of an fpbench ModelSpec (fpbench.verify reads this file as the model's spec)
        "arch": {"builder": "timm", "name": arch["name"], "kwargs": arch["kwargs"]},
        "num_classes": len(CLASSES), "class_names": CLASSES,
        "input": {"channels": 3, "size": SIZE, "mean": mean, "std": std},
        # what this case is
        "name": case.name, "arch_key": case.arch, "role": case.role, "root": case.root, "parent": case.parent,
        "transform": case.transform, "strength": case.strength, "seed": case.seed, "test_accuracy": test_acc,
        "relative_weight_change": relative_change(case.model, parent_model) if parent_model is not None else 0.0,
        "torch_threads": threads, "data": "digits, 32x32 RGB (coloured strokes), see data.npz", **case.info,
    }


def manifest_rows(cases: list[Case]) -> list[dict[str, Any]]:
    """Every owner root against every other model: label 1 when the suspect derives from the owner; pairs with
    a calibration model (pristine or derived) are held-out negatives (role 'calibration')."""
    owners = [c for c in cases if c.role == "owner" and c.transform == "none"]
    rows = []
    for o in owners:
        for c in cases:
            if c.name == o.name:
                continue
            rows.append({"owner": o.name, "suspect": c.name, "label": int(c.root == o.name), "transform": c.transform,
                         "strength": c.strength, "role": "calibration" if c.role == "calibration" else "pair",
                         "owner_arch": o.arch, "suspect_arch": c.arch})
    return rows


def build(out: Path, s: Settings, seed: int, threads: int, log: Any = print) -> dict[str, Any]:
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    raw = make_splits(s, seed)
    np.savez_compressed(out / "data.npz", **{f"x_{k}": v[0] for k, v in raw.items()},
                        **{f"y_{k}": v[1] for k, v in raw.items()}, classes=np.array(CLASSES))
    data = {k: (to_float(x), torch.from_numpy(y)) for k, (x, y) in raw.items()}
    xa = data["train_a"][0]
    mean = [float(v) for v in xa.mean(dim=(0, 2, 3))]  # the owner's own training statistics
    std = [float(v) for v in xa.std(dim=(0, 2, 3))]
    xt, yt = data["test"]
    cases: list[Case] = []
    parents: dict[str, nn.Module] = {}
    for arch in s.archs:
        for role, seeds in (("owner", s.owner_seeds), ("calibration", s.calibration_seeds)):
            for sd in seeds:
                name = f"{arch}-s{sd}"
                m = new_model(arch, sd, mean, std)
                t0 = time.perf_counter()
                fit(m, *data["train_a"], steps=s.root_steps, optimizer="adam", lr=s.lr, batch_size=s.batch_size,
                    seed=sd)
                root = Case(name, arch, sd, role, name, model=m,
                            info={"recipe": f"Adam lr={s.lr:g}, {s.root_steps} steps of {s.batch_size} on train_a",
                                  "seconds": time.perf_counter() - t0})
                log(f"{name}: trained in {root.info['seconds']:.1f}s, test accuracy {accuracy(m, xt, yt):.3f}")
                which = (("finetune_light", "finetune_heavy", "prune30", "distill") if role == "owner"
                         else ("finetune_heavy", "prune30"))
                kids = children_of(root, s, data, mean, std, which)
                for k in kids:
                    parents[k.name] = m
                    log(f"  {k.name}: {k.info['seconds']:.1f}s, test accuracy {accuracy(k.model, xt, yt):.3f}")
                cases += [root, *kids]
    summary_models = {}
    for c in cases:
        acc = accuracy(c.model, xt, yt)
        if acc < s.accuracy_floor:
            raise SystemExit(f"{c.name}: test accuracy {acc:.3f} is below the floor {s.accuracy_floor} (chance "
                             f"{1 / len(CLASSES):.2f}): a bug in its recipe, not a case")
        save_file({k: v.contiguous() for k, v in c.model.net.state_dict().items()}, str(out / f"{c.name}.safetensors"))
        meta = sidecar(c, mean, std, acc, parents.get(c.name), threads)
        (out / f"{c.name}.json").write_text(json.dumps(meta, indent=1))
        summary_models[c.name] = {k: meta[k] for k in ("role", "root", "transform", "strength", "test_accuracy",
                                                       "relative_weight_change", "seconds")}
    rows = manifest_rows(cases)
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = {"seed": seed, "torch_threads": threads, "settings": s.__dict__, "mean": mean, "std": std,
               "train_seconds": sum(m["seconds"] for m in summary_models.values()),
               "total_seconds": time.perf_counter() - t_start, "cpu_seconds": time.process_time() - cpu_start,
               "models": summary_models,
               "pairs": len(rows), "versions": {"torch": torch.__version__, "timm": timm.__version__}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"{len(cases)} models, {len(rows)} pairs in {out}; training {summary['train_seconds']:.0f}s, "
        f"total {summary['total_seconds']:.0f}s wall, {summary['cpu_seconds']:.0f}s CPU")
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--quick", action="store_true", help="a tiny set for tests: one architecture, few steps")
    ap.add_argument("--seed", type=int, default=0, help="data seed (colours and split order)")
    # One thread by default: on a shared 2-core machine two threads per process oversubscribe the cores and
    # OpenMP's waiting made a training step 30x slower (measured); results depend on it, so it is recorded.
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it: recorded)")
    ap.add_argument("--force", action="store_true", help="rebuild even when --out holds this very set")
    args = ap.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if not args.force and up_to_date(args.out, settings, args.seed, args.threads):
        print(f"{args.out} already holds this case set (summary.json, every model file): kept (--force rebuilds)")
        return
    build(args.out, settings, args.seed, args.threads)


def up_to_date(out: Path, s: Settings, seed: int, threads: int) -> bool:
    """``out`` holds a finished set made with these settings: its summary matches and every model file is there."""
    path = out / "summary.json"
    if not path.exists():
        return False
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    same = (summary.get("seed") == seed and summary.get("torch_threads") == threads
            and summary.get("settings") == json.loads(json.dumps(s.__dict__, default=str)))
    return same and all((out / f"{m}.safetensors").exists() and (out / f"{m}.json").exists()
                        for m in summary.get("models", {}))


if __name__ == "__main__":
    sys.exit(main())
