"""A model owner's world outside the zoo, made the way a user would make it: a small task of their own (images
of shapes, written as an ImageFolder of PNGs), timm models trained with a plain PyTorch loop, saved as
safetensors with a JSON description beside them (one as a Hugging Face-style folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from PIL import Image
from safetensors.torch import save_file

CLASSES = ("cross", "disk", "square")  # sorted, as ImageFolder (and fpbench.userdata) index the folders
SIZE = 16
MEAN, STD = [0.45, 0.45, 0.45], [0.25, 0.25, 0.25]
ARCH = {"architecture": "resnet18", "model_args": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}}


def shape_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One SIZE x SIZE RGB image of a shape of random size, place and colour on a noisy background."""
    img = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.float32)
    r = int(rng.integers(3, 6))
    cy, cx = (int(v) for v in rng.integers(r, SIZE - r, 2))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if kind == "disk":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif kind == "square":
        mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    else:
        mask = ((abs(yy - cy) <= r) & (abs(xx - cx) <= 1)) | ((abs(xx - cx) <= r) & (abs(yy - cy) <= 1))
    img[mask] = rng.integers(120, 256, 3)
    return img.clip(0, 255).astype(np.uint8)


def write_dataset(root: Path, per_class: int = 150, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(shape_image(kind, rng)).save(root / kind / f"{i:04d}.png")
    return root


def tensors(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for label, kind in enumerate(CLASSES):
        for p in sorted((root / kind).glob("*.png")):
            xs.append(np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1))
            ys.append(label)
    return torch.tensor(np.stack(xs)).float() / 255.0, torch.tensor(ys)


def new_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(ARCH["architecture"], num_classes=len(CLASSES), **ARCH["model_args"])


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(y), (64,), generator=g)
        loss = F.cross_entropy(model((x[idx] - 0.45) / 0.25), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model((x - 0.45) / 0.25).argmax(1) == y).float().mean())


def save(model: torch.nn.Module, path: Path, hf_folder: bool = False) -> Path:
    meta = {**ARCH, "num_classes": len(CLASSES), "input_size": [3, SIZE, SIZE], "mean": MEAN, "std": STD}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if hf_folder:
        path.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(meta))
        return path
    save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def make_world(root: Path) -> dict[str, Path]:
    """The owner, its derived models (a fine-tune, a pruned copy), an independent; suspects in one folder."""
    data = write_dataset(root / "shapes")
    x, y = tensors(data)
    owner = fit(new_model(0), x, y, steps=150, lr=3e-3, seed=0)
    suspects = root / "suspects"
    suspects.mkdir()
    out = {"data": data, "suspects": suspects, "owner": save(owner, root / "owner.safetensors")}
    tuned = fit(new_model(0), x, y, 0, 1e-3, 0)
    tuned.load_state_dict(owner.state_dict())
    save(fit(tuned, x.flip(-1), y, steps=60, lr=1e-3, seed=1), suspects / "finetuned", hf_folder=True)
    pruned = new_model(0)
    pruned.load_state_dict(owner.state_dict())
    for m in pruned.modules():
        if isinstance(m, torch.nn.Conv2d):
            tprune.l1_unstructured(m, "weight", amount=0.3)
            tprune.remove(m, "weight")
    save(pruned, suspects / "pruned.safetensors")
    save(fit(new_model(1), x, y, steps=150, lr=3e-3, seed=7), suspects / "independent.safetensors")  # as the owner
    out["owner_accuracy"] = accuracy(owner, x, y)  # type: ignore[assignment]
    return out
