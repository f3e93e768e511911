"""``make bench``: measure what the issues promise and write BENCHMARKS.md with the machine it ran on.

    python scripts/bench.py [--zoo tiny] [--sections grid,zoo,methods,scaling] [--runs runs/bench]

Sections (each stored in BENCHMARKS.json beside the page, so sections can be measured at different times and the
page is rewritten from all stored measurements; a section of the page measured before the store existed is kept):
  grid     cold and warm wall time of the default grid, the same commands as `make run` (zoo stage,
           method sweep, tables), in a fresh runs dir; peak resident memory of the child processes.
  warm     the warm run alone, again, on the runs dir the grid section left.
  zoo      cold build time of the whole zoo with every transform config, per transform.
  methods  fingerprint seconds and verify seconds per pair for every method, from the grid's records
           (next to the paper's 0.014 s per pair for CMF and 12.79 s for IPGuard's fingerprint).
  scaling  how cost grows: a method added to a built zoo builds nothing (cost = builds + methods x pairs).
  transfer `make transfer` cold (both tracks) and the per-way means of its table.
  verify   one owner against a folder of 20 suspects with three methods in one `fpbench.verify` process, beside
           twenty separate calls (one suspect each): seconds per pair (on the ci zoo's models, exported).
  llm      the language grid: the llm_ci cell of the test suite cold, then zoo=llm_tiny experiment=llm cold and warm.
  llm_warm the language grid's warm rerun alone, again, on the runs dir the llm section left.
The load average before and after each section is recorded: numbers measured on a busy machine say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PAPER = {"cmf_verify_seconds": 0.014, "ipguard_fingerprint_seconds": 12.79}


def machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


class LoadSampler:
    """Samples the 1-minute load average every ``every`` seconds while a section runs: the start and end values
    alone miss other work that ran in the middle."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"load_mean": sum(self.samples) / len(self.samples), "load_max": max(self.samples)}


def peak_child_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB


def grid_commands(zoo: str, runs: Path, experiment: str = "grid") -> list[list[str]]:
    return [[PY, "-m", "fpbench.zoo", f"zoo={zoo}", f"experiment={experiment}", f"runs_dir={runs}"],
            [PY, "-m", "fpbench.run", "-m", f"experiment={experiment}", f"zoo={zoo}", f"runs_dir={runs}",
             "progress=false"],
            [PY, "-m", "fpbench.report", f"runs_dir={runs}", f"zoo={zoo}"]]


GRID_STAGES = ("zoo stage", "method sweep", "tables")


def time_grid(zoo: str, runs: Path, experiment: str = "grid") -> dict[str, float]:
    """Wall seconds of each stage of a grid (the commands of `make run`)."""
    return {n: timed(c) for n, c in zip(GRID_STAGES, grid_commands(zoo, runs, experiment), strict=True)}


def bench_grid(zoo: str, runs: Path) -> dict[str, Any]:
    shutil.rmtree(runs, ignore_errors=True)
    cold, warm = time_grid(zoo, runs), time_grid(zoo, runs)
    total_cold, total_warm = sum(cold.values()), sum(warm.values())
    return {"cold_seconds": cold, "warm_seconds": warm, "cold_total": total_cold, "warm_total": total_warm,
            "warm_over_cold": total_warm / total_cold, "peak_rss_mib": peak_child_rss_mib()}


def bench_warm(zoo: str, runs: Path, experiment: str = "grid", section: str = "grid") -> dict[str, Any]:
    """The warm run alone, again, on the runs dir a section left (its cold numbers are not re-measured)."""
    if not (runs / "records" / zoo).exists():
        return {"error": f"no grid under {runs}; measure the {section} section first"}
    warm = time_grid(zoo, runs, experiment)
    return {"warm_seconds": warm, "warm_total": sum(warm.values())}


def bench_llm_warm(zoo: str, runs: Path) -> dict[str, Any]:
    """The language grid's warm rerun alone, on the runs dir the llm section left (``zoo`` is ignored)."""
    return bench_warm("llm_tiny", runs / "llm_tiny", "llm", "llm")


def bench_zoo(zoo: str, runs: Path) -> dict[str, Any]:
    from fpbench.config import list_options
    from fpbench.zoo.__main__ import build, plan

    transforms = [t for t in list_options("transform") if t != "identity"]
    shutil.rmtree(runs, ignore_errors=True)
    t0 = time.perf_counter()
    result = build(plan(zoo, transforms), runs)
    return {"total_seconds": time.perf_counter() - t0, "per_transform_seconds": result["seconds"],
            "artefacts_built": result["built"], "not_applicable": result["not_applicable"]}


def full_grid(key: str) -> list[str]:
    """The ``method`` or ``transform`` list of ``experiment=full`` (the LeafBench grid)."""
    from fpbench.config import load_option

    return str(load_option("experiment", "full")["hydra"]["sweeper"]["params"][key]).split(",")


def bench_methods(zoo: str, runs: Path, methods: str | None = None) -> dict[str, Any]:
    """The methods (default: every method of the full grid) on the ``finetune`` cell (zoo reused from the grid
    section), then fingerprint seconds per owner and verify seconds per pair from the records, with each AUC."""
    from fpbench.metrics import auc
    from fpbench.records import load_all

    methods = methods or ",".join(full_grid("method"))
    seconds = timed([PY, "-m", "fpbench.run", "-m", f"method={methods}", "transform=finetune", f"zoo={zoo}",
                     f"runs_dir={runs}", "progress=false"])
    df = load_all(runs, zoo)
    ok = df[(df["status"] == "ok") & (df["role"] == "pair") & (df["transform"] == "finetune")]
    ok = ok[ok["method"].isin(methods.split(","))]
    if ok.empty:
        return {"error": f"no finetune records under {runs}"}
    rows = []
    for method, g in ok.groupby("method"):
        rows.append({"method": method,
                     "fingerprint_seconds_per_owner": float(g.drop_duplicates("owner")["fingerprint_seconds"].mean()),
                     "verify_seconds_per_pair": float(g["verify_seconds"].mean()),
                     "queries_per_pair": float(g["queries"].mean()),
                     "finetune_auc": float(auc(g["label"].to_numpy(), g["score"].to_numpy())),
                     "pairs": len(g)})
    return {"table": rows, "sweep_seconds": seconds}


def bench_scaling(zoo: str, runs: Path) -> dict[str, Any]:
    """Add a method to an already built zoo: it must build nothing and cost ~ pairs x verify time."""
    from fpbench.zoo.store import ArtefactStore

    store = ArtefactStore(runs / "cache" / "zoo")
    before = sum(1 for _ in store.root.glob("*/*/meta.json"))
    seconds = timed([PY, "-m", "fpbench.run", "-m", "experiment=grid", f"zoo={zoo}", f"runs_dir={runs}",
                     "method=agreement", "progress=false"])
    after = sum(1 for _ in store.root.glob("*/*/meta.json"))
    return {"extra_method": "agreement", "seconds": seconds, "artefacts_before": before, "artefacts_after": after,
            "builds_for_extra_method": after - before}


def bench_transfer(zoo: str, runs: Path) -> dict[str, Any]:
    """``make transfer`` cold in a fresh runs dir (the vision base, a root of the tiny zoo, is trained too), both
    tracks; the per-way means of the transfer table it wrote."""
    import pandas as pd

    shutil.rmtree(runs, ignore_errors=True)
    seconds = timed([PY, "-m", "fpbench.transfer", f"runs_dir={runs}"])
    table = pd.read_csv(runs / "tables" / "transfer.csv")
    cols = ["track", "way", "models", "fsr", "quality_delta", "fsr_finetune", "fsr_prune", "fsr_quantize", "fsr_merge",
            "cost_seconds"]
    return {"seconds": seconds, "table": table[cols].to_dict(orient="records")}


VERIFY_METHODS = "cmf,sac,weightcos"
VERIFY_TRANSFORMS = ["finetune", "prune30", "quant8", "permute"]


def bench_verify(zoo: str, runs: Path) -> dict[str, Any]:
    """``verify`` on 20 suspect files (the ci zoo's 4 roots and 16 children, exported) with three methods: one
    process for the whole folder vs one process per suspect; both after a first call that fills the caches."""
    shutil.rmtree(runs, ignore_errors=True)
    models, suspects = runs / "models", runs / "models" / "suspects"
    suspects.mkdir(parents=True)
    ids = ["resnet-s0", "resnet-s1", "effnet-s0", "effnet-s1"]
    ids += [f"{r}/{t}" for r in ids for t in VERIFY_TRANSFORMS]
    for mid in ids:
        timed([PY, "-m", "fpbench.verify", "export", "zoo=ci", f"model={mid}", f"runs_dir={runs}",
               f"out={suspects / (mid.replace('/', '_') + '.safetensors')}"])
    timed([PY, "-m", "fpbench.verify", "export", "zoo=ci", "model=resnet-s0", f"runs_dir={runs}",
           f"out={models / 'owner.safetensors'}"])
    base = [PY, "-m", "fpbench.verify", f"method={VERIFY_METHODS}", f"owner={models / 'owner.safetensors'}",
            "zoo=ci", f"runs_dir={runs}", "progress=false"]
    files = sorted(suspects.glob("*.safetensors"))
    timed([*base, f"suspect={suspects}"])  # fingerprints and the zoo's data cached, as for a user's second call
    one = timed([*base, f"suspect={suspects}"])
    separate = sum(timed([*base, f"suspect={f}"]) for f in files)
    pairs = len(files) * len(VERIFY_METHODS.split(","))
    return {"suspects": len(files), "methods": VERIFY_METHODS, "pairs": pairs, "one_process_seconds": one,
            "separate_calls_seconds": separate, "one_process_per_pair": one / pairs,
            "separate_calls_per_pair": separate / pairs}


def bench_llm(zoo: str, runs: Path) -> dict[str, Any]:
    """The language grid (issue 18's bars): the llm_ci cell the test suite runs, cold; then ``zoo=llm_tiny``
    ``experiment=llm`` cold and warm -- zoo stage, method sweep and tables, as ``make run`` does it."""
    shutil.rmtree(runs, ignore_errors=True)
    ci = timed([PY, "-m", "fpbench.run", "zoo=llm_ci", "method=reef", "transform=lora", f"runs_dir={runs}/ci",
                "progress=false"])
    tiny = runs / "llm_tiny"
    cold, warm = time_grid("llm_tiny", tiny, "llm"), time_grid("llm_tiny", tiny, "llm")
    return {"ci_cell_seconds": ci, "cold_seconds": cold, "warm_seconds": warm, "cold_total": sum(cold.values()),
            "warm_total": sum(warm.values())}


SECTIONS = {"grid": bench_grid, "warm": bench_warm, "zoo": bench_zoo, "methods": bench_methods, "scaling": bench_scaling,
            "transfer": bench_transfer, "verify": bench_verify, "llm": bench_llm,
            "llm_warm": bench_llm_warm}


def load_line(entry: dict[str, Any]) -> str:
    """The section's load average: sampled mean and max when recorded (older entries: start and end only)."""
    if "load_mean" in entry:
        return (f"1-min load average sampled every 10 s: mean {entry['load_mean']:.1f}, max {entry['load_max']:.1f}"
                f" (the section's own work is ~1-2)")
    return f"load {entry['load_before']:.1f} -> {entry['load_after']:.1f} (start and end only)"


def earlier_sections(text: str, measured: set[str]) -> list[str]:
    """The ``## <section>`` blocks of an existing BENCHMARKS.md whose measurements are not in the store (measured
    before the store was kept beside it): carried over verbatim rather than lost."""
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line.split()[1]
            blocks[current] = []
        if current is not None:
            blocks[current].append(line)
    return [line for name, block in blocks.items() if name in SECTIONS and name not in measured for line in block]


def warm_again(results: dict[str, Any], section: str, cold_total: float) -> list[str]:
    """The line of a warm rerun measured on its own (``--sections <section>``), under the section it reruns."""
    again = results.get(section, {})
    if "warm_total" not in again.get("result", {}):
        return []
    w = again["result"]
    return [f"Warm run measured again ({again['when']}, `--sections {section}`, {load_line(again)}): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in w["warm_seconds"].items())
            + f"; total **{w['warm_total']:.1f} s = {100 * w['warm_total'] / cold_total:.1f}%** of the cold run above.",
            ""]


def render(results: dict[str, Any], earlier: str = "") -> str:
    lines = ["# Benchmarks", "", "Written by `make bench` (scripts/bench.py); every number below was measured by it.",
             "The load average during each section is shown: above ~2.5 on this 2-core machine means other work was",
             "running and the times are upper bounds.", ""]
    for name, entry in results.items():
        if name in ("warm", "llm_warm"):
            continue  # shown under the grid and llm sections
        m, r = entry["machine"], entry["result"]
        lines += [f"## {name} (zoo `{entry['zoo']}`, measured {entry['when']})", "",
                  f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, CUDA {m['cuda']}, torch {m['torch']}, "
                  f"Python {m['python']}; {load_line(entry)}.", ""]
        if name == "grid":
            lines += ["| stage | cold s | warm s |", "|---|---|---|"]
            lines += [f"| {k} | {r['cold_seconds'][k]:.1f} | {r['warm_seconds'][k]:.1f} |" for k in r["cold_seconds"]]
            lines += [f"| **total** | **{r['cold_total']:.1f}** | **{r['warm_total']:.1f}** |", "",
                      f"Warm / cold: {100 * r['warm_over_cold']:.1f}% (bar: under 5%). "
                      f"Peak resident memory of a child process: {r['peak_rss_mib']:.0f} MiB.", ""]
            lines += warm_again(results, "warm", r["cold_total"])
        elif name == "zoo":
            grid = set(full_grid("transform")) | {"roots"}
            grid_s = sum(v for k, v in r["per_transform_seconds"].items() if k in grid)
            lines += [f"Whole zoo, every transform config, cold, one process: **{r['total_seconds'] / 60:.1f} min** "
                      f"({r['artefacts_built']} artefacts). Of that, the roots and the {len(grid) - 1} transforms of the "
                      f"LeafBench grid (`experiment=full`) took **{grid_s / 60:.1f} min** (sum of their rows; bar: under "
                      "30 min) and the attack-study transforms (`cmf_embed*`, `cmf_remove*`, `partial_reinit*`, "
                      f"`quant4_fp4`, `quant4_own`) the other {(r['total_seconds'] - grid_s) / 60:.1f} min. A chain's "
                      "first step is the `finetune` child, so `finetune` shows 0 s after `chain` built it.", "",
                      "| step | seconds |", "|---|---|"]
            lines += [f"| {k} | {v:.1f} |" for k, v in r["per_transform_seconds"].items()]
            if r["not_applicable"]:
                lines += ["", "Not applicable: " + "; ".join(f"{k}: {v}" for k, v in r["not_applicable"].items())]
            lines.append("")
        elif name == "methods" and "table" in r:
            lines += ["Every method of `experiment=full` on the `finetune` cell (one fingerprint per owner, cached):", "",
                      "| method | fingerprint s / owner | verify s / pair | queries / pair | finetune AUC | pairs |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {t['method']} | {t['fingerprint_seconds_per_owner']:.2f} | {t['verify_seconds_per_pair']:.5f}"
                      f" | {t['queries_per_pair']:.0f} | {t['finetune_auc']:.3f} | {t['pairs']} |" for t in r["table"]]
            missing = [m for m in full_grid("method") if m not in {t["method"] for t in r["table"]}]
            if missing:
                lines += ["", f"Not in this run (`--methods`): {', '.join(missing)}."]
            lines += ["", f"The paper reports {PAPER['cmf_verify_seconds']} s per verification for CMF and "
                      f"{PAPER['ipguard_fingerprint_seconds']} s for IPGuard's fingerprint generation.", ""]
        elif name == "transfer":
            lines += [f"`make transfer` (both tracks, 3 downstream models each), cold in a fresh runs dir: "
                      f"**{r['seconds'] / 60:.1f} min** (bar: under 30 min). Means over the downstream models:", "",
                      "| track | way | models | FSR | quality change | FSR after finetune / prune / quantize / merge "
                      "| seconds per fingerprinted model |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {t['track']} | {t['way']} | {t['models']} | {t['fsr']:.2f} | {t['quality_delta']:+.3f} | "
                      f"{t['fsr_finetune']:.2f} / {t['fsr_prune']:.2f} / {t['fsr_quantize']:.2f} / {t['fsr_merge']:.2f}"
                      f" | {t['cost_seconds']:.1f} |" for t in r["table"]]
            lines += ["", "Quality: accuracy (vision) or perplexity (language) minus the downstream model's own.", ""]
        elif name == "verify":
            lines += [f"`fpbench.verify` with {r['methods']} on one owner and a folder of {r['suspects']} suspects "
                      f"({r['pairs']} pairs, ci zoo models exported as files): one process **{r['one_process_seconds']:.1f}"
                      f" s ({r['one_process_per_pair']:.2f} s per pair)**; twenty separate calls, one suspect each, "
                      f"{r['separate_calls_seconds']:.1f} s ({r['separate_calls_per_pair']:.2f} s per pair). Both after "
                      "one call that filled the fingerprint cache.", ""]
        elif name == "llm":
            lines += [f"`python -m fpbench.run zoo=llm_ci method=reef transform=lora`, cold: **{r['ci_cell_seconds']:.0f} s**"
                      " (bar: under 2 min). `zoo=llm_tiny experiment=llm` (every language method x every derivation):",
                      "", "| stage | cold s | warm s |", "|---|---|---|"]
            lines += [f"| {k} | {r['cold_seconds'][k]:.1f} | {r['warm_seconds'][k]:.1f} |" for k in r["cold_seconds"]]
            lines += [f"| **total** | **{r['cold_total']:.1f}** | **{r['warm_total']:.1f}** |", "",
                      "Bars: the zoo stage under 60 min cold on 2 cores; the warm rerun under 2 min.", ""]
            lines += warm_again(results, "llm_warm", r["cold_total"])
        elif name == "scaling":
            lines += [f"Adding method `{r['extra_method']}` to the built grid took {r['seconds']:.1f} s and built "
                      f"{r['builds_for_extra_method']} artefacts ({r['artefacts_before']} -> {r['artefacts_after']}):"
                      " the cost grows as builds + methods x pairs, never builds x methods.", ""]
        else:
            lines += ["```", json.dumps(r, indent=1), "```", ""]
    return "\n".join(lines + earlier_sections(earlier, set(results))) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="tiny")
    ap.add_argument("--sections", default="grid,methods,scaling,zoo")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--methods", default=None, help="methods section: comma-separated (default: experiment=full's)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the file from the stored measurements")
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    store = out.with_suffix(".json")  # the measurements, kept (and committed) beside the page they render
    results: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    earlier = out.read_text() if out.exists() else ""
    if args.render_only:
        out.write_text(render(results, earlier))
        return
    for name in args.sections.split(","):
        if name not in SECTIONS:
            raise SystemExit(f"bench: unknown section '{name}'; valid: {', '.join(SECTIONS)}")
        target = runs.parent / f"{runs.name}-zoo" if name == "zoo" else runs
        print(f"bench: {name} ...", flush=True)
        with LoadSampler() as load:
            extra = {"methods": args.methods} if name == "methods" and args.methods else {}
            result = SECTIONS[name](args.zoo, target, **extra)
        results[name] = {"zoo": args.zoo, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "machine": machine(), "load_before": load.samples[0], "load_after": load.samples[-1],
                         **load.summary(), "result": result}
        store.write_text(json.dumps(results, indent=1, default=str))
        out.write_text(render(results, earlier))
        print(f"bench: {name} done; {args.out} updated", flush=True)


if __name__ == "__main__":
    main()
