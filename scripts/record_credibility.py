"""Record what the credibility pages (mscsim credibility DISEASE) read: the sensitivity rankings of each disease
preset's primary outputs and the bundled trials beside their published results.

Run:  python scripts/record_credibility.py --sensitivity benchmarks/results/sensitivity-<date> [--trials] [--workers 2]

--sensitivity copies each run folder's sensitivity.csv and manifest.json (from benchmarks/bench_sensitivity.py) to
src/mscsim/data/credibility/sensitivity/<disease>/<run>.csv/.json; --trials runs every bundled design and writes
their published-vs-simulated rows to src/mscsim/data/credibility/trials.csv (with the version and date in trials.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from mscsim import __version__
from mscsim.analysis.credibility import CREDIBILITY_DIR
from mscsim.trials import bundled_designs, load_design, run_trial

DISEASE_OF_RUN = {"knee": "knee_osteoarthritis", "gvhd": "acute_gvhd", "fistula": "perianal_fistula"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensitivity", default=None, help="a benchmarks/results/sensitivity-<date> folder")
    ap.add_argument("--trials", action="store_true", help="run the bundled designs and record their comparison")
    ap.add_argument("--workers", type=int, default=2)
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
        for name in bundled_designs():
            design, _ = load_design(name)
            with tempfile.TemporaryDirectory() as tmp:
                result = run_trial(design, Path(tmp) / name, workers=args.workers)
                frames.append(result.analysis.published.assign(design=name))
            print(f"ran {name}", file=sys.stderr)
        CREDIBILITY_DIR.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_csv(CREDIBILITY_DIR / "trials.csv", index=False)
        (CREDIBILITY_DIR / "trials.json").write_text(json.dumps(
            {"mscsim_version": __version__, "date": str(datetime.date.today()), "designs": bundled_designs()},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
