"""The full sensitivity runs of the disease presets' primary endpoints: `mscsim sensitivity` as a user runs it, timed.

Run:  python benchmarks/bench_sensitivity.py [--runs knee gvhd fistula] [--workers 2] [--samples 256] [--keep DIR]
      [--work DIR]
      python benchmarks/bench_sensitivity.py --summarise benchmarks/results/sensitivity-<date>   (the README's table)

Each run is Morris screening over every uncertain parameter (10 trajectories) and then Sobol first-order and total
indices of the top 10 with the rest as one group, through the command line in a child process. Prints the wall
time, the evaluations and the top of each ranking with the machine; the rankings the README's literature pass uses
are copied to ``--keep`` (default: benchmarks/results/sensitivity-<date>/). Each run works in ``--work``/<run>
(default: <temp>/mscsim-bench-sensitivity), kept when a run stops so that running the same command again resumes
from its finished chunks (the time then recorded is the resumed run's), removed when it finishes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mscsim.analysis.validation import EXAMPLES

# (name, preset, output): the primary endpoint of each disease preset, as the model's absolute value and as the
# treatment effect (treated minus untreated, same patient); the GVHD organ stage and the fistula's remission are
# thresholds on a tissue state (the injured share of the lesion; the tract's unhealed share), so the state is
# analysed, a smooth output whose threshold crossing is the endpoint
RUNS = {
    "knee": ("knee_oa_ia_5e7", "pain_vas_day180"),
    "knee_effect": ("knee_oa_ia_5e7", "pain_vas_effect_day180"),
    "gvhd": ("acute_gvhd_iv_2e6_per_kg", "damage_day28"),
    "gvhd_effect": ("acute_gvhd_iv_2e6_per_kg", "damage_effect_day28"),
    "fistula": ("perianal_fistula_120e6", "structure_day168"),
    "fistula_effect": ("perianal_fistula_120e6", "structure_effect_day168"),
    "disc": ("lumbar_disc_intradiscal_25e6", "pain_vas_day180"),
    "disc_effect": ("lumbar_disc_intradiscal_25e6", "pain_vas_effect_day180"),
    "tendon": ("tendinopathy_intratendinous_1e7", "pain_vas_day182"),
    "tendon_effect": ("tendinopathy_intratendinous_1e7", "pain_vas_effect_day182"),
    "wound": ("dfu_topical_sheet_weekly", "area_reduction_pct_day56"),
    "wound_effect": ("dfu_topical_sheet_weekly", "area_reduction_pct_effect_day56"),
    "lupus": ("lupus_nephritis_iv_ucmsc_2e8", "proteinuria_day168"),
    "lupus_effect": ("lupus_nephritis_iv_ucmsc_2e8", "proteinuria_effect_day28"),
}
# the presets run only as far as the output's visit (the GVHD preset runs 100 days, the fistula and lupus a year);
# the lupus effect is read at day 28, its peak: by day 168 the single infusion's effect has gone
DURATION_DAYS = {"acute_gvhd_iv_2e6_per_kg": 35, "perianal_fistula_120e6": 175, "tendinopathy_intratendinous_1e7": 189,
                 "dfu_topical_sheet_weekly": 84, "lupus_nephritis_iv_ucmsc_2e8": 175}


def summarise(folder: Path) -> str:
    """The README's table from kept runs: wall time, evaluations, convergence and the influential parameters."""
    rows = ["| run | output (nominal) | parameters | evaluations | wall time, 2 workers | Sobol convergence (max change "
            "of ST, half vs full) | influential (ST > 0.05), by total index |", "|---|---|---:|---:|---:|---|---|"]
    for run in sorted(p for p in folder.iterdir() if (p / "manifest.json").exists()):
        m = json.loads((run / "manifest.json").read_text())
        t = pd.read_csv(run / "sensitivity.csv")
        t = t[t["influential"].fillna(False).astype(bool) & (t["parameter"] != "other parameters")]
        t = t.sort_values("ST", ascending=False)
        infl = ", ".join(f"`{r.parameter}` {r.ST:.2f}" for r in t.itertuples())
        others = pd.read_csv(run / "sensitivity.csv").set_index("parameter")["ST"].get("other parameters")
        c = m["convergence"].get("sobol", {})
        units = m.get("output_units") or ""
        rows.append(f"| {run.name} | `{m['output']}` ({m['nominal_output']:.3g}{' ' + units if units not in ('', '1') else ''}) "
                    f"| {m['uncertain_parameters']} | {m['evaluations']:,} | {m['wall_time_s'] / 60:.0f} min "
                    f"| {c.get('max_abs_change_ST', float('nan')):.3f} ({'stable' if c.get('stable') else 'not stable'}) "
                    f"| {infl}; the other parameters together {others:.2f} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=["knee"], choices=sorted(RUNS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--trajectories", type=int, default=10)
    ap.add_argument("--keep", default=None)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mscsim-bench-sensitivity"))
    ap.add_argument("--summarise", default=None, help="print the README's table of the runs kept in this folder")
    args = ap.parse_args()
    if args.summarise:
        print(summarise(Path(args.summarise)))
        return 0
    keep = Path(args.keep or Path(__file__).parent / "results" / f"sensitivity-{datetime.date.today()}")
    keep.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, Python "
          f"{platform.python_version()}, NumPy {np.__version__}")
    for name in args.runs:
        preset, output = RUNS[name]
        tmp = Path(args.work) / name
        tmp.mkdir(parents=True, exist_ok=True)
        out = tmp / name
        if out.exists():  # a finished run left behind by a stop after it: measure afresh
            shutil.rmtree(out)
        scenario = preset
        if preset in DURATION_DAYS:
            data = yaml.safe_load((EXAMPLES / f"{preset}.yaml").read_text())
            data["duration_days"] = DURATION_DAYS[preset]
            scenario = str(tmp / f"{preset}.yaml")
            Path(scenario).write_text(yaml.safe_dump(data, sort_keys=False))
        cmd = [sys.executable, "-m", "mscsim.cli", "sensitivity", scenario, "--output", output, "--out", str(out),
               "--samples", str(args.samples), "--trajectories", str(args.trajectories),
               "--workers", str(args.workers)]
        resumed = (tmp / f"{name}.chunks").exists()
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            print(f"{name} stopped; its finished chunks are kept in {tmp}: run the same command to resume",
                  file=sys.stderr)
            return proc.returncode
        m = json.loads((out / "manifest.json").read_text())
        table = pd.read_csv(out / "sensitivity.csv")
        print(f"\n{name}: {preset} --output {output}: {wall:.0f} s wall{' (resumed)' if resumed else ''}, "
              f"{m['evaluations']} evaluations ({m['failed_evaluations']} failed), {m['uncertain_parameters']} "
              f"parameters, {args.workers} workers; convergence {json.dumps(m['convergence'])}")
        print(table.head(12)[["parameter", "grade", "mu_star", "ST", "ST_low", "ST_high", "S1"]].to_string())
        dest = keep / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for f in ("sensitivity.csv", "convergence.csv", "sensitivity.png"):  # not evaluations.npz (megabytes)
            shutil.copy2(out / f, dest / f)
        m["wall_time_s_with_startup"] = round(wall, 1)
        m["resumed"] = resumed
        (dest / "manifest.json").write_text(json.dumps(m, indent=2))
        shutil.rmtree(tmp)
    print(f"\nrankings kept in {keep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
