"""``mscsim calibrate``: train the emulator on full model runs, sample the posterior, check it, write it as data.

Steps: (1) a scrambled Sobol design over the prior's unit cube, each point a set of virtual trials (every
bundled design of the disease, ``pool`` patients per arm, common random numbers); (2) one GP per observation;
(3) emcee on the emulated likelihood; (4) diagnostics, identifiability, prior and posterior predictive intervals
for every observation, and a check of the emulator against full model runs at posterior draws; (5) optionally
leave-one-trial-out: the posterior without each trial, and its prediction of that trial.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from .. import __version__
from ..errors import InputError
from ..io.outputs import atomic_output_dir
from ..uncertainty.priors import prior_text
from .emulator import Emulator, design_points, fit_emulator
from .heterogeneity import LABELS as HETEROGENEITY_LABELS, NAMES as HETEROGENEITY_NAMES, Heterogeneity, load_prior
from .inference import (CORRELATED, RATES, Likelihood, diagnostics, identifiability, predictive, run_sampler, thinned)
from .problem import CalibrationProblem, with_spreads

POSTERIOR_DRAWS = 2000  # rows of the posterior file (bands take the first ``draws`` of them)
MODEL_CHECK_DRAWS = 24  # posterior draws run through the full model to check the emulator where it matters


@dataclass(frozen=True)
class Settings:
    """How hard to work: emulator training points, emcee walkers, steps and burn-in, and the seed of all of it."""

    points: int = 256  # training points of the emulator (a power of two: a balanced Sobol design)
    walkers: int = 48
    steps: int = 16000
    burn: int = 4000
    seed: int = 20261206
    # a second wave: this many more training points, drawn from the posterior of the first wave's emulator, so the
    # emulator is dense where the posterior is (as history matching refocuses its design); 0: one wave. 128 by
    # default: the second wave moved the knee's efficacy (g_trophic) from a posterior median of 7.1 to 11.9, so the
    # one-wave emulator was limiting the posterior, and the bundled posteriors are two-wave runs
    refine: int = 128
    # between-trial heterogeneity (calibration.heterogeneity): each trial's random effects on its common response
    # and on the cells' effect, integrated out in the likelihood and drawn anew for a held-out trial; off: the
    # trials are exchangeable replicates of one typical trial (the calibrations before 2026-12-07's evening)
    heterogeneity: bool = True

    def check(self) -> None:
        if not isinstance(self.points, int) or self.points < 16 or self.points & (self.points - 1):
            raise InputError("--points", self.points, "a power of two >= 16 (emulator training points)")
        if not isinstance(self.steps, int) or self.steps < 200:
            raise InputError("--steps", self.steps, "an integer >= 200 (MCMC steps per walker)")
        if not 0 <= self.burn < self.steps:
            raise InputError("--burn", self.burn, f"an integer in [0, --steps) = [0, {self.steps})")
        if not isinstance(self.refine, int) or not 0 <= self.refine <= POSTERIOR_DRAWS:
            raise InputError("--refine", self.refine, f"an integer in [0, {POSTERIOR_DRAWS}] (second-wave training "
                             "points drawn from the first posterior)")
        if not isinstance(self.heterogeneity, bool):
            raise InputError("heterogeneity", self.heterogeneity, "true or false (between-trial random effects)")


@dataclass(frozen=True)
class Training:
    """The emulator's training runs: unit points, model predictions and SDs per observation."""

    unit: np.ndarray
    predictions: np.ndarray
    sds: np.ndarray


@dataclass(frozen=True)
class Calibration:
    """A finished calibration: the problem, the emulator and its training runs, the thinned posterior (unit
    cube; ``problem.values`` maps it to parameter values), and the tables and manifest that are written."""

    problem: CalibrationProblem
    settings: Settings
    emulator: Emulator
    training: Training
    posterior_unit: np.ndarray  # (draws, k) thinned posterior sample in the unit cube
    posterior_tau: np.ndarray | None  # (draws, 2) the between-trial SDs' prior quantiles, or None (heterogeneity off)
    parameters: pd.DataFrame
    correlations: pd.DataFrame
    predictions: pd.DataFrame
    manifest: dict


def _key(problem: CalibrationProblem, settings: Settings) -> str:
    """What the training runs depend on: a stored block is reused only by a run with the same key."""
    return json.dumps({"version": __version__, "disease": problem.disease, "designs": [d.name for d in problem.designs],
                       "parameters": list(problem.names), "pool": problem.pool, "pools": "independent", "points": settings.points,
                       "seed": settings.seed, "observations": [o.label for o in problem.observations],
                       **({"refine": settings.refine} if settings.refine else {})})


def train(problem: CalibrationProblem, settings: Settings, progress=None, store: Path | None = None) -> Training:
    """Run the full model at the design points, in blocks of 32 parameter sets (one batch each). With ``store``
    (a folder), each finished block is written there atomically and a rerun with the same problem resumes."""
    unit = design_points(len(problem.names), settings.points, settings.seed)
    return run_points(problem, unit, 0, _key(problem, settings), progress, store)


def run_points(problem: CalibrationProblem, unit: np.ndarray, first_pool: int, key: str, progress=None,
               store: Path | None = None) -> Training:
    """The full model at the unit-cube points ``unit``, point i on its own patients (pool ``first_pool + i``), in
    blocks of 32 kept in ``store`` (when given) under ``key`` so a stopped run resumes."""
    preds, sds = [], []
    block = 32
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
        if (store / "key.json").exists() and (store / "key.json").read_text() != key:
            for f in store.glob("block_*.npz"):
                f.unlink()
        (store / "key.json").write_text(key)
    for first in range(0, len(unit), block):
        path = store / f"block_{first:06d}.npz" if store is not None else None
        if path is not None and path.exists():
            with np.load(path) as z:
                p, s = z["predictions"], z["sds"]
        else:
            points = unit[first:first + block]
            p, s = problem.simulate(points, pools=first_pool + first + np.arange(len(points)))  # own patients
            if path is not None:
                tmp = path.with_suffix(".partial.npz")
                np.savez(tmp, predictions=p, sds=s)
                tmp.replace(path)
        preds.append(p)
        sds.append(s)
        if progress is not None:
            progress(min(first + block, len(unit)), len(unit))
    return Training(unit, np.vstack(preds), np.vstack(sds))


def load_training(path: str | Path, problem: CalibrationProblem, settings: Settings) -> Training:
    """The training runs of an earlier calibration (its training.npz), if they were made for this same problem
    (parameters, designs, observations, pool, points, seed, version); else an InputError saying what differs."""
    try:
        with np.load(path) as z:
            stored = str(z["key"]) if "key" in z else ""
            training = Training(z["unit"], z["predictions"], z["sds"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError("--reuse-training", str(path), f"the training.npz of an earlier 'mscsim calibrate' ({exc})")
    if stored != _key(problem, settings):
        raise InputError("--reuse-training", str(path), "training runs of the same problem: same disease, designs, "
                         "parameters, pool, points, seed and mscsim version (these differ)")
    return training


def _start(training: Training, like: Likelihood, walkers: int) -> np.ndarray:
    """Walkers start near the best training points by the emulated likelihood (not at one point); the
    between-trial SDs, if sampled, at their prior medians."""
    unit = np.hstack([training.unit, np.full((len(training.unit), like.extra), 0.5)])
    ll = like(unit)
    best = np.argsort(-ll)[:max(walkers // 4, 1)]
    return unit[np.resize(best, walkers)]


def heterogeneity_of(problem: CalibrationProblem, settings: Settings) -> Heterogeneity | None:
    """The problem's between-trial random effects (its spreads filled in), or None when the settings turn them off."""
    return Heterogeneity.of(problem.table, problem.disease) if settings.heterogeneity else None


def sample_posterior(problem: CalibrationProblem, emulator: Emulator, training: Training, settings: Settings,
                     progress=None):
    """emcee on the emulated likelihood: the model's parameters, then (heterogeneity on) the two between-trial SDs."""
    like = Likelihood(emulator, problem.table["value"].to_numpy(float), problem.table["se"].to_numpy(float),
                      problem.used, heterogeneity_of(problem, settings))
    k = len(problem.names) + like.extra
    walkers = max(settings.walkers, 2 * k + 2)
    with threadpool_limits(1):  # small matrices: BLAS threads only contend (with each other and other processes)
        return run_sampler(like, k, settings.seed, walkers, settings.steps, settings.burn,
                           start=_start(training, like, walkers), progress=progress)


def _split(problem: CalibrationProblem, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A sampled unit-cube sample as (model parameters, between-trial SDs or None)."""
    k = len(problem.names)
    return unit[:, :k], (unit[:, k:] if unit.shape[1] > k else None)


def sampled_names(problem: CalibrationProblem, settings: Settings) -> tuple[str, ...]:
    return problem.names + (HETEROGENEITY_NAMES if settings.heterogeneity else ())


def parameter_table(problem: CalibrationProblem, post_unit: np.ndarray, post_tau: np.ndarray | None,
                    diag: pd.DataFrame, ident: pd.DataFrame) -> pd.DataFrame:
    """Per calibrated parameter (and between-trial SD): prior and posterior summaries in the data files' units,
    with the sampler's diagnostics and the identifiability columns. ``post_unit`` (and ``post_tau``) are best the
    whole chain after burn-in: its means rest on the chain's effective sample size (about 9,000 on the knee
    problem), not on the 2,000 thinned draws (whose means differ between sampler seeds by up to 0.08 SD there)."""
    prior_unit = np.array([[0.025] * len(problem.names), [0.5] * len(problem.names), [0.975] * len(problem.names)])
    prior = problem.values(prior_unit)
    post = problem.values(post_unit)
    rows = []
    for j, name in enumerate(problem.names):
        p = problem.space[name]
        rows.append({"parameter": name, "label": p.parameter.readable, "units": p.parameter.units,
                     "grade": p.parameter.grade, "role": p.role, "nominal": p.parameter.value,
                     "prior": prior_text(p.dist), "prior_2.5%": prior[0, j], "prior_median": prior[1, j],
                     "prior_97.5%": prior[2, j], "posterior_mean": float(post[:, j].mean()),
                     "posterior_median": float(np.median(post[:, j])),
                     "posterior_2.5%": float(np.quantile(post[:, j], 0.025)),
                     "posterior_97.5%": float(np.quantile(post[:, j], 0.975)),
                     "posterior_sd": float(post[:, j].std())})
    if post_tau is not None:
        prior = load_prior(problem.disease)
        tau_prior, tau_post = prior.tau(np.array([0.025, 0.5, 0.975])), prior.tau(post_tau)
        for j, name in enumerate(HETEROGENEITY_NAMES):
            rows.append({"parameter": name, "label": HETEROGENEITY_LABELS[name], "units": prior.units,
                         "grade": "human", "role": "heterogeneity", "nominal": float(tau_prior[1]),
                         "prior": prior.text(), "prior_2.5%": tau_prior[0], "prior_median": tau_prior[1],
                         "prior_97.5%": tau_prior[2], "posterior_mean": float(tau_post[:, j].mean()),
                         "posterior_median": float(np.median(tau_post[:, j])),
                         "posterior_2.5%": float(np.quantile(tau_post[:, j], 0.025)),
                         "posterior_97.5%": float(np.quantile(tau_post[:, j], 0.975)),
                         "posterior_sd": float(tau_post[:, j].std())})
    return pd.DataFrame(rows).merge(diag, on="parameter").merge(ident, on="parameter")


def prediction_table(problem: CalibrationProblem, emulator: Emulator, post_unit: np.ndarray, seed: int,
                     model_check: tuple[np.ndarray, np.ndarray] | None = None, post_tau: np.ndarray | None = None,
                     heterogeneity: Heterogeneity | None = None) -> pd.DataFrame:
    """Every observation: published value and SE, the prior and posterior predictive 95 % intervals (emulated;
    with ``heterogeneity``, a calibrated-against trial with its random effects' posterior, a held-out one with new
    effects), the full model's posterior predictive interval at a few posterior draws (its sampling error only), and
    whether the published value lies inside the posterior interval. 'role': calibrated against or held out."""
    t = problem.table
    se = t["se"].to_numpy(float)
    extra = len(HETEROGENEITY_NAMES) if heterogeneity is not None else 0
    prior_all = np.random.default_rng([seed, 11]).random((4000, len(problem.names) + extra))
    prior_unit, prior_tau = prior_all[:, :len(problem.names)], prior_all[:, len(problem.names):]
    pr = predictive(emulator, prior_unit, t, seed, heterogeneity, prior_tau)  # the prior: every trial a new one
    po = predictive(emulator, post_unit, t, seed + 1, heterogeneity, post_tau, problem.used)
    out = t[["design", "trial_label", "arm", "arm_label", "endpoint", "statistic", "visit_day", "n", "value", "se",
             "spread", "source"]].copy()
    out = out.rename(columns={"value": "published"})
    out.insert(0, "role", np.where(problem.used, "calibrated against", "held out (predicted)"))
    out["prior_median"], out["prior_2.5%"], out["prior_97.5%"] = pr
    out["posterior_median"], out["posterior_2.5%"], out["posterior_97.5%"] = po
    out["inside_95"] = (out["published"] >= out["posterior_2.5%"]) & (out["published"] <= out["posterior_97.5%"])
    if model_check is not None:
        mp, _ = model_check
        draws = mp + np.nan_to_num(se) * np.random.default_rng([seed, 5]).standard_normal(mp.shape)
        rates = t["statistic"].isin(RATES).to_numpy()
        draws[:, rates] = np.clip(draws[:, rates], 0.0, 1.0)
        with np.errstate(invalid="ignore"):
            out["model_posterior_median"] = np.nanmedian(mp, axis=0)
            out["model_2.5%"] = np.nanquantile(draws, 0.025, axis=0)
            out["model_97.5%"] = np.nanquantile(draws, 0.975, axis=0)
            em, _ = emulator.predict(post_unit[:len(mp)])
            out["emulator_error_at_posterior"] = np.nanmean(np.abs(em - mp), axis=0)
    return out


def calibrate(problem: CalibrationProblem, settings: Settings = Settings(), *, loo: bool = False,
              progress=None, training: Training | None = None, store: Path | None = None
              ) -> tuple[Calibration, pd.DataFrame | None]:
    """The whole calibration (and leave-one-trial-out validation with ``loo``), in memory; ``store`` keeps the
    training runs' finished blocks so a stopped run resumes."""
    settings.check()
    if settings.heterogeneity:
        load_prior(problem.disease)  # a disease without a heterogeneity prior fails here, before the model runs
    say = progress or (lambda *a: None)
    t0 = time.perf_counter()
    if training is None:
        say("say", f"emulator training: {settings.points} parameter sets x {sum(len(d.arms) for d in problem.designs)}"
            f" arms x {problem.pool} patients")
        training = train(problem, settings, progress=lambda d, n: say("count", d, n), store=store)
    t_train = time.perf_counter() - t0
    wave2 = None
    if settings.refine and len(training.unit) == settings.points + settings.refine:  # reused: both waves are in it
        n = settings.points
        training, wave2 = Training(training.unit[:n], training.predictions[:n], training.sds[:n]), training
    problem = with_spreads(problem, training.sds)  # spreads from the first wave (points spread over the prior)
    say("stage", f"fitting {len(problem.observations)} Gaussian-process emulators")
    with threadpool_limits(1):
        emulator = fit_emulator(training.unit, training.predictions, settings.seed)
    say("say", f"emcee: {len(problem.names)} parameters, {settings.steps} steps")
    sample = sample_posterior(problem, emulator, training, settings, progress=lambda d, n: say("count", d, n))
    prior_emulator, prior_training = emulator, training  # trained over the prior: they serve leave-one-out
    if settings.refine:
        if wave2 is None:
            say("say", f"second wave: {settings.refine} training points from the first posterior")
            first, _ = _split(problem, thinned(sample, POSTERIOR_DRAWS, settings.seed))
            picks = first[np.linspace(0, len(first) - 1, settings.refine).round().astype(int)]
            t1 = time.perf_counter()
            where = hashlib.sha256(np.ascontiguousarray(picks).tobytes()).hexdigest()[:16]  # the points themselves
            extra = run_points(problem, picks, settings.points, f"{_key(problem, settings)} wave 2 at {where}",
                               lambda d, n: say("count", d, n), store / "wave2" if store is not None else None)
            t_train += time.perf_counter() - t1
            wave2 = Training(np.vstack([training.unit, extra.unit]),
                             np.vstack([training.predictions, extra.predictions]), np.vstack([training.sds, extra.sds]))
        training = wave2
        say("stage", f"fitting the emulators on both waves ({len(training.unit)} points)")
        with threadpool_limits(1):
            emulator = fit_emulator(training.unit, training.predictions, settings.seed)
        say("say", f"emcee on both waves: {settings.steps} steps")
        sample = sample_posterior(problem, emulator, training, settings, progress=lambda d, n: say("count", d, n))
    names = sampled_names(problem, settings)
    diag = diagnostics(sample, names)
    post_all = thinned(sample, POSTERIOR_DRAWS, settings.seed)
    ident, corr = identifiability(post_all, names)
    post_unit, post_tau = _split(problem, post_all)
    het = heterogeneity_of(problem, settings)
    say("stage", f"posterior predictive check with the full model ({MODEL_CHECK_DRAWS} posterior draws)")
    check_unit = post_unit[:MODEL_CHECK_DRAWS]  # fresh patients (pools after the training points')
    check = problem.simulate(check_unit, pools=len(training.unit) + np.arange(len(check_unit)))
    params = parameter_table(problem, *_split(problem, sample.flat), diag, ident)
    preds = prediction_table(problem, emulator, post_unit, settings.seed, check, post_tau, het)
    loo_table = None
    if loo:
        loo_table = leave_one_out(problem, prior_emulator, prior_training, settings, say)
    say("stage", None)
    pairs = [(a, b, float(corr.loc[a, b])) for i, a in enumerate(names) for b in names[i + 1:]
             if abs(corr.loc[a, b]) >= CORRELATED]
    manifest = {
        "mscsim_version": __version__, "date": _dt.date.today().isoformat(), "disease": problem.disease,
        "designs": [d.name for d in problem.designs], "excluded_designs": list(problem.excluded),
        "targets": int(problem.used.sum()), "held_out": int((~problem.used).sum()),
        "parameters": list(problem.names), "pool_per_arm": problem.pool, "seed": settings.seed,
        "sampler": {"library": "emcee", "version": _version("emcee"), "walkers": int(sample.chain.shape[1]),
                    "steps": settings.steps, "burn_in": settings.burn, "acceptance": sample.acceptance},
        "emulator": {"library": "scikit-learn GaussianProcessRegressor", "version": _version("scikit-learn"),
                     "kernel": "Constant x Matern(5/2, ARD) + White", "training_points": len(training.unit),
                     "waves": 2 if settings.refine else 1, "second_wave_points": settings.refine,
                     "holdout_rmse_over_se": _finite_max(emulator.holdout_rmse / problem.table["se"].to_numpy(float)),
                     "holdout_z_rms": _finite_median(emulator.holdout_z)},
        "diagnostics_pass": bool(diag["passes"].all()),
        "thresholds": {"rhat_below": 1.01, "ess_bulk_at_least": 400, "steps_per_autocorrelation_time": 50,
                       "acceptance_reported_only": "a low acceptance (a tightly constrained parameter under DE moves) is not a "
                       "failure when R-hat, ESS and chain length pass"},
        "unconstrained_parameters": list(params.loc[~params["constrained"], "parameter"]),
        "correlated_pairs": [{"a": a, "b": b, "spearman": r} for a, b, r in pairs],
        "inside_95": {"calibrated_against": _share(preds[problem.used]["inside_95"]),
                      "held_out": _share(preds[~problem.used]["inside_95"])},
        "seconds": {"training": round(t_train, 1), "total": round(time.perf_counter() - t0, 1)},
        "posterior_draws": int(len(post_unit)),
        "settings": dataclasses.asdict(settings),
        "heterogeneity": None if het is None else {
            "model": "per trial and endpoint, random effects on the trial's common response and on the cells' effect, "
                     "integrated out in the likelihood; a held-out trial predicted with new effects",
            "prior": het.prior.name, "prior_text": het.prior.text(), "setting": het.prior.setting,
            "source": list(het.prior.source),
            "posterior_median": {n: float(np.median(het.prior.tau(post_tau[:, j])))
                                 for j, n in enumerate(HETEROGENEITY_NAMES)}},
    }
    if loo_table is not None:
        manifest["leave_one_out_inside_95"] = _share(loo_table["inside_95"])
    return Calibration(problem, settings, emulator, training, post_unit, post_tau, params, corr, preds,
                       manifest), loo_table


def leave_one_out(problem: CalibrationProblem, emulator: Emulator, training: Training, settings: Settings,
                  say) -> pd.DataFrame:
    """For every design with published numbers: the posterior without it, and its prediction of that design's
    numbers (the emulator is trained on the prior, so it serves every fold)."""
    frames = []
    designs = list(dict.fromkeys(problem.table["design"]))
    for name in designs:
        fold = problem.excluding((*problem.excluded, name))
        say("stage", f"leave-one-out: without {name}")
        if not fold.used.any():  # the disease's only trial: its prediction is the prior's
            post_all = np.random.default_rng([settings.seed, 13]).random(
                (POSTERIOR_DRAWS, len(sampled_names(problem, settings))))
            basis = "prior (no other trial of this disease)"
        else:
            sample = sample_posterior(fold, emulator, training, settings)
            post_all = thinned(sample, POSTERIOR_DRAWS, settings.seed)
            basis = "posterior without this trial"
        post, post_tau = _split(fold, post_all)
        t = prediction_table(fold, emulator, post, settings.seed, post_tau=post_tau,
                             heterogeneity=heterogeneity_of(fold, settings))
        t = t[t["design"] == name].copy()
        t["basis"] = basis
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def _version(package: str) -> str:
    from importlib.metadata import version
    return version(package)


def _share(s: pd.Series) -> float | None:
    return float(s.mean()) if len(s) else None


def _finite_max(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.max()) if len(x) else None


def _finite_median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else None


def posterior_dataset(cal: Calibration):
    """The posterior as data: one variable per parameter (draw), in the data files' units, with provenance."""
    import xarray as xr

    values = cal.problem.values(cal.posterior_unit)
    ds = xr.Dataset({name: ("draw", values[:, j], {"units": cal.problem.space[name].parameter.units,
                                                  "long_name": cal.problem.space[name].parameter.readable})
                     for j, name in enumerate(cal.problem.names)},
                    coords={"draw": np.arange(len(values))})
    if cal.posterior_tau is not None:  # the between-trial SDs: not model parameters, so runs' bands skip them
        prior = load_prior(cal.problem.disease)
        tau = prior.tau(cal.posterior_tau)
        for j, name in enumerate(HETEROGENEITY_NAMES):
            ds[name] = ("draw", tau[:, j], {"units": prior.units,
                                            "long_name": HETEROGENEITY_LABELS[name], "role": "heterogeneity"})
    ds.attrs.update({"title": f"mscsim posterior: {cal.problem.disease}", "mscsim_version": __version__,
                     "provenance": json.dumps({k: cal.manifest[k] for k in (
                         "disease", "designs", "excluded_designs", "targets", "parameters", "pool_per_arm", "seed",
                         "sampler", "emulator", "date", "diagnostics_pass", "heterogeneity")})})
    return ds


def write_calibration(cal: Calibration, out: str | Path, loo: pd.DataFrame | None = None) -> Path:
    """Write the posterior (posterior.nc and posterior.csv), the tables, the figures and a manifest, atomically."""
    from .figures import pairs_figure, posterior_figure, predictive_figure

    with atomic_output_dir(out) as tmp:
        posterior_dataset(cal).to_netcdf(tmp / "posterior.nc")
        vals = cal.problem.values(cal.posterior_unit)
        pd.DataFrame(vals, columns=list(cal.problem.names)).to_csv(tmp / "posterior.csv", index=False)
        cal.parameters.to_csv(tmp / "parameters.csv", index=False)
        cal.correlations.to_csv(tmp / "correlations.csv")
        cal.predictions.to_csv(tmp / "predictions.csv", index=False)
        np.savez_compressed(tmp / "training.npz", unit=cal.training.unit, predictions=cal.training.predictions,
                            sds=cal.training.sds, names=np.array(cal.problem.names),
                            key=np.array(_key(cal.problem, cal.settings)))
        files = ["posterior.nc", "posterior.csv", "parameters.csv", "correlations.csv", "predictions.csv",
                 "training.npz", "posterior.png", "pairs.png", "predictive.png"]
        posterior_figure(cal, tmp / "posterior.png")
        pairs_figure(cal, tmp / "pairs.png")
        predictive_figure(cal.predictions, cal.problem, tmp / "predictive.png")
        if loo is not None:
            loo.to_csv(tmp / "leave_one_out.csv", index=False)
            files.append("leave_one_out.csv")
        (tmp / "manifest.json").write_text(json.dumps({**cal.manifest, "files": files}, indent=2) + "\n")
    return Path(out)
