"""``python -m fpbench.report [runs_dir=runs] [zoo=tiny] [target_fpr=0.01] [force=false]``: every table and figure
(a Hydra app, ``conf/report_stage.yaml``; ``-m zoo=ci,tiny`` draws the report of each).

Writes ``<runs_dir>/tables/``: table1/2/3 and the extended tables as .md, .csv and .tex, heatmap.png,
panels.png and index.html. Reads only the records under ``<runs_dir>/records/``. When neither the records, nor
the harness's code, nor the options changed since the tables were written (a digest of all three is kept in
``tables/.inputs.sha256``), the tables are up to date and are not drawn again; ``force=true`` redraws them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from fpbench.errors import FpbenchError
from fpbench.report import figures, html, tables
from fpbench.report.extra import SECTIONS
from fpbench.stage import CONF_PATH, Stage

log = logging.getLogger("fpbench.report")
STAGE = Stage(module="fpbench.report", config="report_stage",
              resume="the records are untouched and the tables count as drawn only once all are written; "
                     "re-run the same command to draw them")


def write_table(df: pd.DataFrame, out_dir: Path, name: str) -> None:
    df.to_csv(out_dir / f"{name}.csv", index=False)
    (out_dir / f"{name}.md").write_text(df.to_markdown(index=False, floatfmt=".4f") + "\n")
    (out_dir / f"{name}.tex").write_text(df.to_latex(index=False, float_format="%.4f", na_rep="--"))


def lineage_rate(runs_dir: Path, zoo: str) -> float | None:
    path = runs_dir / "records" / zoo / "_lineage" / "claims.parquet"
    if not path.exists():
        return None
    claims = pd.read_parquet(path)
    return float(claims["correct"].mean()) if len(claims) else None


def lineage_rates(runs_dir: Path, zoo: str) -> dict[str, float]:
    """The lineage tracking success rate of each method that decided claims (``python -m fpbench.lineage``)."""
    path = runs_dir / "records" / zoo / "_lineage" / "claims.parquet"
    if not path.exists():
        return {}
    claims = pd.read_parquet(path)
    return {str(m): float(g["correct"].mean()) for m, g in claims.groupby("method")} if "method" in claims else {}


DIGEST_FILE = ".inputs.sha256"


def inputs_digest(runs_dir: Path, zoo: str, target_fpr: float) -> str:
    """SHA-256 of everything the report reads: every record file, the harness's own code, and the options."""
    h = hashlib.sha256(f"{zoo}|{target_fpr}".encode())
    package = Path(__file__).resolve().parent.parent
    code = sorted(package.rglob("*.py")) + sorted(package.rglob("*.yaml"))
    for base, files in ((runs_dir / "records", sorted((runs_dir / "records").rglob("*.parquet"))), (package, code)):
        for path in files:
            h.update(str(path.relative_to(base)).encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def build_report(runs_dir: Path, zoo: str, target_fpr: float = 0.01, force: bool = False) -> Path:
    """Write every table and figure (or keep them when their inputs are unchanged); returns index.html."""
    out = runs_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    digest, stamp, index = inputs_digest(runs_dir, zoo, target_fpr), out / DIGEST_FILE, out / "index.html"
    if not force and index.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        log.info("tables are up to date with the records (force=true redraws them)")
        return index
    stamp.unlink(missing_ok=True)  # a report that dies half way must not look up to date
    df = tables.grid_records(tables.load(runs_dir, zoo))
    if df.empty:
        raise FpbenchError(f"no records under {runs_dir}/records/{zoo}; run cells first (make run, or "
                           f"python -m fpbench.run zoo={zoo} runs_dir={runs_dir} ...)")
    cells = tables.cell_table(df, target_fpr)
    t1 = tables.table1(df, lineage_rate(runs_dir, zoo), target_fpr, lineage_rates(runs_dir, zoo))
    t2, t3 = tables.table2(df, target_fpr), tables.table3(df, target_fpr)
    runtime = tables.runtime_table(df)
    sections: list[tuple[str, pd.DataFrame | None, list[str]]] = []
    for name, title, frame in (("table1", "Table I: overall performance", t1),
                               ("table2", "Table II: performance by method", t2),
                               ("table3", "Table III: performance by transformation", t3),
                               ("cells", "Extended: every cell (AUC with 95% bootstrap CI, TPR@1%FPR, calibrated)",
                                cells),
                               ("runtime", "Method runtime", runtime)):
        write_table(frame, out, name)
        sections.append((title, frame, []))
    sections.insert(3, ("Figures", None, [figures.heatmap(cells, out / "heatmap.png").name,
                                          figures.panels(cells, out / "panels.png").name]))
    for section in SECTIONS:
        try:
            frame = section.run(runs_dir, zoo, out)
        except Exception as exc:  # one broken section must not hide the rest of the report
            log.warning("section %s failed: %s", section.name, exc)
            continue
        if frame is None:
            continue
        write_table(frame, out, section.name)
        sections.append((section.title, frame, [f for f in section.figures if (out / f).exists()]))
    page = html.render(sections, index, f"fpbench report — zoo '{zoo}'")
    stamp.write_text(digest + "\n")
    return page


@hydra.main(config_path=CONF_PATH, config_name=STAGE.config, version_base="1.3")
def main(cfg: DictConfig) -> None:
    with STAGE.running(cfg):
        index = build_report(Path(cfg.runs_dir), str(cfg.zoo.name), float(cfg.target_fpr), force=bool(cfg.force))
        print(f"tables and figures written to {index.parent}/ (open {index})")


def cli(argv: list[str] | None = None) -> None:
    STAGE.launch(main, argv)


if __name__ == "__main__":
    cli()
