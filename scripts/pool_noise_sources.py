"""Why does a calibration's posterior move with its pool? Splits the shift between two finished runs (calibration
issue, item 6; the runs of ``scripts/pool_stability.py``) into its sources.

    python scripts/pool_noise_sources.py SMALL_RUN LARGE_RUN [--steps 16000] [--out FILE.csv]
    python scripts/pool_noise_sources.py --common-patients knee_osteoarthritis [--pools 200 400] [--points 512]

Per parameter, in the larger run's posterior SD:

- ``shift``: the two runs' posterior means apart (what pool_stability.py reports);
- ``sampler_sd``: the SD of that difference the samplers alone would give, sqrt(sd_a^2/ess_a + sd_b^2/ess_b)
  from each run's own bulk ESS (parameters.csv): emcee's Monte Carlo error;
- ``first_wave_shift``: the shift when both runs are sampled again on their first-wave training points only (the
  same points, the same seed: only the pool, and so each point's Monte Carlo noise, differs), emulators refitted
  and emcee rerun here (about 10 minutes a run, the two side by side on two cores).

A shift many ``sampler_sd`` wide that stays (or grows) with the first wave alone comes from the training outputs'
noise, not from the sampler or the second wave's choice of points.

``--common-patients DISEASE`` tries the remedy for that noise: common random numbers. The first wave is run again
at each pool with the same virtual patients at every training point (``CalibrationProblem.simulate`` without
``pools``; the larger pool holds the smaller one's patients and as many more), so each point's Monte Carlo error is
shared by all points (smooth in the parameters) rather than independent jitter the emulators must fit; both are
sampled as above and compared (``common_patients_shift``). The training runs are kept in ``--keep`` (npz). It
first prints, per published number, how far the two pools' training outputs lie apart at the same points, in that
number's SE (``rms_difference_se``): the perturbation the fit sees when the pool doubles.

``--emulator-seeds A B`` and ``--sampler-seeds A B`` (with ``--common-patients``) sample one training set (the
first pool's) twice, the Gaussian processes' restarts or emcee seeded differently: the shift each alone makes.

Posterior means here are over every step after burn-in (as ``parameters.csv`` gives them since 2026-12-08), not the
2,000 thinned draws, whose means differ between sampler seeds by up to 0.08 posterior SD.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd


def first_wave_posterior(run: str, steps: int) -> dict[str, tuple[float, float]]:
    """Posterior mean and SD per parameter of ``run`` refitted and sampled on its first-wave points only."""
    from mscsim.calibration.problem import build_problem
    from mscsim.calibration.run import Settings, Training

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
    return posterior(problem, settings, training)


def posterior(problem, settings, training, emulator_seed: int | None = None) -> dict[str, tuple[float, float]]:
    """Emulators fitted on ``training`` and emcee on them, as ``mscsim calibrate`` does for one wave: each model
    parameter's posterior mean and SD. ``emulator_seed`` (default: the settings' seed) seeds only the GP fits'
    random restarts."""
    from threadpoolctl import threadpool_limits

    from mscsim.calibration.emulator import fit_emulator
    from mscsim.calibration.problem import with_spreads
    from mscsim.calibration.run import _split, sample_posterior

    problem = with_spreads(problem, training.sds)
    with threadpool_limits(1):
        emulator = fit_emulator(training.unit, training.predictions,
                                settings.seed if emulator_seed is None else emulator_seed)
    sample = sample_posterior(problem, emulator, training, settings)
    unit, _ = _split(problem, sample.flat)  # every step after burn-in, as parameters.csv summarises it
    values = problem.values(unit)
    return {name: (float(values[:, i].mean()), float(values[:, i].std())) for i, name in enumerate(problem.names)}


def common_training(disease: str, pool: int, points: int, seed: int, keep: Path):
    """The first wave at ``pool`` with the same patients at every point (blocks of 32, as ``mscsim calibrate``),
    kept in ``keep`` and read back from there by a rerun."""
    from mscsim.calibration.emulator import design_points
    from mscsim.calibration.problem import build_problem
    from mscsim.calibration.run import Training

    problem = build_problem(disease, pool=pool)
    # "nested": every arm's larger pool holds the smaller one's patients (CalibrationProblem.simulate since 2026-12-08)
    path = keep / f"{disease}_pool{pool}_points{points}_seed{seed}_common_nested.npz"
    if path.exists():
        with np.load(path) as z:
            return problem, Training(z["unit"], z["predictions"], z["sds"])
    unit = design_points(len(problem.names), points, seed)
    parts = [problem.simulate(unit[i:i + 32]) for i in range(0, points, 32)]  # no pools: the same patients
    training = Training(unit, np.vstack([p for p, _ in parts]), np.vstack([s for _, s in parts]))
    keep.mkdir(parents=True, exist_ok=True)
    np.savez(path, unit=training.unit, predictions=training.predictions, sds=training.sds)
    print(f"pool {pool}: {points} training points with common patients -> {path}", flush=True)
    return problem, training


def _common_posterior(disease: str, pool: int, points: int, seed: int, steps: int, keep: Path,
                      emulator_seed: int | None = None, sampler_seed: int | None = None):
    from mscsim.calibration.run import Settings

    problem, training = common_training(disease, pool, points, seed, keep)
    settings = Settings(points=points, steps=steps, burn=steps // 4, refine=0,  # else calibrate's defaults
                        seed=seed if sampler_seed is None else sampler_seed)
    return posterior(problem, settings, training, seed if emulator_seed is None else emulator_seed)


def refits(args) -> pd.DataFrame:
    """One training set (the first wave with common patients at the first of ``--pools``) sampled twice, the
    emulators' random restarts seeded by ``--emulator-seeds`` or emcee by ``--sampler-seeds`` (the other seed
    held): the shift the GP fit alone, or the sampler alone, makes."""
    pool = args.pools[0]
    what, (sa, sb) = ("emulator", args.emulator_seeds) if args.emulator_seeds else ("sampler", args.sampler_seeds)
    common_training(args.common_patients, pool, args.points, args.seed, args.keep)
    emulator, sampler = ([sa, sb], [None, None]) if what == "emulator" else ([None, None], [sa, sb])
    with ProcessPoolExecutor(2) as workers:
        fa, fb = workers.map(_common_posterior, [args.common_patients] * 2, [pool] * 2, [args.points] * 2,
                             [args.seed] * 2, [args.steps] * 2, [args.keep] * 2, emulator, sampler)
    table = pd.DataFrame([{"parameter": k, f"mean_{what}{sa}": fa[k][0], f"mean_{what}{sb}": fb[k][0], "sd": fb[k][1],
                           f"{what}_refit_shift": abs(fb[k][0] - fa[k][0]) / fb[k][1]} for k in fa])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"pool {pool}: largest shift from the {what} seed alone {table[f'{what}_refit_shift'].max():.3f} "
          "posterior SDs")
    return table


def training_noise(disease: str, pools: list[int], points: int, seed: int, keep: Path) -> pd.DataFrame:
    """Per published number: how far the two pools' training outputs lie apart at the same training points, in
    the number's SE (the likelihood's spread): the root mean square and the mean over the points. This is the
    perturbation of the data the emulators are fitted to; the posterior means move by about as many posterior SDs."""
    from mscsim.calibration.problem import with_spreads

    (_, a), (problem, b) = (common_training(disease, pool, points, seed, keep) for pool in pools)
    t = with_spreads(problem, b.sds).table
    d = (b.predictions - a.predictions) / t["se"].to_numpy(float)
    table = t[["design", "arm", "endpoint", "statistic", "visit_day"]].copy()
    table["rms_difference_se"] = np.sqrt(np.nanmean(d ** 2, axis=0))
    table["mean_difference_se"] = np.nanmean(d, axis=0)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return table


def common_patients(args) -> pd.DataFrame:
    small, large = args.pools
    for pool in args.pools:  # the model runs first, each on both cores
        common_training(args.common_patients, pool, args.points, args.seed, args.keep)
    training_noise(args.common_patients, args.pools, args.points, args.seed, args.keep)
    with ProcessPoolExecutor(2) as workers:  # then the two samplers side by side
        fa, fb = workers.map(_common_posterior, [args.common_patients] * 2, args.pools, [args.points] * 2,
                             [args.seed] * 2, [args.steps] * 2, [args.keep] * 2)
    table = pd.DataFrame([{"parameter": n, f"mean_pool{small}": fa[n][0], f"mean_pool{large}": fb[n][0],
                           f"sd_pool{large}": fb[n][1], "common_patients_shift": abs(fb[n][0] - fa[n][0]) / fb[n][1]}
                          for n in fa])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"largest shift {table['common_patients_shift'].max():.3f} posterior SDs (target < 0.1)")
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("small", nargs="?", help="the smaller pool's calibration folder (with training.npz)")
    ap.add_argument("large", nargs="?", help="the larger pool's calibration folder")
    ap.add_argument("--common-patients", metavar="DISEASE", help="instead: the first wave with common patients")
    ap.add_argument("--pools", type=int, nargs=2, default=[200, 400], help="with --common-patients")
    ap.add_argument("--points", type=int, default=512, help="with --common-patients: first-wave points")
    ap.add_argument("--seed", type=int, default=None, help="with --common-patients: the design's and sampler's "
                    "(default: mscsim calibrate's)")
    ap.add_argument("--emulator-seeds", type=int, nargs=2, metavar=("A", "B"), help="with --common-patients: "
                    "instead of two pools, one training set (the first pool) and its emulators fitted with these two "
                    "seeds")
    ap.add_argument("--sampler-seeds", type=int, nargs=2, metavar=("A", "B"), help="with --common-patients: "
                    "instead of two pools, one training set (the first pool) sampled with these two emcee seeds")
    ap.add_argument("--keep", type=Path, default=Path("out/pool_noise"), help="with --common-patients: training runs")
    ap.add_argument("--steps", type=int, default=16000, help="emcee steps per walker for the first-wave refits")
    ap.add_argument("--out", type=Path, help="write the table here (CSV)")
    args = ap.parse_args(argv)
    if args.emulator_seeds and args.sampler_seeds:
        ap.error("--emulator-seeds or --sampler-seeds: one source at a time")
    if (args.emulator_seeds or args.sampler_seeds) and not args.common_patients:
        ap.error("--emulator-seeds and --sampler-seeds go with --common-patients DISEASE")
    if args.common_patients:
        from mscsim.calibration.run import Settings

        args.seed = Settings().seed if args.seed is None else args.seed
        table = refits(args) if args.emulator_seeds or args.sampler_seeds else common_patients(args)
    elif args.small and args.large:
        table = shift_sources(args)
    else:
        ap.error("give two calibration folders, or --common-patients DISEASE")
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return table


def shift_sources(args) -> pd.DataFrame:
    """The two finished runs' shift beside the sampler's error and the first-wave-only shift."""
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
    return table


if __name__ == "__main__":
    main()
