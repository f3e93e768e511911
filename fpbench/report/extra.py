"""Extra report sections other parts of fpbench contribute (lineage, attacks, transfer, zoo effects).

One pattern: register a ``Section`` in ``SECTIONS`` under its name (the report renders them in registration
order: :func:`sections`). ``build(runs_dir, zoo)`` returns a DataFrame (or None when its records do not exist
yet) and may write figures into ``out_dir``; the report renders it like Tables I-III. Builders are named
"module:attr" and imported lazily, so a section never forces its module on the report.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fpbench.registry import Registry


@dataclass
class Section:
    name: str
    title: str
    build: str  # "module:attr" of a function (runs_dir: Path, zoo: str, out_dir: Path) -> DataFrame | None
    figures: list[str] = field(default_factory=list)  # file names the builder writes into out_dir

    def run(self, runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
        module_name, attr = self.build.split(":")
        fn: Callable[[Path, str, Path], pd.DataFrame | None] = getattr(importlib.import_module(module_name), attr)
        return fn(runs_dir, zoo, out_dir)


def zoo_models(runs_dir: Path, zoo: str, out_dir: Path) -> pd.DataFrame | None:
    """Every zoo model's task accuracy next to its parent's, and what its transform did (from _models.parquet)."""
    path = Path(runs_dir) / "records" / zoo / "_models.parquet"
    return pd.read_parquet(path) if path.exists() else None


SECTIONS = Registry("report section")
for _section in [
    Section("transform_effects", "Transform effects on the models (mean over roots: accuracy before/after, "
            "sparsity, bits, relative parameter change)", "fpbench.report.effects:transform_effects"),
    Section("robustness", "Robustness curves: AUC and calibrated TPR per method against each family's strength, "
            "with the child's task accuracy and relative weight change", "fpbench.report.robustness:robustness_section",
            figures=["robustness.png"]),
    Section("external", "Out-of-zoo check: AUC on models made outside the zoo (plain timm code, another task; "
            "`make external`) beside the zoo's AUC on the cell that makes the same kind of child",
            "fpbench.report.external:external_section"),
    Section("llm", "LLM families (LeaFBench's setting): AUC, KS statistic, mean score difference and accuracy at the "
            "Youden threshold (in-sample: chosen on the pairs it scores, as LeaFBench does) beside the calibrated "
            "threshold's TPR/FPR, per method pooled, by derivative type and by family",
            "fpbench.report.llm:llm_section"),
    Section("lineage_claims", "Lineage tracking: ancestry claims decided from each method's scores (path: a chain "
            "of verified steps; direct: the ancestor's signature on the query)", "fpbench.lineage.report:claims_section"),
    Section("lineage_reconstruction", "Lineage reconstruction: parents recovered by a maximum spanning arborescence "
            "of the pairwise scores", "fpbench.lineage.report:reconstruction_section", figures=["family_tree.png"]),
    Section("attacks", "Attacks (seed paper sec. IV-C): TPR and task-accuracy cost under the adaptive removal attack, "
            "accuracy cost at which verification fails, forgery claims accepted, ambiguity (partial transformations)",
            "fpbench.cmf.attack_report:attacks_table", figures=["ambiguity.png"]),
    Section("transfer", "Fingerprint transfer (FP-VEC): transfer vs direct injection vs inheritance, mean over downstream "
            "models (FSR clean and after fine-tuning, pruning, quantization, merging; quality change; training s per "
            "model)", "fpbench.transfer.report:summary_section"),
    Section("transfer_lambda", "Fingerprint transfer: effect of lambda", "fpbench.transfer.report:lambda_section"),
    Section("transfer_models", "Fingerprint transfer: every downstream model", "fpbench.transfer.report:models_section"),
]:
    SECTIONS.register(_section.name, _section)


def sections() -> list[Section]:
    """The registered sections, in the order the report shows them."""
    return [SECTIONS.get(name) for name in SECTIONS]
