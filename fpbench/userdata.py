"""The query data a model owner actually has, as a :class:`fpbench.data.DataBundle` (``verify data=...``).

Three sources:
- a folder of images: ImageFolder layout (one sub-folder per class, its name the class name), or a flat folder
  with a labels file (``labels.csv``/``labels=FILE``: lines ``file name,label``; a label is a class name or index);
- an ``.npz`` with arrays ``x`` (or ``images``: [N, H, W], [N, H, W, C] or [N, C, H, W]; uint8, or floats in [0, 1])
  and ``y`` (or ``labels``), optionally ``classes``;
- a named dataset that is on the machine (``digits``, ``fashion_mnist``, ``cifar10`` from ``root``).

Images are kept as uint8 at the model's input size and channel count; nothing here normalises (the model does,
with the mean/std of its own spec). The images are shuffled with a fixed seed and cut into disjoint splits:
``test`` (accuracy check through the query pipeline), ``probe`` (the natural inputs methods query with) and
``train_a`` (what data-hungry methods and calibration models train on). The bundle's id hashes the images and
labels themselves, so two different data sets never share cached fingerprints or models.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from fpbench.data import LOADERS, DataBundle, bundle_from_arrays
from fpbench.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MIN_IMAGES = 40  # below this, no split is large enough to say anything


def split_sizes(n: int) -> dict[str, int]:
    """Disjoint split sizes for n images: a quarter for the accuracy check (at most 1000), a sixth for the
    methods' natural queries (at most 500), the rest for training shadow and calibration models."""
    if n < MIN_IMAGES:
        raise ConfigError(f"the query data has {n} images; give at least {MIN_IMAGES} (more is better: methods "
                          "query ~100-500 natural inputs, calibration models train on the rest)")
    test = min(1000, n // 4)
    probe = min(500, n // 6)
    return {"test": test, "probe": probe, "train_a": n - test - probe}


def _image_array(path: Path, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _square(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack images of possibly different sizes: each resized to the first one's size first (PIL, bilinear)."""
    from PIL import Image

    h, w = arrays[0].shape[1:]
    out = []
    for a in arrays:
        if a.shape[1:] != (h, w):
            mode = "L" if a.shape[0] == 1 else "RGB"
            img = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0), mode).resize((w, h))
            a = np.asarray(img, dtype=np.uint8)
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        out.append(a)
    return np.stack(out)


def _labels_file(folder: Path, labels: str | None) -> Path | None:
    if labels:
        p = Path(labels)
        if not p.is_file():
            raise ConfigError(f"labels={labels}: no such file; give a CSV of 'file name,label' lines")
        return p
    for name in ("labels.csv", "labels.txt"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_folder(folder: Path, channels: int, labels: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images and labels of an ImageFolder tree or of a flat folder with a labels file."""
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[Path] = []
    y: list[int] = []
    lf = _labels_file(folder, labels)
    if subdirs and lf is None:
        classes = [d.name for d in subdirs]
        for i, d in enumerate(subdirs):
            found = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            y += [i] * len(found)
    else:
        if lf is None:
            raise ConfigError(f"data={folder}: no class sub-folders and no labels file; use one sub-folder per class "
                              "(ImageFolder layout) or put a labels.csv ('file name,label' lines) beside the images")
        rows = [r for r in csv.reader(lf.read_text().splitlines()) if r and not r[0].startswith("#")]
        if rows and rows[0][0].strip().lower() in ("file", "filename", "name", "path"):
            rows = rows[1:]
        raw = [r[1].strip() for r in rows]
        classes = sorted(set(raw), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
        index = {c: i for i, c in enumerate(classes)}
        for r, lab in zip(rows, raw, strict=True):
            p = folder / r[0].strip()
            if not p.is_file():
                raise ConfigError(f"{lf}: image '{r[0].strip()}' is not in {folder}")
            files.append(p)
            y.append(index[lab])
    if not files:
        raise ConfigError(f"data={folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    x = _square([_image_array(p, channels) for p in files])
    return x, np.asarray(y, dtype=np.int64), classes


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images [N, C, H, W] uint8 and labels of an .npz (``x``/``images`` and ``y``/``labels``)."""
    with np.load(path, allow_pickle=False) as z:
        xk = next((k for k in ("x", "images", "X") if k in z), None)
        yk = next((k for k in ("y", "labels", "Y") if k in z), None)
        if xk is None or yk is None:
            raise ConfigError(f"data={path}: an .npz needs arrays 'x' (images) and 'y' (labels); it has "
                              f"{', '.join(z.files)}")
        x, y = np.asarray(z[xk]), np.asarray(z[yk]).astype(np.int64).reshape(-1)
        classes = [str(c) for c in z["classes"]] if "classes" in z else None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or len(x) != len(y):
        raise ConfigError(f"data={path}: expected images [N, H, W(, C)] and N labels, got {x.shape} and {y.shape}")
    if x.dtype != np.uint8:
        if float(np.nanmax(x)) <= 1.0 + 1e-6:
            x = x * 255.0
        x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if x.shape[1] == 4:
        x = x[:, :3]
    return x, y, classes or [str(i) for i in range(int(y.max()) + 1)]


def _digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(x.shape).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()[:12]


def user_bundle(source: str, size: int, channels: int, mean: list[float], std: list[float],
                labels: str | None = None, root: str | None = None, seed: int = 0) -> DataBundle:
    """The owner's data as a bundle at the model's input ``size`` and ``channels``."""
    path = Path(source)
    if path.is_dir():
        x, y, classes = read_folder(path, channels, labels)
        name = path.name or "data"
    elif path.suffix == ".npz" and path.is_file():
        x, y, classes = read_npz(path)
        name = path.stem
    elif source in LOADERS:
        args: dict[str, Any] = {"root": root} if root else {}
        if source.startswith("cifar"):
            args = {"root": root or "data/cifar", "which": source}
        x, y, classes = LOADERS[source](**args)
        name = source
    else:
        raise ConfigError(f"data={source}: not a folder of images, not an .npz file and not a dataset on this "
                          f"machine ({', '.join(LOADERS)})")
    if channels == 1 and x.shape[1] == 3:
        x = np.round(x.astype(np.float32).mean(1, keepdims=True)).astype(np.uint8)
    if len(classes) < 2 or len(set(y.tolist())) < 2:
        raise ConfigError(f"data={source}: the labels name fewer than two classes; give labelled data of the task")
    cfg = {"name": f"user:{name}", "content": _digest(x, y), "size": int(size), "channels": int(channels),
           "seed": int(seed), "splits": split_sizes(len(y)), "mean": list(mean), "std": list(std)}
    return bundle_from_arrays(x, y, classes, cfg, name=name)
