"""Score an external case set (``scripts/external_cases.py``) with fpbench's own methods, through fpbench's
public evaluation path, and tabulate per method x transform: AUC, TPR and FPR at the method's fixed threshold
and at a threshold calibrated on the set's held-out calibration negatives.

    python scripts/xcheck_ours.py --cases runs/external --out runs/external/ours
    python scripts/xcheck_ours.py --cases runs/external --out runs/external/ours --methods ipguard,sac \
        --peer qurd=peer_scores.csv      # put a peer's scores of the same pairs beside ours

Models are fpbench ``ModelSpec`` s built from the cases' sidecars (``arch={"builder": "timm", ...}``, the
sidecar's mean/std as the wrapper's normalisation) and their plain timm weights are loaded under the wrapper's
``net.`` prefix; the methods query with the case set's own data (a ``DataBundle`` of ``data.npz``: ``train_a``
is the owners' training data, ``probe`` held-out natural inputs, ``test`` the accuracy check), never the zoo's.
Every model's accuracy through the query pipeline is checked against the one the case script recorded.

A peer's scores (``--peer NAME=FILE``, a CSV with method, owner, suspect, score; higher = derived) are
tabulated by the same code, so both AUC columns are computed on the same pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from fpbench import thresholds
from fpbench.api import Method, ModelSpec
from fpbench.config import load_option
from fpbench.data import DataBundle, ImageSet
from fpbench.errors import ConfigError
from fpbench.evaluate import Candidate, Evaluator, Provenance, make_method, method_impl
from fpbench.metrics import auc
from fpbench.modelfiles import load_module
from fpbench.records import to_frame
from fpbench.utils import file_sha256
from fpbench.zoo.store import ArtefactStore

# every method config but the embedded cmf ones (they need owners protected by the cmf_embed transform)
DEFAULT_METHODS = ("agreement", "cae", "cka", "cmf", "cmf_act", "cmf_cka", "cmf_spectral", "cort", "ipguard",
                   "metafinger", "modeldiff", "sac", "sac_w", "uap", "uap_delta", "weightcos")
SPLITS = ("train_a", "train_b", "probe", "test")


# ---------------------------------------------------------------------------------------------------- inputs
def load_bundle(cases: Path) -> DataBundle:
    """The case set's data as a DataBundle (id = digest of data.npz, so fingerprints are cached per task)."""
    blob = (cases / "data.npz").read_bytes()
    d = np.load(cases / "data.npz")
    spec = json.loads(next(p for p in sorted(cases.glob("*.json")) if p.name != "summary.json").read_text())
    splits = {s: ImageSet(torch.from_numpy(d[f"x_{s}"]), torch.from_numpy(d[f"y_{s}"]).long(), 3) for s in SPLITS}
    return DataBundle(id=f"external-{hashlib.sha256(blob).hexdigest()[:10]}", name="external", size=spec["input"]["size"],
                      class_names=[str(c) for c in d["classes"]], channels=3, splits=splits,
                      mean=spec["input"]["mean"], std=spec["input"]["std"])


def candidate(cases: Path, name: str, data: DataBundle) -> Candidate:
    """One case model as the evaluation sees it: its sidecar as the spec, its plain timm weights under ``net.``."""
    meta = json.loads((cases / f"{name}.json").read_text())
    spec = dataclasses.replace(ModelSpec.from_dict(meta), data_id=data.id)
    path = cases / f"{name}.safetensors"
    return Candidate(id=name, key=f"file:{file_sha256(path)}", spec=spec,
                     load=lambda: load_module(path, spec), root_ids=(meta["root"],),
                     arch=meta["arch_key"], stored_accuracy=float(meta["test_accuracy"]))


def build_method(cfg: dict[str, Any], data: DataBundle, workdir: Path) -> Method:
    return make_method(cfg, data, torch.device("cpu"), 0, workdir / data.id)


# ---------------------------------------------------------------------------------------------------- scoring
def method_config(spec: str) -> dict[str, Any]:
    """A method config by name (``sac``), or a variant ``NAME=BASE:key=value,key=value`` of one (values read as
    YAML: ``ipguard_probe=ipguard:init=probe,k=10.0``)."""
    name, _, variant = spec.partition("=")
    if not variant:
        return load_option("method", name)
    base, _, assignments = variant.partition(":")
    cfg = load_option("method", base)
    params = dict(cfg.get("params") or {})
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        params[key] = yaml.safe_load(value)
    return {**cfg, "name": name, "impl": method_impl(cfg), "params": params}


def score_method(cfg: dict[str, Any], cases: Path, manifest: pd.DataFrame, data: DataBundle,
                 workdir: Path) -> pd.DataFrame:
    """Records of every manifest pair for one method (fingerprints cached under ``workdir``)."""
    name = str(cfg["name"])
    method = build_method(cfg, data, workdir)
    evaluator = Evaluator(method, data, torch.device("cpu"), ArtefactStore(workdir / "fingerprints"))
    owners = [candidate(cases, o, data) for o in sorted(manifest["owner"].unique())]
    suspects = [(candidate(cases, s, data), None) for s in sorted(manifest["suspect"].unique())]
    prov = Provenance("external", name, "external", "", 0)
    df = to_frame(evaluator.evaluate(owners, suspects, prov))
    df = df[df["owner"] != df["suspect"]]
    merged = manifest.merge(df[["owner", "suspect", "label", "score", "status", "error", "threshold", "decision",
                                "fingerprint_seconds", "verify_seconds", "owner_accuracy", "suspect_accuracy"]],
                            on=["owner", "suspect"], suffixes=("", "_eval"))
    bad = merged[(merged["status"] == "ok") & (merged["label"] != merged["label_eval"])]
    if len(bad):  # the evaluation's lineage and the manifest's must agree, or the AUCs mean nothing
        raise SystemExit(f"{name}: labels disagree with the manifest on {len(bad)} pairs, e.g. {bad.iloc[0].to_dict()}")
    return merged.drop(columns=["label_eval"]).assign(method=name)


# ---------------------------------------------------------------------------------------------------- tables
def cell_name(row: pd.Series) -> str:
    return row["transform"] if not row["strength"] or row["transform"] == "none" else f"{row['transform']}:{row['strength']}"


def summarise(scores: pd.DataFrame, target_fpr: float, source: str) -> pd.DataFrame:
    """Per method x cell: AUC (positives T(owner) vs negatives T(other roots)), TPR/FPR at the fixed threshold
    and at the threshold calibrated on the calibration negatives; plus an ``all`` row over every pair."""
    out = []
    for method, rows in scores.groupby("method", sort=True):
        ok = rows[rows["status"] == "ok"]
        cal = thresholds.from_scores(ok.loc[ok["role"] == "calibration", "score"].to_numpy(float), target_fpr)
        pairs = ok[ok["role"] == "pair"].copy()
        pairs["cell"] = pairs.apply(cell_name, axis=1)
        fixed = float(rows["threshold"].iloc[0]) if "threshold" in rows and rows["threshold"].notna().any() else np.nan
        groups = [(c, g) for c, g in pairs.groupby("cell") if c != "none"] + [("all", pairs)]
        for cell, g in groups:
            lab, sc = g["label"].to_numpy(int), g["score"].to_numpy(float)
            pos, neg = lab == 1, lab == 0
            row = {"source": source, "method": method, "cell": cell, "positives": int(pos.sum()),
                   "negatives": int(neg.sum()), "n_a": int((rows["status"] != "ok").sum()) if cell == "all" else 0,
                   "auc": auc(lab, sc), "fixed_threshold": fixed,
                   "tpr_fixed": float((sc[pos] >= fixed).mean()) if pos.any() and np.isfinite(fixed) else np.nan,
                   "fpr_fixed": float((sc[neg] >= fixed).mean()) if neg.any() and np.isfinite(fixed) else np.nan,
                   "cal_threshold": cal.value if cal else np.nan, "cal_negatives": cal.negatives if cal else 0}
            if cal:
                row["tpr_cal"] = float((sc[pos] >= cal.value).mean()) if pos.any() else np.nan
                row["fpr_cal"] = float((sc[neg] >= cal.value).mean()) if neg.any() else np.nan
            out.append(row)
    return pd.DataFrame(out)


def markdown(df: pd.DataFrame, columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) and np.isfinite(v) else ("-" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)


def side_by_side(summary: pd.DataFrame, peers: list[str]) -> pd.DataFrame:
    """AUC of ours and each peer per method x cell, for the methods a peer scored."""
    wide = summary.pivot_table(index=["method", "cell"], columns="source", values="auc").reset_index()
    keep = wide[[p for p in peers if p in wide]].notna().any(axis=1)
    wide = wide[keep]
    for p in peers:
        if p in wide:
            wide[f"ours-{p}"] = wide["ours"] - wide[p]
    return wide


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=Path, required=True, help="folder written by scripts/external_cases.py")
    ap.add_argument("--out", type=Path, required=True, help="folder for scores.csv, summary.csv, summary.md")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=BASE:key=value,...",
                    help="also score a variant of a method config (e.g. ipguard_probe=ipguard:init=probe,k=10.0)")
    ap.add_argument("--target-fpr", type=float, default=0.05,
                    help="FPR the calibrated threshold aims at on the calibration negatives")
    ap.add_argument("--peer", action="append", default=[], metavar="NAME=FILE",
                    help="a peer's scores (CSV: method, owner, suspect, score) to tabulate beside ours")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = pd.read_csv(args.cases / "manifest.csv", keep_default_na=False)
    data = load_bundle(args.cases)
    scores_path = args.out / "scores.csv"
    done = pd.read_csv(scores_path, keep_default_na=False, na_values=["nan", "NaN", ""]) if scores_path.exists() else None
    frames = []
    for spec in [*args.methods.split(","), *args.variant]:
        cfg = method_config(spec)
        name = str(cfg["name"])
        if done is not None and name in set(done["method"]):  # resume: a method's scores are kept once made
            frames.append(done[done["method"] == name])
            continue
        print(f"{name} ...", flush=True)
        try:
            frames.append(score_method(cfg, args.cases, manifest, data, args.out / "cache"))
        except ConfigError as exc:
            print(f"  {name}: cannot be built ({exc})", file=sys.stderr)
            continue
        pd.concat(frames).to_csv(scores_path, index=False)
    ours = pd.concat(frames)
    ours.to_csv(scores_path, index=False)
    summary = [summarise(ours, args.target_fpr, "ours")]
    peers = []
    for spec in args.peer:
        peer, _, path = spec.partition("=")
        p = pd.read_csv(path)
        joined = manifest.merge(p[["method", "owner", "suspect", "score"]], on=["owner", "suspect"])
        summary.append(summarise(joined.assign(status="ok", threshold=np.nan), args.target_fpr, peer))
        peers.append(peer)
    table = pd.concat(summary)
    table.to_csv(args.out / "summary.csv", index=False)
    cols = ["method", "cell", "positives", "negatives", "auc", "fixed_threshold", "tpr_fixed", "fpr_fixed",
            "cal_threshold", "cal_negatives", "tpr_cal", "fpr_cal"]
    text = [f"## ours (target FPR of the calibrated threshold: {args.target_fpr:g})", "",
            markdown(table[table["source"] == "ours"], [c for c in cols if c in table])]
    if peers:
        wide = side_by_side(table, peers)
        wide.to_csv(args.out / "side_by_side.csv", index=False)
        text += ["", "## AUC side by side", "", markdown(wide, list(wide.columns))]
    (args.out / "summary.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
