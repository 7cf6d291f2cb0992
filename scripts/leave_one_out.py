"""Leave-one-trial-out predictive validation of every disease with bundled published trial numbers.

    python scripts/leave_one_out.py                    # every disease; writes the record and prints the README table
    python scripts/leave_one_out.py knee_osteoarthritis acute_gvhd

For each disease this runs ``mscsim calibrate DISEASE --loo`` (the command's defaults) into
``out/calibration/<disease>`` (``--collect`` only gathers finished ones, e.g. after running diseases in two
processes); for each of the disease's trials, the posterior calibrated without that trial
predicts its published numbers (a disease with one trial predicts it from the prior). The rows are collected in
src/mscsim/data/credibility/leave_one_out.csv and printed as the README's markdown table: published value,
prediction with its 95 % posterior predictive interval, inside or not. ``--bundle`` also copies each disease's
posterior (calibrated on every trial) to src/mscsim/data/posteriors/, where ``simulate`` and ``trial`` bands find it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from mscsim.calibration.figures import STATISTIC
from mscsim.cli import main as cli
from mscsim.display import display

DISEASES = ["knee_osteoarthritis", "acute_gvhd", "perianal_fistula", "lumbar_disc_degeneration", "tendinopathy",
            "diabetic_foot_ulcer", "lupus_nephritis"]
RECORD = Path(__file__).resolve().parent.parent / "src" / "mscsim" / "data" / "credibility" / "leave_one_out.csv"
POSTERIORS = RECORD.parent.parent / "posteriors"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def markdown(table: pd.DataFrame) -> str:
    lines = ["| trial | arm | endpoint | statistic | day | published | predicted (95 % PI) | inside | predicted from |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        trial = r.get("trial_label") if isinstance(r.get("trial_label"), str) else r["design"]
        arm = r.get("arm_label") if isinstance(r.get("arm_label"), str) else r["arm"]
        basis = "prior (only trial)" if str(r["basis"]).startswith("prior") else "other trials"
        lines.append(f"| {trial} | {arm} | {display(r['endpoint']).label} | "
                     f"{STATISTIC.get(r['statistic'], r['statistic'])} | {r['visit_day']:g} | {_fmt(r['published'])} | "
                     f"{_fmt(r['posterior_median'])} ({_fmt(r['posterior_2.5%'])} to {_fmt(r['posterior_97.5%'])}) | "
                     f"{'yes' if r['inside_95'] else '**no**'} | {basis} |")
    return "\n".join(lines)


def interval_score(table: pd.DataFrame, alpha: float = 0.05) -> pd.Series:
    """The interval score of each 95 % predictive interval (Gneiting and Raftery 2007, J Am Stat Assoc 102:359,
    doi:10.1198/016214506000001437): its width plus 2/alpha times how far the published value lies outside it, in
    standard errors of the published number. Lower is better; it weighs a miss against a wide interval, which the
    share inside does not."""
    low, high, x = table["posterior_2.5%"], table["posterior_97.5%"], table["published"]
    score = (high - low) + (2 / alpha) * ((low - x).clip(lower=0) + (x - high).clip(lower=0))
    return score / table["se"]


def run(diseases: list[str], out: Path, reuse: bool) -> None:
    for disease in diseases:
        earlier = out / disease / "training.npz"
        extra = ["--reuse-training", str(earlier)] if reuse and earlier.exists() else []
        rc = cli(["calibrate", disease, "--out", str(out / disease), "--loo", *extra])
        if rc:
            sys.exit(rc)


def collect(out: Path) -> pd.DataFrame:
    """Every disease's leave-one-out rows from its calibration folder under ``out``; a disease not calibrated there
    keeps its rows of the existing record (so rerunning one disease does not drop the others)."""
    earlier = pd.read_csv(RECORD) if RECORD.exists() else pd.DataFrame(columns=["disease"])
    frames = []
    for disease in DISEASES:
        folder = out / disease
        if not (folder / "leave_one_out.csv").exists():
            kept = earlier[earlier["disease"] == disease]
            if not kept.empty:
                frames.append(kept)
            continue
        t = pd.read_csv(folder / "leave_one_out.csv")
        m = json.loads((folder / "manifest.json").read_text())
        t.insert(0, "disease", disease)
        t["calibration_seconds"] = m["seconds"]["total"]
        t["diagnostics_pass"] = m["diagnostics_pass"]
        frames.append(t)
    table = pd.concat(frames, ignore_index=True)
    table["interval_score_over_se"] = interval_score(table)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("diseases", nargs="*", default=DISEASES)
    ap.add_argument("--out", default="out/calibration", help="folder of the calibrations (default out/calibration)")
    ap.add_argument("--collect", action="store_true", help="only collect the calibrations already under --out")
    ap.add_argument("--reuse", action="store_true", help="reuse each disease's earlier training runs under --out "
                    "(its training.npz) instead of rerunning the model")
    ap.add_argument("--bundle", action="store_true", help="copy each disease's posterior.nc (calibrated on every "
                    "trial) to src/mscsim/data/posteriors/")
    args = ap.parse_args()
    if not args.collect:
        run(args.diseases, Path(args.out), args.reuse)
    if args.bundle:
        for disease in args.diseases:
            source = Path(args.out) / disease / "posterior.nc"
            if source.exists():
                shutil.copyfile(source, POSTERIORS / f"{disease}.nc")
                print(f"bundled {source} -> {POSTERIORS / f'{disease}.nc'}")
    table = collect(Path(args.out))
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RECORD, index=False)
    print(markdown(table))
    print(f"\n{table['inside_95'].mean():.0%} of {len(table)} published numbers inside their 95 % interval "
          f"predicted without their own trial (mean interval score {table['interval_score_over_se'].mean():.1f} "
          f"standard errors); record: {RECORD}")


if __name__ == "__main__":
    main()
