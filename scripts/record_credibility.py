"""Record what the credibility pages (mscsim credibility DISEASE) read: the sensitivity rankings of each disease
preset's primary outputs and the bundled trials beside their published results.

Run:  python scripts/record_credibility.py --sensitivity benchmarks/results/sensitivity-<date> [--trials] [--workers 2]
      python scripts/record_credibility.py --trials --designs tendinopathy_lee_2015   # some designs only
      python scripts/record_credibility.py --grades [--before 7048311]

--sensitivity copies each run folder's sensitivity.csv and manifest.json (from benchmarks/bench_sensitivity.py) to
src/mscsim/data/credibility/sensitivity/<disease>/<run>.csv/.json; --trials runs every bundled design and writes
their published-vs-simulated rows to src/mscsim/data/credibility/trials.csv (with the version and date in trials.json);
--grades prints the README's literature-pass table: per disease, the share of `assumed` parameters among all the
parameters the preset's run uses and among the influential ones (total Sobol index > 0.05 on a recorded primary
output), now and, with --before REV, as the data files stood at git revision REV (the same parameters and the same
influential set, graded as they were then).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from mscsim import __version__
from mscsim.analysis.credibility import CREDIBILITY_DIR, DISEASES, bundled_sensitivity, disease_context, grade_mix, \
    influential
from mscsim.analysis.validation import EXAMPLES
from mscsim.io.scenario import load_scenario
from mscsim.simulation import parameter_files
from mscsim.trials import bundled_designs, load_design, run_trial

DISEASE_OF_RUN = {"knee": "knee_osteoarthritis", "gvhd": "acute_gvhd", "fistula": "perianal_fistula",
                  "disc": "lumbar_disc_degeneration", "tendon": "tendinopathy", "wound": "diabetic_foot_ulcer",
                  "lupus": "lupus_nephritis"}


def grades_at(rev: str, disease: str) -> dict[str, str]:
    """Each parameter's evidence grade in the data files the disease preset reads, as they stood at git ``rev``
    (later files override earlier ones, as when a run loads them; the endpoint file's coefficients last)."""
    root = Path(__file__).resolve().parents[1]
    files = [f"src/mscsim/data/parameters/{f}.yaml"
             for f in parameter_files(load_scenario(EXAMPLES / f"{disease_context(disease).preset}.yaml"))]
    files.append(f"src/mscsim/data/endpoints/{disease}.yaml")
    out: dict[str, str] = {}
    for f in files:
        text = subprocess.run(["git", "show", f"{rev}:{f}"], cwd=root, capture_output=True, text=True, check=True).stdout
        for name, rec in ((yaml.safe_load(text) or {}).get("parameters") or {}).items():
            out[name] = rec.get("grade", "")
    return out


def grade_table(before: str | None) -> str:
    """The README's table: share assumed, overall and among the influential parameters (now, and at ``before``)."""
    rows = ["| disease | parameters the preset uses | assumed, all | influential (ST > 0.05) | assumed among "
            "influential | of which with a stated reason |", "|---|---:|---:|---:|---:|---:|"]
    for disease in sorted(DISEASES):
        params, _ = grade_mix(disease)
        infl = influential(bundled_sensitivity(disease))
        now_all = (params["grade"] == "assumed")
        sub = params[params["parameter"].isin(infl)]
        now_infl = sub["grade"] == "assumed"
        reasons = int((now_infl & (sub["why_no_source"] != "")).sum())

        def share(k, n):
            return f"{k}/{n} ({k / n:.0%})" if n else "-"

        cell_all, cell_infl = share(int(now_all.sum()), len(params)), share(int(now_infl.sum()), len(sub))
        if before:
            old = grades_at(before, disease)
            old_all = params["parameter"].map(old).eq("assumed")
            old_infl = sub["parameter"].map(old).eq("assumed")
            cell_all = f"{share(int(old_all.sum()), len(params))} -> {cell_all}"
            cell_infl = f"{share(int(old_infl.sum()), len(sub))} -> {cell_infl}"
        rows.append(f"| {disease} | {len(params)} | {cell_all} | {len(sub)} | {cell_infl} | {reasons} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensitivity", default=None, help="a benchmarks/results/sensitivity-<date> folder")
    ap.add_argument("--trials", action="store_true", help="run the bundled designs and record their comparison")
    ap.add_argument("--designs", nargs="+", default=None, help="with --trials: only these designs, replacing their "
                    "rows and keeping the others'")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--grades", action="store_true", help="print the README's table of assumed shares")
    ap.add_argument("--before", default=None, help="with --grades: a git revision to compare with (e.g. 7048311)")
    args = ap.parse_args()
    if args.sensitivity:
        for run in sorted(Path(args.sensitivity).iterdir()):
            if not (run / "sensitivity.csv").exists():
                continue
            disease = DISEASE_OF_RUN[run.name.split("_")[0]]
            dest = CREDIBILITY_DIR / "sensitivity" / disease
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / "sensitivity.csv", dest / f"{run.name}.csv")
            m = json.loads((run / "manifest.json").read_text())
            m.pop("target", None)  # the whole scenario: not needed for the page
            (dest / f"{run.name}.json").write_text(json.dumps(m, indent=2))
            print(f"recorded {run.name} -> {dest}")
    if args.trials:
        frames = []
        names = args.designs or bundled_designs()
        if args.designs and (CREDIBILITY_DIR / "trials.csv").exists():  # the other designs' rows are kept
            kept = pd.read_csv(CREDIBILITY_DIR / "trials.csv")
            frames.append(kept[~kept["design"].isin(names)])
        for name in names:
            design, _ = load_design(name)
            with tempfile.TemporaryDirectory() as tmp:
                result = run_trial(design, Path(tmp) / name, workers=args.workers)
                frames.append(result.analysis.published.assign(design=name))
            print(f"ran {name}", file=sys.stderr)
        CREDIBILITY_DIR.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_csv(CREDIBILITY_DIR / "trials.csv", index=False)
        record = {"mscsim_version": __version__, "date": str(datetime.date.today()), "designs": bundled_designs()}
        if args.designs and (CREDIBILITY_DIR / "trials.json").exists():  # the full run's date stays; say what was rerun
            record = json.loads((CREDIBILITY_DIR / "trials.json").read_text())
            record.setdefault("reruns", []).append({"mscsim_version": __version__,
                                                    "date": str(datetime.date.today()), "designs": names})
        (CREDIBILITY_DIR / "trials.json").write_text(json.dumps(record, indent=2))
    if args.grades:
        print(grade_table(args.before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
