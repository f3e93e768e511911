"""The seed paper's attack scenarios (sec. IV-C, promised and not reported), run against every method that
applies: ``python -m fpbench.cmf.attacks [zoo=tiny] [runs_dir=runs] [methods=a,b] [parts=removal,forgery,ambiguity]``
(a Hydra app, ``conf/attacks_stage.yaml``, which holds the default methods).

- removal: cells of each method under the adaptive removal attack (the transforms tagged ``removal``:
  ``cmf_remove*``, noise on every singular value, 1/10/100 x alpha, and 100 x alpha with a recovery fine-tune;
  ``identity`` as the unattacked reference). Per positive pair: verified or not, and the task-accuracy cost
  (owner accuracy - attacked child accuracy).
- forgery: false ownership claims. (a) an adversary's independent model (for the embedded mode: protected
  with the adversary's own secret) claims the owner's model; (b) an adversary steals the owner's model, makes
  a copy of their own (a fine-tune; for the embedded mode: embeds their own signature into it) and claims the
  *owner's* model derives from that copy; (c) embedded mode only, an adversary who knows the mechanism builds a
  fake "original" W_fake = U (Σ' - α s_adv) Vᵀ from the owner's published model and claims it, then both
  sides test the other's original (the dispute a court would run).
- ambiguity: cells under partial transformations (tagged ``ambiguity``, ``partial_reinit*``: a fraction of the
  layers replaced and retrained) -- verification as a function of the fraction changed.

Cells go through the ordinary runner (records under ``records/<zoo>/<method>/<transform>.parquet``, cached);
the per-scenario rows are written to ``records/<zoo>/_attacks/{removal,forgery,ambiguity}.parquet``, which the
report's attacks section reads (``fpbench.cmf.attack_report``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig

from fpbench.api import Method
from fpbench.cmf.attack_report import AMBIGUITY, REMOVAL
from fpbench.config import check_option, load_option
from fpbench.errors import ConfigError
from fpbench.evaluate import Candidate, Evaluator, Provenance
from fpbench.records import write_cell
from fpbench.run import CellRunner, CellSpec, candidate, run_cell
from fpbench.spectral import rademacher, shift_singular_values, top_singular_values
from fpbench.stage import CONF_PATH, Stage, as_list
from fpbench.utils import configure_threads
from fpbench.zoo.build import ZooModel, transform_config

log = logging.getLogger("fpbench.attacks")
ADVERSARY_SECRET = 666  # the forger's own secret (any value other than the owner's)
PARTS = ("removal", "forgery", "ambiguity")
STAGE = Stage(module="fpbench.cmf.attacks", config="attacks_stage", list_keys=("methods", "parts"),
              required=("methods", "parts"), unit="parts")


def attacks_dir(runs_dir: Path | str, zoo: str) -> Path:
    return Path(runs_dir) / "records" / zoo / "_attacks"


class AttackRunner:
    def __init__(self, zoo: str, runs_dir: Path, methods: list[str], device: str = "auto", seed: int = 0) -> None:
        self.zoo_cfg = load_option("zoo", zoo)
        self.runs_dir = Path(runs_dir)
        self.methods = {m: load_option("method", m) for m in methods}
        self.seed = seed
        self.device = device
        self.cells = CellRunner(CellSpec(zoo_cfg=self.zoo_cfg, method_cfg=self.methods[methods[0]],
                                         transform_cfg=transform_config("identity"), seed=seed, runs_dir=self.runs_dir,
                                         device=device, progress=False))
        self.zoo = self.cells.zoo

    # ------------------------------------------------------------------ cells (removal, ambiguity)
    def cell(self, method: str, transform: str) -> pd.DataFrame:
        spec = CellSpec(zoo_cfg=self.zoo_cfg, method_cfg=self.methods[method], transform_cfg=transform_config(transform),
                        seed=self.seed, runs_dir=self.runs_dir, device=self.device, progress=False)
        df, summary, cached = run_cell(spec)
        log.info("%s x %s: %s%s", method, transform, summary.get("status"), " (cached)" if cached else "")
        return df

    def pair_rows(self, transforms: list[str], part: str) -> pd.DataFrame:
        """Every scored pair of the attack cells, with the accuracy the attack cost the child."""
        rows = []
        for method in self.methods:
            for t in transforms:
                df = self.cell(method, t)
                ok = df[(df["status"] == "ok") & (df["role"] == "pair")]
                for r in ok.itertuples():
                    rows.append({"part": part, "method": method, "attack": t, "owner": r.owner, "suspect": r.suspect,
                                 "label": int(r.label), "score": float(r.score), "threshold": float(r.threshold),
                                 "verified": int(r.decision),
                                 "accuracy_cost": float(r.owner_accuracy - r.suspect_accuracy)})
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ forgery
    def forgery_rows(self) -> pd.DataFrame:
        return pd.DataFrame([row for name in self.methods for row in self._forgery(name)])

    def _forgery(self, name: str) -> list[dict[str, Any]]:
        """False ownership claims, scored through the evaluation path (``fpbench.evaluate``): a claim the method
        cannot compare is left out, as a cell records it n/a."""
        rows: list[dict[str, Any]] = []
        cfg = self.methods[name]
        method = self.cells.method(cfg)
        evaluator = self.cells.evaluator(method)
        protect = cfg.get("protect")
        owned = self.cells.owners(cfg, self.zoo.roots())  # the models owners publish
        prov = Provenance(self.zoo_cfg["name"], name, "_forgery", "", self.seed, labelled=False)

        def claim(scenario: str, adversary: Candidate, victim: Candidate) -> None:
            rec = evaluator.evaluate([adversary], [(victim, None)], prov)[0]
            if rec.status == "ok":
                rows.append({"part": "forgery", "method": name, "scenario": scenario, "adversary": adversary.id,
                             "victim": victim.id, "score": rec.score, "threshold": method.threshold,
                             "claim_accepted": int(rec.decision)})

        # (a) every other owner's model (own secret when embedded) claims each victim's model.
        for adv in owned:
            for victim in owned:
                if adv.root_id != victim.root_id:
                    claim("independent claims", candidate(self.zoo, adv), candidate(self.zoo, victim))
        # (b) a stolen copy of the victim's model claims the victim's model.
        for victim in owned:
            if protect:  # the forger embeds a signature of their own into the stolen model
                tcfg = transform_config(protect)
                tcfg = {**tcfg, "name": f"{tcfg['name']}_forger",
                        "params": {**tcfg["params"], "secret": ADVERSARY_SECRET}}
                copy = self.zoo.child(victim, tcfg)
            else:
                copy = self.zoo.child(victim, "finetune")
            claim("stolen copy claims the original", candidate(self.zoo, copy), candidate(self.zoo, victim))
        if protect and cfg.get("params", {}).get("mode") == "embedded":
            rows.extend(self._inversion_rows(name, method, evaluator, self.zoo.roots(), owned))
        return rows

    def _inversion_rows(self, name: str, method: Method, evaluator: Evaluator, roots: list[ZooModel],
                        owned: list[ZooModel]) -> list[dict]:
        """(c) The forger computes a fake original from the published model and claims it (Craver et al. 1998's
        invertibility attack on watermarks), then the dispute: whose signature is in whose original?"""
        out = []
        for i, (root, victim) in enumerate(zip(roots, owned, strict=True)):
            secret = victim.meta["info"]["owner_private"]["cmf_signature"]
            alpha = float(secret["alpha"])
            s_adv = rademacher(ADVERSARY_SECRET * 7919 + i, len(secret["s"]))
            published = self.zoo.load_module(victim)
            weights = dict(published.trunk.named_parameters())  # type: ignore[attr-defined]
            fake = self.zoo.load_module(victim)
            fake_weights = dict(fake.trunk.named_parameters())  # type: ignore[attr-defined]
            matrices = []
            with torch.no_grad():
                for m in secret["matrices"]:  # any matrices would do; the forger reuses the same layout
                    seg = s_adv[m["start"] : m["start"] + m["length"]]
                    fake_weights[m["name"]].copy_(shift_singular_values(weights[m["name"]].detach().cpu(), -alpha * seg))
                    sigma = top_singular_values(fake_weights[m["name"]].detach().cpu(), m["length"])
                    matrices.append({**m, "sigma": sigma.tolist()})
            forged = {"cmf_signature": {"alpha": alpha, "s": s_adv.tolist(), "matrices": matrices}}
            published_c = candidate(self.zoo, victim)
            # The forger presents the published model with a forged secret; the fake original is a module of theirs.
            forger_c = dataclasses.replace(published_c, id=f"{victim.id}/forger", owner_private=forged,
                                           key=f"{victim.key}:forged-by:{ADVERSARY_SECRET}")
            fake_c = dataclasses.replace(published_c, id=f"{victim.id}/fake-original", load=lambda f=fake: f,
                                         key=f"{victim.key}:fake-original:{ADVERSARY_SECRET}",
                                         stored_accuracy=float("nan"), owner_private={})
            original_c = candidate(self.zoo, root)  # the owner's real, unprotected original
            base = {"part": "forgery", "method": name, "adversary": f"{victim.id}/inverted", "victim": victim.id,
                    "threshold": method.threshold}
            prov = Provenance(self.zoo_cfg["name"], name, "_forgery", "", self.seed, labelled=False)
            for scenario, owner_c, suspect_c in (
                ("inversion: forger's claim on the published model", forger_c, published_c),
                ("inversion: owner's signature in the forger's fake original", published_c, fake_c),
                ("inversion: forger's signature in the owner's original", forger_c, original_c),
            ):
                rec = evaluator.evaluate([owner_c], [(suspect_c, None)], prov)[0]
                out.append({**base, "scenario": scenario, "score": float(rec.score),
                            "claim_accepted": int(rec.decision)})
        return out

    # ------------------------------------------------------------------ all
    def run(self, parts: list[str]) -> dict[str, Path]:
        out = attacks_dir(self.runs_dir, self.zoo_cfg["name"])
        written = {}
        for part in parts:
            t0 = time.perf_counter()
            if part == "removal":
                df = self.pair_rows(REMOVAL, "removal")
            elif part == "ambiguity":
                df = self.pair_rows(AMBIGUITY, "ambiguity")
                fractions = {t: transform_config(t)["params"]["fraction"] for t in AMBIGUITY}
                df["fraction"] = df["attack"].map(fractions)
            else:
                df = self.forgery_rows()
            df["zoo"] = self.zoo_cfg["name"]
            path = out / f"{part}.parquet"
            write_cell(path, df)
            written[part] = path
            log.info("%s: %d rows in %.0f s -> %s", part, len(df), time.perf_counter() - t0, path)
        return written


@hydra.main(config_path=CONF_PATH, config_name=STAGE.config, version_base="1.3")
def main(cfg: DictConfig) -> None:
    with STAGE.running(cfg):
        methods, parts = as_list(cfg.methods, "methods"), as_list(cfg.parts, "parts")
        bad = [p for p in parts if p not in PARTS]
        if bad:
            raise ConfigError(f"invalid option 'parts': unknown part(s) {', '.join(bad)}; valid: {', '.join(PARTS)}")
        for m in methods:
            check_option("method", m)
        STAGE.total = len(parts)
        configure_threads()
        zoo = str(cfg.zoo.name)
        runner = AttackRunner(zoo, Path(cfg.runs_dir), methods, device=str(cfg.device), seed=int(cfg.seed))
        for part in parts:
            for name, path in runner.run([part]).items():
                print(f"{name}: {path}", flush=True)
            STAGE.done(part)
    from fpbench.cmf.attack_report import attacks_table

    table = attacks_table(Path(cfg.runs_dir), zoo, None)
    if table is not None:
        print(table.to_string(index=False))


def cli(argv: list[str] | None = None) -> None:
    STAGE.launch(main, argv)


if __name__ == "__main__":
    cli()
