"""A Gaussian-process emulator of the virtual trials: one GP per observation over the unit cube of the calibrated
parameters, trained on a space-filling design of full model runs.

Why an emulator: a likelihood evaluation is a set of virtual trials (hundreds of patients, each a stiff ODE
solve), so an MCMC run straight on the model needs days on two cores; the emulator's prediction costs
microseconds, and its own predictive variance enters the likelihood, so its error widens the posterior instead
of hiding in it (Kennedy and O'Hagan 2001, J R Stat Soc B 63:425, doi:10.1111/1467-9868.00294). scikit-learn's
GaussianProcessRegressor (anisotropic Matern 5/2 plus a white-noise term: every training point's virtual trial
has its own patients, so its statistic carries that pool's sampling error) does the fitting; nothing here is
hand-written but the bookkeeping. The emulator predicts the noise-free statistic (the GP's latent function), whose
SD is the emulator's own uncertainty; the trial's sampling error enters the likelihood separately.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular
from scipy.spatial.distance import cdist
from scipy.stats import qmc
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel


def design_points(k: int, n: int, seed: int) -> np.ndarray:
    """``n`` space-filling points of the unit cube (scrambled Sobol), the emulator's training design."""
    return qmc.Sobol(k, scramble=True, seed=np.random.default_rng([seed, 4242])).random(n)


@dataclass(frozen=True)
class _Fitted:
    """What one fitted GP needs to predict: its kernel's hyperparameters, training points and the factors
    scikit-learn computed (``alpha_``, ``L_``, the normalisation of y)."""

    constant: float
    length_scale: np.ndarray
    noise: float
    x: np.ndarray
    alpha: np.ndarray
    chol: np.ndarray
    y_mean: float
    y_std: float

    @classmethod
    def of(cls, gp: GaussianProcessRegressor) -> "_Fitted":
        k = gp.kernel_
        return cls(float(k.k1.k1.constant_value), np.atleast_1d(np.asarray(k.k1.k2.length_scale, dtype=float)),
                   float(k.k2.noise_level), gp.X_train_, np.ravel(gp.alpha_), gp.L_, float(np.ravel(gp._y_train_mean)[0]),
                   float(np.ravel(gp._y_train_std)[0]))

    def predict(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's GaussianProcessRegressor.predict(u, return_std=True) for this kernel, without its
        per-call input validation, which costs more than the arithmetic when an MCMC step asks for 48 points of
        a dozen GPs (the test checks the two agree); the SD is the latent function's (without the white noise)."""
        r = cdist(u / self.length_scale, self.x / self.length_scale) * np.sqrt(5.0)
        kt = self.constant * (1.0 + r + r * r / 3.0) * np.exp(-r)  # Matern 5/2
        mean = self.y_std * (kt @ self.alpha) + self.y_mean
        v = solve_triangular(self.chol, kt.T, lower=True, check_finite=False)
        var = np.maximum(self.constant - np.einsum("ij,ij->j", v, v), 0.0)
        return mean, np.sqrt(var) * self.y_std


@dataclass(frozen=True)
class Emulator:
    """One fitted GP per output; ``predict`` gives means and SDs (points, outputs) in the outputs' units."""

    gps: tuple[GaussianProcessRegressor | None, ...]
    holdout_rmse: np.ndarray  # (outputs,) error on points left out of the fit, in the outputs' units
    holdout_z: np.ndarray  # (outputs,) RMS of (model - emulator) / emulator SD on those points (about 1 if calibrated)

    @property
    def _fast(self) -> tuple[_Fitted | None, ...]:
        cached = self.__dict__.get("_fitted")
        if cached is None:
            cached = tuple(None if gp is None else _Fitted.of(gp) for gp in self.gps)
            object.__setattr__(self, "_fitted", cached)
        return cached

    def predict(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unit = np.atleast_2d(unit)
        mean = np.full((len(unit), len(self.gps)), np.nan)
        sd = np.full_like(mean, np.nan)
        for i, gp in enumerate(self._fast):
            if gp is not None:
                mean[:, i], sd[:, i] = gp.predict(unit)
        return mean, sd


def _fit_one(x: np.ndarray, y: np.ndarray, seed: int, start=None) -> GaussianProcessRegressor:
    """Maximum marginal likelihood fit; from ``start`` (a fitted kernel) with no restarts, else from a default
    kernel with two random restarts."""
    k = x.shape[1]
    kernel = start if start is not None else (
        ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=np.full(k, 0.5), length_scale_bounds=(0.02, 50.0),
                                                  nu=2.5) + WhiteKernel(1e-2, (1e-8, 1.0)))
    gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=0 if start is not None else 2,
                                  random_state=seed)
    with warnings.catch_warnings():  # a length scale at its bound means the output ignores that parameter: fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x, y)
    return gp


def fit_emulator(unit: np.ndarray, outputs: np.ndarray, seed: int, holdout: float = 0.2) -> Emulator:
    """Fit on the design's points (rows of ``unit``) and their model outputs (points, outputs); NaN rows of an
    output (failed or empty runs) are left out of that output's fit. The last ``holdout`` share of points is held
    out first to measure the emulator's error, then the GP is refitted on every point."""
    n = len(unit)
    test = np.arange(n) >= int(round(n * (1 - holdout)))
    gps, rmse, zs = [], [], []
    for i in range(outputs.shape[1]):
        y = outputs[:, i]
        ok = np.isfinite(y)
        if ok.sum() < max(8, unit.shape[1] + 2):
            gps.append(None)
            rmse.append(np.nan)
            zs.append(np.nan)
            continue
        trial = _fit_one(unit[ok & ~test], y[ok & ~test], seed)
        m, s = trial.predict(unit[ok & test], return_std=True)
        err = y[ok & test] - m
        rmse.append(float(np.sqrt(np.mean(err ** 2))) if len(err) else np.nan)
        zs.append(float(np.sqrt(np.mean((err / np.maximum(s, 1e-12)) ** 2))) if len(err) else np.nan)
        gps.append(_fit_one(unit[ok], y[ok], seed, start=trial.kernel_))
    return Emulator(tuple(gps), np.array(rmse), np.array(zs))
