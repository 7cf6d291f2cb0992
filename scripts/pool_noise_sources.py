"""Why does a calibration's posterior move with its pool? Splits the shift between two finished runs (calibration
issue, item 6; the runs of ``scripts/pool_stability.py``) into its sources.

    python scripts/pool_noise_sources.py SMALL_RUN LARGE_RUN [--steps 16000] [--out FILE.csv]

Per parameter, in the larger run's posterior SD:

- ``shift``: the two runs' posterior means apart (what pool_stability.py reports);
- ``sampler_sd``: the SD of that difference the samplers alone would give, sqrt(sd_a^2/ess_a + sd_b^2/ess_b)
  from each run's own bulk ESS (parameters.csv): emcee's Monte Carlo error;
- ``first_wave_shift``: the shift when both runs are sampled again on their first-wave training points only (the
  same points, the same seed: only the pool, and so each point's Monte Carlo noise, differs), emulators refitted
  and emcee rerun here (about 10 minutes a run, the two side by side on two cores).

A shift many ``sampler_sd`` wide that stays (or grows) with the first wave alone comes from the training outputs'
noise, not from the sampler or the second wave's choice of points.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd


def first_wave_posterior(run: str, steps: int) -> dict[str, tuple[float, float]]:
    """Posterior mean and SD per parameter of ``run`` refitted and sampled on its first-wave points only."""
    from threadpoolctl import threadpool_limits

    from mscsim.calibration.emulator import fit_emulator
    from mscsim.calibration.inference import thinned
    from mscsim.calibration.problem import build_problem, with_spreads
    from mscsim.calibration.run import POSTERIOR_DRAWS, Settings, Training, _split, sample_posterior

    m = json.loads((Path(run) / "manifest.json").read_text())
    s = m["settings"]
    settings = Settings(points=s["points"], walkers=s["walkers"], steps=steps, burn=steps // 4, seed=s["seed"],
                        refine=0, heterogeneity=s.get("heterogeneity", False))
    problem = build_problem(m["disease"], parameters=list(m["parameters"]), pool=m["pool_per_arm"],
                            exclude=tuple(m.get("excluded_designs") or ()))
    if list(problem.names) != list(m["parameters"]):  # the training points' columns must mean the same parameters
        raise SystemExit(f"{run}: calibrated {m['parameters']}, rebuilt {list(problem.names)}")
    with np.load(Path(run) / "training.npz") as z:
        n = settings.points
        training = Training(z["unit"][:n], z["predictions"][:n], z["sds"][:n])
    problem = with_spreads(problem, training.sds)
    with threadpool_limits(1):
        emulator = fit_emulator(training.unit, training.predictions, settings.seed)
    sample = sample_posterior(problem, emulator, training, settings)
    unit, _ = _split(problem, thinned(sample, POSTERIOR_DRAWS, settings.seed))
    values = problem.values(unit)
    return {name: (float(values[:, i].mean()), float(values[:, i].std())) for i, name in enumerate(problem.names)}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("small", help="the smaller pool's calibration folder (with training.npz)")
    ap.add_argument("large", help="the larger pool's calibration folder")
    ap.add_argument("--steps", type=int, default=16000, help="emcee steps per walker for the first-wave refits")
    ap.add_argument("--out", type=Path, help="write the table here (CSV)")
    args = ap.parse_args(argv)
    a, b = (pd.read_csv(Path(r) / "parameters.csv").set_index("parameter") for r in (args.small, args.large))
    with ProcessPoolExecutor(2) as pool:
        fa, fb = pool.map(first_wave_posterior, [args.small, args.large], [args.steps] * 2)
    rows = []
    for name in a.index.intersection(b.index):
        sd = b.loc[name, "posterior_sd"]
        row = {"parameter": name,
               "shift": abs(b.loc[name, "posterior_mean"] - a.loc[name, "posterior_mean"]) / sd,
               "sampler_sd": np.sqrt(a.loc[name, "posterior_sd"] ** 2 / a.loc[name, "ess_bulk"]
                                     + sd ** 2 / b.loc[name, "ess_bulk"]) / sd}
        if name in fa and name in fb:
            row["first_wave_shift"] = abs(fb[name][0] - fa[name][0]) / fb[name][1]
        rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
