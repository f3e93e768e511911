"""``python -m fpbench.report [runs_dir=runs] [zoo=tiny] [target_fpr=0.01] [force=false]``: every table and figure
(a Hydra app, ``conf/report_stage.yaml``; ``-m zoo=ci,tiny`` draws the report of each).

Writes ``<runs_dir>/tables/``: table1/2/3 and the extended tables as .md, .csv and .tex, heatmap.png,
panels.png and index.html. Reads only the records under ``<runs_dir>/records/``. When neither the records, nor
the harness's code, nor the options changed since the tables were written (a digest of all three is kept in
``tables/.inputs.sha256``, with the checksum of every file written) and every written file is still there,
the tables are up to date and are not drawn again; ``force=true`` redraws them. An unreadable records file
never stops the report: it is named on stderr and on the page, counted as a failed cell, and every other
table is still written.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from fpbench.errors import FpbenchError
from fpbench.records import load_records
from fpbench.report import figures, html, tables
from fpbench.report.external import summary_path as external_summary
from fpbench.report.extra import sections as extra_sections
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
    """SHA-256 of everything the report reads: every record file (and failed-run note), the harness's own code,
    and the options."""
    h = hashlib.sha256(f"{zoo}|{target_fpr}".encode())
    package = Path(__file__).resolve().parent.parent
    code = sorted(package.rglob("*.py")) + sorted(package.rglob("*.yaml"))
    records = sorted((runs_dir / "records").rglob("*.parquet")) + sorted((runs_dir / "records").rglob("*.failed.json"))
    external = [p for p in [external_summary(runs_dir)] if p.exists()]  # the out-of-zoo section's input
    for base, files in ((runs_dir / "records", records), (package, code), (runs_dir, external)):
        for path in files:
            h.update(str(path.relative_to(base)).encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def up_to_date(out: Path, digest: str) -> bool:
    """The stamp names this inputs digest and every output it lists is still there, unchanged (a deleted or
    edited table is noticed, not trusted)."""
    stamp = out / DIGEST_FILE
    if not stamp.exists():
        return False
    lines = stamp.read_text().split("\n")
    outputs = dict(reversed(line.split("  ", 1)) for line in lines[1:] if "  " in line)
    if lines[0].strip() != digest or "index.html" not in outputs:
        return False
    return all((out / name).is_file() and _file_digest(out / name) == sha for name, sha in outputs.items())


def _write_stamp(out: Path, digest: str, written: list[str]) -> None:
    lines = [digest] + [f"{_file_digest(out / name)}  {name}" for name in sorted(set(written))]
    (out / DIGEST_FILE).write_text("\n".join(lines) + "\n")


def build_report(runs_dir: Path, zoo: str, target_fpr: float = 0.01, force: bool = False) -> Path:
    """Write every table and figure (or keep them when their inputs are unchanged); returns index.html.

    Nothing stops the report half way: an unreadable records file is named (on stderr and at the top of the
    page) and counted as a failed cell, a table or figure that cannot be built says why in its place, and
    index.html is always rewritten.
    """
    out = runs_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    digest, index = inputs_digest(runs_dir, zoo, target_fpr), out / "index.html"
    if not force and up_to_date(out, digest):
        log.info("tables are up to date with the records (force=true redraws them)")
        return index
    (out / DIGEST_FILE).unlink(missing_ok=True)  # a report that dies half way must not look up to date
    index.unlink(missing_ok=True)  # ... nor leave the previous page standing
    loaded = load_records(runs_dir, zoo)
    df = tables.grid_records(tables.with_damaged(loaded))
    issues = tables.problems(loaded)
    for row in issues.itertuples():
        print(f"warning: records/{row.file}: {row.problem}; fix: {row.fix}", file=sys.stderr)
    if df.empty and issues.empty:
        raise FpbenchError(f"no records under {runs_dir}/records/{zoo}; run cells first (make run, or "
                           f"python -m fpbench.run zoo={zoo} runs_dir={runs_dir} ...)")
    written: list[str] = []
    sections: list[tuple[str, pd.DataFrame | None, list[str]]] = []
    if len(issues):
        sections.append(("Warnings: records the report could not use as they stand", issues, []))

    def attempt(title: str, build):  # noqa: ANN001, ANN202 - one failing part must not hide the rest
        try:
            return build()
        except Exception as exc:
            log.warning("%s could not be built: %s", title, exc)
            print(f"warning: {title} could not be built ({type(exc).__name__}: {exc})", file=sys.stderr)
            sections.append((f"{title} (not built)", pd.DataFrame({"error": [f"{type(exc).__name__}: {exc}"]}), []))
            return None

    cells = attempt("cells", lambda: tables.mark_failed_runs(tables.cell_table(df, target_fpr), loaded))
    for name, title, build in (
            ("table1", "Table I: overall performance",
             lambda: tables.table1(df, lineage_rate(runs_dir, zoo), target_fpr, lineage_rates(runs_dir, zoo))),
            ("table2", "Table II: performance by method", lambda: tables.table2(df, target_fpr)),
            ("table3", "Table III: performance by transformation", lambda: tables.table3(df, target_fpr)),
            ("cells", "Extended: every cell (AUC with 95% bootstrap CI, TPR@1%FPR, calibrated)", lambda: cells),
            ("runtime", "Method runtime", lambda: tables.runtime_table(df))):
        frame = attempt(title, build) if name != "cells" else cells
        if frame is None:
            continue
        write_table(frame, out, name)
        written += [f"{name}.{ext}" for ext in ("csv", "md", "tex")]
        sections.append((title, frame, []))
        if name == "table3" and cells is not None:
            figs = [f for f, draw in (("heatmap.png", figures.heatmap), ("panels.png", figures.panels))
                    if attempt(f, lambda draw=draw, f=f: draw(cells, out / f)) is not None]
            written += figs
            sections.append(("Figures", None, figs))
    for section in extra_sections():
        try:
            frame = section.run(runs_dir, zoo, out)
        except Exception as exc:  # one broken section must not hide the rest of the report
            log.warning("section %s failed: %s", section.name, exc)
            continue
        if frame is None:
            continue
        write_table(frame, out, section.name)
        written += [f"{section.name}.{ext}" for ext in ("csv", "md", "tex")]
        sections.append((section.title, frame, [f for f in section.figures if (out / f).exists()]))
    page = html.render(sections, index, f"fpbench report — zoo '{zoo}'")
    _write_stamp(out, digest, [*written, index.name])
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
