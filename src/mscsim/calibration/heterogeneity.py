"""Between-trial heterogeneity: each trial's results may stand apart from what the parameters predict for the
typical trial, by a random effect of that trial (Higgins, Thompson and Spiegelhalter 2009, J R Stat Soc A 172:137,
doi:10.1111/j.1467-985X.2008.00552.x), and a new trial is predicted with a new draw of it.

Two random effects per trial and endpoint, each standard normal times its SD: the trial's common response (every
arm's level, change or rate: its patients, sites and co-treatments; not a difference between arms, where it cancels)
and the cells' effect (the cell arms' statistics and their differences from control). Their SDs, ``tau_trial`` and
``tau_cells``, are sampled with the model's parameters; their priors are the empirical predictive distributions of
between-study variance of Rhodes 2015 (standardized mean differences) or Turner 2015 (log odds ratios), chosen per
disease in data/calibration/heterogeneity.yaml. One scale per disease: a continuous statistic moves by its effect
times the between-patient SD (a standardized mean difference), a rate by its effect on the log-odds, and the two
scales convert by pi / sqrt(3) (Chinn 2000). Effects are shared by a trial's arms, visits and statistics of one
endpoint, independent between endpoints (the endpoints have no declared direction of benefit to share a sign by).
A partial-response rate, the overall minus the complete, takes no effect (its shift is their difference, small).

In the likelihood the effects are integrated out: each (trial, endpoint) group of observations is one multivariate
normal whose covariance is the diagonal (trial's sampling and emulator variance) plus a rank-two term, evaluated
with the Woodbury identity and the matrix determinant lemma; a rate's effect enters linearised (times p(1 - p) at the
emulated rate). Written by hand because it is a few lines of linear algebra on small blocks inside the emcee
likelihood, which no library offers in this form.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .. import _yaml
from ..errors import DataError
from ..trials.design import RATE_STATISTICS

FILE = Path(__file__).resolve().parent.parent / "data" / "calibration" / "heterogeneity.yaml"
NAMES = ("tau_trial", "tau_cells")
LABELS = {"tau_trial": "between-trial SD of the trial's common response",
          "tau_cells": "between-trial SD of the cells' effect"}
LOGIT_PER_SMD = np.pi / np.sqrt(3.0)  # Chinn 2000, Stat Med 19:3127: a log odds ratio over 1.81 is an SMD
SCALES = ("standardized_mean_difference", "log_odds_ratio")
# tau's cap: 10,000 SMD or log-odds already means no information at all; the cap keeps the effects' 2 x 2 precision
# matrix well conditioned far out in the log-t prior's tail (Rhodes 2015's prior has 2e-4 of its mass beyond it)
TAU_MAX = 1e4
RATE_EDGE = 0.01  # rates are kept inside [0.01, 0.99] where p(1 - p) linearises a log-odds shift


@dataclass(frozen=True)
class TauPrior:
    """A predictive distribution of a between-trial SD tau: log tau^2 = location + spread x (Student t with ``df``
    degrees of freedom, or a standard normal when ``df`` is None), on ``scale``."""

    name: str
    scale: str
    location: float
    spread: float
    df: float | None
    source: tuple[str, ...]
    setting: str

    def tau(self, unit: np.ndarray) -> np.ndarray:
        """tau at quantiles ``unit`` of its prior (the probability-integral transform the sampler works in)."""
        u = np.clip(np.asarray(unit, dtype=float), 1e-12, 1 - 1e-12)
        q = stats.t.ppf(u, self.df) if self.df else stats.norm.ppf(u)
        return np.exp(np.minimum(0.5 * (self.location + self.spread * q), np.log(TAU_MAX)))

    @property
    def units(self) -> str:
        return "SMD" if self.scale == SCALES[0] else "log OR"

    def text(self) -> str:
        dist = f"t{self.df:g}" if self.df else "normal"
        return f"log tau^2 = {self.location:g} + {self.spread:g} x {dist} ({self.units}; {', '.join(self.source)})"


@lru_cache(maxsize=None)
def load_prior(disease: str, path: Path = FILE) -> TauPrior:
    """The heterogeneity prior of ``disease`` (data/calibration/heterogeneity.yaml; read once per process); a
    disease without one, or an entry outside what is allowed, is a data error naming the file and field."""
    raw = _yaml.safe_load(path.read_text()) or {}
    entry = (raw.get("diseases") or {}).get(disease)
    if entry is None:
        raise DataError(f"{path}: diseases.{disease}: missing; every calibrated disease names a heterogeneity prior "
                        f"(one of {sorted(raw.get('priors') or {})})")
    name = entry.get("prior")
    p = (raw.get("priors") or {}).get(name)
    if p is None:
        raise DataError(f"{path}: diseases.{disease}.prior: {name!r} is not one of priors: "
                        f"{sorted(raw.get('priors') or {})}")
    if p.get("scale") not in SCALES:
        raise DataError(f"{path}: priors.{name}.scale: {p.get('scale')!r}; allowed: {list(SCALES)}")
    dist = p.get("distribution")
    if dist not in ("log_t", "lognormal"):
        raise DataError(f"{path}: priors.{name}.distribution: {dist!r}; allowed: log_t, lognormal")
    df = p.get("df") if dist == "log_t" else None
    if dist == "log_t" and not (isinstance(df, (int, float)) and df > 0):
        raise DataError(f"{path}: priors.{name}.df: {df!r}; allowed: a positive number (log_t)")
    if not (isinstance(p.get("spread"), (int, float)) and p["spread"] > 0):
        raise DataError(f"{path}: priors.{name}.spread: {p.get('spread')!r}; allowed: a positive number")
    return TauPrior(name, p["scale"], float(p["location"]), float(p["spread"]), float(df) if df else None,
                    tuple(p.get("source") or ()), str(p.get("setting", "")))


@dataclass(frozen=True)
class Heterogeneity:
    """The random-effect structure of a calibration problem's observations (rows of its table)."""

    prior: TauPrior
    group: np.ndarray  # (obs,) int: one group per (trial, endpoint)
    common: np.ndarray  # (obs,) 1 where the trial's common response moves the statistic
    cells: np.ndarray  # (obs,) 1 where the cells' effect moves it
    scale: np.ndarray  # (obs,) between-patient SD of a continuous statistic (NaN for rates)
    rate: np.ndarray  # (obs,) bool: a rate of one arm (moves on the log-odds)
    difference_rate: np.ndarray  # (obs,) bool: a difference of two arms' rates

    @classmethod
    def of(cls, table: pd.DataFrame, disease: str) -> "Heterogeneity":
        """From a problem's observation table (with spreads filled in: ``scale``)."""
        keys = list(zip(table["design"], table["endpoint"]))
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        statistic = table["statistic"].to_numpy()
        diff = np.char.startswith(statistic.astype(str), "difference")
        partial = statistic == "partial_rate"
        common = (~diff & ~partial).astype(float)
        on_cells = ((table["cells"].to_numpy(bool) | diff) & ~partial).astype(float)
        return cls(load_prior(disease), np.array([index[k] for k in keys]), common, on_cells,
                   table["scale"].to_numpy(float), np.isin(statistic, RATE_STATISTICS),
                   statistic == "difference_rate")

    def taus(self, unit: np.ndarray) -> np.ndarray:
        """(m, 2) tau_trial and tau_cells at unit-cube points (m, 2)."""
        return self.prior.tau(np.atleast_2d(unit))

    @property
    def _per_logit(self) -> float:
        """Log-odds per unit effect on the prior's scale (1 for log odds ratios, pi / sqrt(3) for SMDs)."""
        return LOGIT_PER_SMD if self.prior.scale == SCALES[0] else 1.0

    def _unit_shift(self, mean: np.ndarray) -> np.ndarray:
        """(m, obs) how far one unit of effect (on the prior's scale) moves each statistic: a continuous one by its
        between-patient SD, a rate by p(1 - p) per unit log-odds (linearised), a difference of rates as if at 1/2."""
        per_logit = self._per_logit
        out = np.broadcast_to(np.nan_to_num(self.scale) * per_logit / LOGIT_PER_SMD, mean.shape).copy()
        p = np.clip(np.nan_to_num(mean, nan=0.5), RATE_EDGE, 1 - RATE_EDGE)
        out[:, self.rate] = per_logit * p[:, self.rate] * (1 - p[:, self.rate])
        out[:, self.difference_rate] = per_logit * 0.25
        return out

    def loadings(self, mean: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """(m, obs, 2): each statistic's shift per standard-normal unit of the common and the cells' effect."""
        unit = self._unit_shift(mean)
        return np.stack([unit * self.common * tau[:, :1], unit * self.cells * tau[:, 1:]], axis=-1)

    def loglik(self, resid: np.ndarray, var: np.ndarray, w: np.ndarray, used: np.ndarray) -> np.ndarray:
        """(m,) Gaussian log-likelihood of the used residuals (m, obs) with diagonal variances ``var`` plus the
        groups' shared effects ``w`` (m, obs, 2), the effects integrated out group by group."""
        with np.errstate(invalid="ignore", over="ignore"):  # an overflowing draw is marked -inf below
            return self._loglik(resid, var, w, used)

    def _loglik(self, resid, var, w, used):
        total = np.zeros(len(resid))
        for g in np.unique(self.group[used]):
            i = np.flatnonzero(used & (self.group == g))
            r, d, wg = resid[:, i], var[:, i], w[:, i, :]
            m, b = _woodbury(wg, d, r)
            # a tau so far out in its prior's tail that w^T D^-1 w overflows: that draw is impossible, not an error
            bad = ~(np.isfinite(m).all(axis=(1, 2)) & np.isfinite(b).all(axis=1))
            m[bad], b[bad] = np.eye(m.shape[-1]), 0.0
            _, logdet_m = np.linalg.slogdet(m)
            quad = np.sum(r * r / d, axis=1) - np.einsum("mk,mk->m", b, np.linalg.solve(m, b[..., None])[..., 0])
            total += np.where(bad, -np.inf, -0.5 * (quad + np.sum(np.log(2 * np.pi * d), axis=1) + logdet_m))
        return total

    def effects(self, resid: np.ndarray, var: np.ndarray, w: np.ndarray, used: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """(m, groups, 2) standard-normal effects per draw: from their posterior given the group's used residuals
        (a trial that was calibrated against keeps the effect its data imply), from N(0, 1) for a group with none
        (a held-out trial is a new trial)."""
        groups = int(self.group.max()) + 1
        z = rng.standard_normal((len(resid), groups, 2))
        for g in np.unique(self.group[used]):
            i = np.flatnonzero(used & (self.group == g))
            m, b = _woodbury(w[:, i, :], var[:, i], resid[:, i])
            cov = np.linalg.inv(m)
            mu = np.einsum("mkl,ml->mk", cov, b)
            chol = np.linalg.cholesky(0.5 * (cov + np.swapaxes(cov, 1, 2)))
            z[:, g, :] = mu + np.einsum("mkl,ml->mk", chol, z[:, g, :])
        return z

    def shift(self, model: np.ndarray, tau: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The statistics (m, obs) of trials whose effects are ``z`` (m, groups, 2): continuous ones and differences
        of rates moved linearly, rates moved on the log-odds (exactly, not linearised)."""
        e = self.common * tau[:, :1] * z[:, self.group, 0] + self.cells * tau[:, 1:] * z[:, self.group, 1]
        out = model + self._unit_shift(model) * e
        if self.rate.any():
            p = np.clip(model[:, self.rate], 1e-6, 1 - 1e-6)
            out[:, self.rate] = 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + self._per_logit * e[:, self.rate])))
        return out


def _woodbury(w: np.ndarray, d: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For C = diag(d) + w w^T (per draw): M = I + w^T D^-1 w and b = w^T D^-1 r, so that C^-1 r = D^-1 (r - w M^-1 b),
    r^T C^-1 r = r^T D^-1 r - b^T M^-1 b and log det C = log det D + log det M."""
    wd = w / d[..., None]
    m = np.eye(w.shape[-1]) + np.einsum("mnk,mnl->mkl", wd, w)
    b = np.einsum("mnk,mn->mk", wd, r)
    return m, b
