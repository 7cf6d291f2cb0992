"""Virtual patients: per-patient parameter values drawn from the between-patient distributions in the data.

Each patient's random numbers come from a generator keyed on (seed, patient index), so patient 17 is the
same patient whatever chunk or worker computes it.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _ufuncs as uf
from .._keyed_random import keyed_rows
from ..model.parameters import Distribution, ParameterSet


def patient_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def draw_parameters(nominal: np.ndarray, names: tuple[str, ...], pset: ParameterSet, *, seed: int,
                    start: int, count: int, variability: bool) -> np.ndarray:
    """Parameter matrix (count, len(names)) for patients start..start+count-1 (nominal when no variability)."""
    out = np.tile(np.asarray(nominal, dtype=float), (count, 1))
    if not variability:
        return out
    varying = sorted(n for n in names if pset[n].between_patient is not None)
    if not varying:
        return out
    cols = [names.index(n) for n in varying]
    width = len(varying)  # each patient's patient_rng(seed, patient) draws, for the whole range at once
    z = keyed_rows([seed, np.arange(start, start + count)], lambda g: g.standard_normal(width), width)
    for k, (name, col) in enumerate(zip(varying, cols)):
        out[:, col] = _apply(out[:, col], pset[name].between_patient, z[:, k], pset[name].bounds)
    return out


def _apply(nominal: np.ndarray, dist: Distribution, z: np.ndarray, bounds) -> np.ndarray:
    """Transform standard normal draws into parameter values whose median is the nominal value."""
    if dist.distribution == "lognormal":
        sigma = math.sqrt(math.log1p(dist.cv ** 2))
        val = nominal * uf.exp(sigma * z)
    elif dist.distribution == "logitnormal":
        p = np.clip(nominal, 1e-12, 1 - 1e-12)
        val = 1.0 / (1.0 + uf.exp(-(uf.log(p / (1 - p)) + dist.sd * z)))
    elif dist.distribution == "normal":
        val = nominal + dist.sd * z
    else:  # uniform/loguniform between-patient spreads: map the normal draw through its CDF
        from scipy.stats import norm

        u = norm.cdf(z)
        if dist.distribution == "uniform":
            val = dist.low + (dist.high - dist.low) * u
        else:
            val = uf.exp(math.log(dist.low) + (math.log(dist.high) - math.log(dist.low)) * u)
    if bounds is not None:
        val = np.clip(val, bounds[0], bounds[1])
    return val
