"""Cross-check SAC and ModelDiff against a peer implementation: QuRD (grodino/QuRD), run from a checkout of it.

Usage: ``python scripts/crosscheck_qurd.py QURD_DIR [zoo=ci] [runs_dir=runs] [cells=finetune,prune30]``

Each root of the zoo is an owner; each root's child of a cell is a suspect (positive for its own root): the pairs
of the cell, as ``fpbench.run`` scores them. QuRD's own objects do the work (nothing of it is copied here):

- SAC: ``RandomNegativeQueries(augment=True)`` (the owner's misclassified probe images, topped up with CutMix and
  flips) -> ``representation.SAC`` (cosine matrix of the logits) -> ``distance.l2``; 50 queries.
- ModelDiff: ``modeldiff.decision_distance_vector`` -> ``distance.cosine`` on 100 train_a seeds and their adversarial
  versions. QuRD crafts those with foolbox, which fpbench does not install: ``fpbench.ops.pgd_attack`` with
  foolbox's LinfPGD defaults (eps 0.03 on [0, 1] images, 40 steps of 0.01/0.3 x eps, random start, the owner's
  labels) stands in for it.

Inputs are normalised once: our models normalise their own inputs, so QuRD's transform is the identity (its own
runner normalises some inputs twice). Each owner's probe accuracy through that pipeline is printed as a check.
QuRD imports numba, foolbox and scikit-image at module level for other methods; they are replaced by inert
modules, which the two paths used here never call.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch


def _inert_imports() -> None:
    def njit(*args, **_kw):  # noqa: ANN002, ANN003, ANN202 - numba.njit used bare or with arguments
        return args[0] if args and callable(args[0]) else (lambda f: f)

    sys.modules.setdefault("numba", types.SimpleNamespace(njit=njit))  # type: ignore[arg-type]
    sys.modules.setdefault("foolbox", types.ModuleType("foolbox"))
    seg = types.ModuleType("skimage.segmentation")
    seg.quickshift = None  # type: ignore[attr-defined]
    sys.modules.setdefault("skimage", types.ModuleType("skimage"))
    sys.modules.setdefault("skimage.segmentation", seg)


def main(argv: list[str]) -> None:
    if not argv or "=" in argv[0]:
        raise SystemExit(__doc__.split("\n\n")[1])
    opts = dict(a.split("=", 1) for a in argv[1:])
    _inert_imports()
    sys.path.insert(0, argv[0])
    from qurd.fingerprint.distance import cosine, l2
    from qurd.fingerprint.modeldiff import decision_distance_vector
    from qurd.fingerprint.queries import RandomNegativeQueries
    from qurd.fingerprint.representation import SAC
    from torchvision.transforms import v2

    from fpbench import metrics as M
    from fpbench.config import load_option
    from fpbench.ops import pgd_attack
    from fpbench.zoo.build import Zoo

    zoo = Zoo(load_option("zoo", opts.get("zoo", "ci")), Path(opts.get("runs_dir", "runs")), torch.device("cpu"),
              seed=0, progress=False)
    cells = opts.get("cells", "finetune,prune30,quant8,distill").split(",")
    probe, train = zoo.data.split("probe"), zoo.data.split("train_a")

    class Probe(torch.utils.data.Dataset):  # what QuRD's samplers read: (image, label), a settable transform
        transform = None

        def __len__(self) -> int:
            return len(probe)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            x = probe.tensor(slice(i, i + 1))[0]
            return (self.transform(x) if self.transform else x), int(probe.labels[i])

    identity = v2.Compose([v2.Identity(), v2.Normalize(mean=[0.0] * 3, std=[1.0] * 3)])
    torch.manual_seed(0)
    roots = zoo.roots()
    rows: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for owner in roots:
        model = zoo.load_module(owner).eval()
        model.pretrained_cfg = {"num_classes": zoo.data.num_classes}  # QuRD's CutMix reads it (a timm attribute)
        with torch.no_grad():
            acc = float((model(probe.tensor()).argmax(1) == probe.labels).float().mean())
        print(f"{owner.id}: probe accuracy through QuRD's pipeline {acc:.3f}", flush=True)
        sac_q, sac = RandomNegativeQueries(augment=True).sample(Probe(), 50, model, identity), SAC()
        g = torch.Generator().manual_seed(0)
        seeds = train.tensor(torch.randperm(len(train), generator=g)[:100])
        with torch.no_grad():
            y = model(seeds).argmax(1)
        adv = pgd_attack(model, seeds, y, eps=0.03, step_size=0.03 * 0.01 / 0.3, steps=40, generator=g)
        fp_sac, fp_ddv = sac(sac_q, model), decision_distance_vector(model, seeds, adv, device="cpu")
        for cell in cells:
            for root in roots:
                suspect = zoo.load_module(zoo.child(root, cell)).eval()
                label = int(root.id == owner.id)
                for name, dist in (("SAC", l2(fp_sac, sac(sac_q, suspect))),
                                   ("DDV", cosine(fp_ddv, decision_distance_vector(suspect, seeds, adv, device="cpu")))):
                    labels, scores = rows.setdefault((name, cell), ([], []))
                    labels.append(label)
                    scores.append(-dist)  # QuRD's are distances: lower = derived
    for (name, cell), (labels, scores) in rows.items():
        print(f"QuRD {name} x {cell}: AUC {M.auc(torch.tensor(labels).numpy(), torch.tensor(scores).numpy()):.3f} "
              f"over {len(labels)} pairs")


if __name__ == "__main__":
    main(sys.argv[1:])
