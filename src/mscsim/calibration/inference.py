"""Bayesian inference on the emulated likelihood: emcee's affine-invariant ensemble sampler, its diagnostics
(autocorrelation time, effective sample size, split R-hat with ArviZ), identifiability and predictive intervals.

Why emcee: the emulated likelihood is cheap and smooth but has no gradients of the full model behind it, the
parameters are few (5-12), and an ensemble sampler needs no tuning of step sizes per parameter (Foreman-Mackey
et al. 2013, PASP 125:306, doi:10.1086/670067). Every observation's Gaussian likelihood has the trial's own
sampling variance plus the emulator's predictive variance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import emcee
import numpy as np
import pandas as pd

from ..trials.design import RATE_STATISTICS
from .emulator import Emulator
from .heterogeneity import NAMES as HETEROGENEITY_NAMES, Heterogeneity

RHAT_MAX = 1.01  # Vehtari et al. 2021, Bayesian Analysis 16:667, doi:10.1214/20-BA1221
ESS_MIN = 400  # ibid.: at least 100 per chain of 4
TAU_RUNS = 50  # emcee's guidance: a chain some 50 autocorrelation times long
CONSTRAINED = 0.25  # posterior SD below 75 % of the prior's (unit cube) = the data say something
CORRELATED = 0.7  # |Spearman rho| above which two parameters trade off


@dataclass(frozen=True)
class Likelihood:
    """Gaussian likelihood of the used observations given emulated predictions. With ``heterogeneity``, the last
    two unit-cube columns are the between-trial SDs' prior quantiles and each trial's random effects are
    integrated out (``heterogeneity.Heterogeneity.loglik``); without it the observations are independent."""

    emulator: Emulator
    values: np.ndarray  # (observations,)
    se: np.ndarray  # (observations,)
    used: np.ndarray  # (observations,) bool
    heterogeneity: Heterogeneity | None = None

    @property
    def extra(self) -> int:
        """Unit-cube columns after the model's parameters: the two between-trial SDs, or none."""
        return len(HETEROGENEITY_NAMES) if self.heterogeneity is not None else 0

    def __call__(self, unit: np.ndarray) -> np.ndarray:
        unit = np.atleast_2d(unit)
        out = np.full(len(unit), -np.inf)
        inside = np.all((unit > 0) & (unit < 1), axis=1)
        if not inside.any():
            return out
        k = unit.shape[1] - self.extra
        mean, sd = self.emulator.predict(unit[inside, :k])
        u = self.used & np.isfinite(self.se)
        var = self.se ** 2 + sd ** 2
        r = self.values - mean
        if self.heterogeneity is None:
            ll = -0.5 * np.sum(r[:, u] ** 2 / var[:, u] + np.log(2 * np.pi * var[:, u]), axis=1)
        else:
            h = self.heterogeneity
            ok = u & np.all(np.isfinite(mean), axis=0)
            w = h.loadings(mean, h.taus(unit[inside, k:]))
            ll = h.loglik(np.nan_to_num(r), np.where(np.isfinite(var), var, 1.0), w, ok)
            ll = np.where(np.all(np.isfinite(mean[:, u]), axis=1), ll, -np.inf)
        out[inside] = np.where(np.isfinite(ll), ll, -np.inf)
        return out


@dataclass(frozen=True)
class Sample:
    chain: np.ndarray  # (steps after burn-in, walkers, k) unit-cube positions
    acceptance: float
    tau: np.ndarray  # (k,) integrated autocorrelation time per parameter, in steps
    burn: int
    steps: int

    @property
    def flat(self) -> np.ndarray:
        return self.chain.reshape(-1, self.chain.shape[-1])


def _logit(u: np.ndarray) -> np.ndarray:
    return np.log(u) - np.log1p(-u)


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class _Unbounded:
    """The posterior on the logit of the unit cube: walkers never meet a wall (a posterior piled against its
    prior's edge mixes badly for the stretch move), and the uniform prior becomes the logistic density u(1 - u)."""

    likelihood: Likelihood

    def __call__(self, x: np.ndarray) -> np.ndarray:
        u = np.clip(_expit(x), 1e-12, 1 - 1e-12)
        return self.likelihood(u) + np.sum(np.log(u) + np.log1p(-u), axis=1)


def run_sampler(likelihood: Likelihood, k: int, seed: int, walkers: int, steps: int, burn: int,
                start: np.ndarray | None = None, progress=None) -> Sample:
    """emcee with ``walkers`` walkers for ``steps`` steps, the first ``burn`` discarded; differential-evolution
    moves (with a snooker share) for correlated parameters (ter Braak and Vrugt 2008, Stat Comput 18:435,
    doi:10.1007/s11222-008-9104-9). Walkers start around ``start`` (e.g. the best training points) or uniformly
    in the cube; the chain is returned in the unit cube."""
    rng = np.random.default_rng([seed, 31337])
    p0 = rng.uniform(0.05, 0.95, size=(walkers, k)) if start is None else np.clip(
        start + rng.normal(0, 0.02, size=(walkers, k)), 0.01, 0.99)
    moves = [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)]
    sampler = emcee.EnsembleSampler(walkers, k, _Unbounded(likelihood), vectorize=True, moves=moves)
    sampler.random_state = np.random.RandomState(int(rng.integers(2 ** 31))).get_state()  # seeded moves
    state = _logit(p0)
    block = max(steps // 20, 1)
    for done in range(0, steps, block):
        state = sampler.run_mcmc(state, min(block, steps - done), progress=False)
        if progress is not None:
            progress(min(done + block, steps), steps)
    chain = sampler.get_chain(discard=burn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = sampler.get_autocorr_time(discard=burn, tol=0)
    return Sample(_expit(chain), float(np.mean(sampler.acceptance_fraction)),
                  np.asarray(tau, dtype=float), burn, steps)


def diagnostics(sample: Sample, names: tuple[str, ...]) -> pd.DataFrame:
    """Per parameter: autocorrelation time, ESS (samples / tau), split R-hat over walkers (ArviZ, rank
    normalised), and whether each passes its threshold."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    chains = np.moveaxis(sample.chain, 1, 0)  # (walkers, draws, k)
    rows = []
    n = sample.chain.shape[0] * sample.chain.shape[1]
    for j, name in enumerate(names):
        rhat = float(az.rhat(chains[:, :, j]))
        ess_bulk = float(az.ess(chains[:, :, j], method="bulk"))
        tau = float(sample.tau[j])
        rows.append({"parameter": name, "tau_steps": tau, "ess_tau": n / tau if tau > 0 else np.nan,
                     "ess_bulk": ess_bulk, "rhat": rhat, "steps_per_tau": sample.chain.shape[0] / tau,
                     "passes": bool(rhat < RHAT_MAX and ess_bulk >= ESS_MIN
                                    and sample.chain.shape[0] / tau >= TAU_RUNS)})
    return pd.DataFrame(rows)


def thinned(sample: Sample, count: int, seed: int) -> np.ndarray:
    """``count`` posterior points (unit cube), thinned by the longest autocorrelation time and shuffled (seeded)
    so that the first rows of the file are as good a sample as all of them."""
    step = max(int(np.ceil(np.nanmax(sample.tau) / 2)), 1)
    pts = sample.chain[::step].reshape(-1, sample.chain.shape[-1])
    rng = np.random.default_rng([seed, 97])
    pts = pts[rng.permutation(len(pts))]
    if len(pts) < count:
        pts = sample.flat[rng.permutation(len(sample.flat))]
    return pts[:count]


def identifiability(unit_post: np.ndarray, names: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per parameter: posterior SD in the prior's unit cube, contraction 1 - var_post / var_prior and whether
    the data constrain it; pairwise Spearman correlations of the posterior)."""
    sd = unit_post.std(axis=0)
    contraction = 1 - sd ** 2 / (1 / 12)
    table = pd.DataFrame({"parameter": names, "unit_sd": sd, "contraction": contraction,
                          "constrained": contraction >= CONSTRAINED})
    corr = pd.DataFrame(unit_post, columns=list(names)).corr(method="spearman")
    return table, corr


RATES = RATE_STATISTICS


def predictive(emulator: Emulator, unit: np.ndarray, table, seed: int, heterogeneity: Heterogeneity | None = None,
               tau_unit: np.ndarray | None = None, used: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median, 2.5 %, 97.5 %) per observation (rows of ``table``) of what a rerun of each trial would report:
    the emulated prediction at each parameter point plus the emulator's error, with ``heterogeneity`` the trial's
    random effects (drawn from their posterior given its data where the trial was ``used`` in the fit, anew for a
    held-out trial: a new trial), then the trial's own sampling: a rate as successes of its arm's size (binomial), a
    difference of rates kept within [-1, 1], anything else with its standard error (normal), a mean or median kept
    within its endpoint's range."""
    mean, sd = emulator.predict(unit)
    rng = np.random.default_rng([seed, 2718])
    model = mean + sd * rng.standard_normal(mean.shape)
    se = np.nan_to_num(table["se"].to_numpy(float))
    statistic = table["statistic"].to_numpy()
    rates = np.isin(statistic, RATES)
    model[:, rates] = np.clip(model[:, rates], 0.0, 1.0)
    if heterogeneity is not None:
        h = heterogeneity
        tau = h.taus(tau_unit)
        used = np.zeros(len(table), bool) if used is None else used
        ok = used & np.isfinite(table["se"].to_numpy(float)) & np.all(np.isfinite(mean), axis=0)
        var = np.where(np.isfinite(sd), sd ** 2, 1.0) + se ** 2
        w = h.loadings(mean, tau)
        z = h.effects(np.nan_to_num(table["value"].to_numpy(float) - mean), var, w, ok,
                      np.random.default_rng([seed, 1618]))
        model = h.shift(model, tau, z)
    draws = model + se * rng.standard_normal(mean.shape)
    n = table["n"].to_numpy(int)
    for i in np.flatnonzero(rates):
        ok = np.isfinite(model[:, i])
        p = np.clip(model[ok, i], 0.0, 1.0)
        draws[ok, i] = rng.binomial(n[i], p) / n[i]
    diff = statistic == "difference_rate"
    draws[:, diff] = np.clip(draws[:, diff], -1.0, 1.0)
    if "low" in table:  # a mean or median of an endpoint stays within the endpoint's range (no negative proteinuria)
        draws = np.clip(draws, table["low"].to_numpy(float), table["high"].to_numpy(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return tuple(np.nanquantile(draws, q, axis=0) for q in (0.5, 0.025, 0.975))
