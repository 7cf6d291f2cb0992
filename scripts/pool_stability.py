"""Does a calibration's posterior move with the size of its virtual-patient pool? (calibration issue, item 6)

    python scripts/pool_stability.py knee_osteoarthritis              # pools of 200 and 400 patients per arm
    python scripts/pool_stability.py knee_osteoarthritis --pool 100   # 100 and 200
    python scripts/pool_stability.py knee_osteoarthritis --refine 128 # both with a second wave of 128 points

Runs ``mscsim calibrate DISEASE --pool P`` and ``--pool 2P`` (the command's other defaults; ``--collect`` only reads
finished runs under ``--out``) and compares, per parameter, the posterior means of the two runs in units of the
larger pool's posterior SD. The fit is called stable when every shift is under 0.1 SD. The rows are written to
src/mscsim/data/credibility/pool_stability.csv (one block per disease, replacing that disease's earlier rows) and
printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from mscsim.cli import main as cli

RECORD = Path(__file__).resolve().parent.parent / "src" / "mscsim" / "data" / "credibility" / "pool_stability.csv"
STABLE = 0.1  # largest shift of a posterior mean, in posterior SDs, for the fit to count as stable


def shifts(small: Path, large: Path, refine: int = 0) -> pd.DataFrame:
    """Per parameter: both runs' posterior means and SDs and the shift of the mean in the larger pool's SDs."""
    a = pd.read_csv(small / "parameters.csv").set_index("parameter")
    b = pd.read_csv(large / "parameters.csv").set_index("parameter")
    pools = [json.loads((d / "manifest.json").read_text())["pool_per_arm"] for d in (small, large)]
    out = pd.DataFrame({"pool_small": pools[0], "pool_large": pools[1],
                        "mean_small": a["posterior_mean"], "mean_large": b["posterior_mean"],
                        "sd_small": a["posterior_sd"], "sd_large": b["posterior_sd"]})
    out["shift_in_sd"] = (out["mean_large"] - out["mean_small"]).abs() / out["sd_large"]
    out["stable"] = out["shift_in_sd"] < STABLE
    out["second_wave_points"] = refine
    return out.reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("disease")
    ap.add_argument("--pool", type=int, default=200, help="the smaller pool (patients per arm; default 200)")
    ap.add_argument("--out", default="out/pool_stability", help="folder of the two calibrations")
    ap.add_argument("--collect", action="store_true", help="only compare the calibrations already under --out")
    ap.add_argument("--refine", type=int, default=128, help="both calibrations with a second wave of this many "
                    "training points (mscsim calibrate --refine; default 128, as the command's; 0: one wave)")
    args = ap.parse_args()
    tag = f"_refine{args.refine}" if args.refine else ""
    runs = [Path(args.out) / f"{args.disease}_pool{p}{tag}" for p in (args.pool, 2 * args.pool)]
    if not args.collect:
        for p, folder in zip((args.pool, 2 * args.pool), runs):
            rc = cli(["calibrate", args.disease, "--pool", str(p), "--refine", str(args.refine), "--out", str(folder)])
            if rc:
                sys.exit(rc)
    table = shifts(*runs, refine=args.refine)
    table.insert(0, "disease", args.disease)
    if RECORD.exists():  # one block per disease and method, replacing that block's earlier rows
        earlier = pd.read_csv(RECORD)
        if "second_wave_points" not in earlier:
            earlier["second_wave_points"] = 0
        same = (earlier["disease"] == args.disease) & (earlier["second_wave_points"] == args.refine)
        table = pd.concat([earlier[~same], table], ignore_index=True)
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RECORD, index=False)
    mine = table[(table["disease"] == args.disease) & (table["second_wave_points"] == args.refine)]
    print("| parameter | posterior mean, pool {0} | pool {1} | posterior SD, pool {1} | shift / SD |".format(
        args.pool, 2 * args.pool))
    print("|---|---:|---:|---:|---:|")
    for _, r in mine.iterrows():
        print(f"| {r['parameter']} | {r['mean_small']:.4g} | {r['mean_large']:.4g} | {r['sd_large']:.3g} | "
              f"{r['shift_in_sd']:.2f} |")
    worst = mine["shift_in_sd"].max()
    print(f"\nlargest shift {worst:.2f} posterior SDs: {'stable' if worst < STABLE else 'NOT stable'} "
          f"(target < {STABLE}); record: {RECORD}")


if __name__ == "__main__":
    main()
