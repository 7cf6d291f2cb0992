"""Does a calibration's posterior move with the size of its virtual-patient pool? (calibration issue, item 6)

    python scripts/pool_stability.py knee_osteoarthritis              # pools of 200 and 400 patients per arm
    python scripts/pool_stability.py knee_osteoarthritis --pool 100   # 100 and 200
    python scripts/pool_stability.py knee_osteoarthritis --refine 128 # both with a second wave of 128 points
    python scripts/pool_stability.py knee_osteoarthritis --points 512 # both with a first wave of 512 points

Runs ``mscsim calibrate DISEASE --pool P`` and ``--pool 2P`` (the command's other defaults; ``--collect`` only reads
finished runs under ``--out``) and compares, per parameter, the posterior means of the two runs in units of the
larger pool's posterior SD. The fit is called stable when every shift is under 0.1 SD. The rows are written to
src/mscsim/data/credibility/pool_stability.csv (one block per disease, replacing that disease's earlier rows) and
printed as a markdown table. The fitted values themselves (each published number's posterior predictive median)
are compared the same way, in the larger pool's posterior predictive SD and in the published SE, into
pool_stability_predictions.csv beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from mscsim.cli import main as cli

RECORD = Path(__file__).resolve().parent.parent / "src" / "mscsim" / "data" / "credibility" / "pool_stability.csv"
PREDICTIONS = RECORD.with_name("pool_stability_predictions.csv")
STABLE = 0.1  # largest shift of a posterior mean, in posterior SDs, for the fit to count as stable
KEYS = ["design", "arm", "endpoint", "statistic", "visit_day"]


def shifts(small: Path, large: Path, refine: int = 0, points: int = 256) -> pd.DataFrame:
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
    out["first_wave_points"] = points
    out["heterogeneity"] = _heterogeneity(large)
    return out.reset_index()


def _heterogeneity(run: Path) -> bool:
    """Whether a calibration had between-trial random effects (runs before them record none: False)."""
    return bool(json.loads((run / "manifest.json").read_text())["settings"].get("heterogeneity", False))


def prediction_shifts(small: Path, large: Path, refine: int = 0, points: int = 256) -> pd.DataFrame:
    """Per published number, the fitted value itself: both runs' posterior predictive medians (what the calibrated
    model says the trial reported) and the shift between them in the larger pool's posterior predictive SD (the
    95 % interval's width / 3.92) and in the published number's own SE. Parameters the trials hardly constrain can
    wander along a ridge of equally good fits while the fitted trial numbers stay put; this says which happens."""
    a = pd.read_csv(small / "predictions.csv")
    b = pd.read_csv(large / "predictions.csv")
    both = a[KEYS + ["published", "se", "posterior_median"]].merge(
        b[KEYS + ["posterior_median", "posterior_2.5%", "posterior_97.5%"]], on=KEYS, suffixes=("_small", "_large"))
    out = both.rename(columns={"posterior_median_small": "median_small", "posterior_median_large": "median_large"})
    out["predictive_sd_large"] = (out["posterior_97.5%"] - out["posterior_2.5%"]) / 3.92
    shift = (out["median_large"] - out["median_small"]).abs()
    out["shift_in_sd"] = shift / out["predictive_sd_large"]
    out["shift_in_se"] = shift / out["se"]
    out["heterogeneity"] = _heterogeneity(large)
    out["stable"] = out["shift_in_sd"] < STABLE
    out["second_wave_points"] = refine
    out["first_wave_points"] = points
    return out.drop(columns=["posterior_2.5%", "posterior_97.5%"])


def record(table: pd.DataFrame, path: Path, disease: str, refine: int, points: int = 256) -> pd.DataFrame:
    """``table`` written into ``path`` as that disease's and method's block (first and second wave, between-trial
    heterogeneity), replacing its earlier rows."""
    table = table.copy()
    table.insert(0, "disease", disease)
    het = bool(table["heterogeneity"].iloc[0])
    if path.exists():
        earlier = pd.read_csv(path)
        if "second_wave_points" not in earlier:
            earlier["second_wave_points"] = 0
        if "heterogeneity" not in earlier:
            earlier["heterogeneity"] = False
        if "first_wave_points" not in earlier:  # rows from before --points: the default first wave
            earlier["first_wave_points"] = 256
        earlier["first_wave_points"] = earlier["first_wave_points"].fillna(256).astype(int)
        same = (earlier["disease"] == disease) & (earlier["second_wave_points"] == refine) & \
            (earlier["heterogeneity"] == het) & (earlier["first_wave_points"] == points)
        table = pd.concat([earlier[~same], table], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table[(table["disease"] == disease) & (table["second_wave_points"] == refine) &
                 (table["heterogeneity"] == het) & (table["first_wave_points"] == points)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("disease")
    ap.add_argument("--pool", type=int, default=200, help="the smaller pool (patients per arm; default 200)")
    ap.add_argument("--out", default="out/pool_stability", help="folder of the two calibrations")
    ap.add_argument("--collect", action="store_true", help="only compare the calibrations already under --out")
    ap.add_argument("--refine", type=int, default=128, help="both calibrations with a second wave of this many "
                    "training points (mscsim calibrate --refine; default 128, as the command's; 0: one wave)")
    ap.add_argument("--points", type=int, default=256, help="both calibrations' first wave of training points "
                    "(mscsim calibrate --points; default 256, as the command's)")
    args = ap.parse_args()
    tag = (f"_refine{args.refine}" if args.refine else "") + (f"_points{args.points}" if args.points != 256 else "")
    runs = [Path(args.out) / f"{args.disease}_pool{p}{tag}" for p in (args.pool, 2 * args.pool)]
    if not args.collect:
        for p, folder in zip((args.pool, 2 * args.pool), runs):
            rc = cli(["calibrate", args.disease, "--pool", str(p), "--refine", str(args.refine),
                      "--points", str(args.points), "--out", str(folder)])
            if rc:
                sys.exit(rc)
    mine = record(shifts(*runs, refine=args.refine, points=args.points), RECORD, args.disease, args.refine,
                  args.points)
    print("| parameter | posterior mean, pool {0} | pool {1} | posterior SD, pool {1} | shift / SD |".format(
        args.pool, 2 * args.pool))
    print("|---|---:|---:|---:|---:|")
    for _, r in mine.iterrows():
        print(f"| {r['parameter']} | {r['mean_small']:.4g} | {r['mean_large']:.4g} | {r['sd_large']:.3g} | "
              f"{r['shift_in_sd']:.2f} |")
    fitted = record(prediction_shifts(*runs, refine=args.refine, points=args.points), PREDICTIONS, args.disease,
                    args.refine, args.points)
    print("\n| design | arm | endpoint | day | published | fitted, pool {0} | pool {1} | shift / predictive SD | "
          "shift / SE |".format(args.pool, 2 * args.pool))
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for _, r in fitted.iterrows():
        print(f"| {r['design']} | {r['arm']} | {r['endpoint']} {r['statistic']} | {r['visit_day']:g} | "
              f"{r['published']:.4g} | {r['median_small']:.4g} | {r['median_large']:.4g} | {r['shift_in_sd']:.2f} | "
              f"{r['shift_in_se']:.2f} |")
    print(f"\nfitted trial numbers: largest shift {fitted['shift_in_sd'].max():.2f} posterior predictive SDs "
          f"({fitted['shift_in_se'].max():.2f} published SEs); record: {PREDICTIONS}")
    worst = mine["shift_in_sd"].max()
    print(f"\nlargest shift {worst:.2f} posterior SDs: {'stable' if worst < STABLE else 'NOT stable'} "
          f"(target < {STABLE}); record: {RECORD}")


if __name__ == "__main__":
    main()
