"""Parameter uncertainty as a space to sample: which parameters of a run are uncertain, their distributions
(priors, or a user's replacement), and the map from unit-hypercube samples to parameter values.

Every uncertain parameter is sampled through its inverse CDF from a number in (0, 1), so random draws (bands),
Morris trajectories and Sobol sequences (sensitivity) all go through one map. A parameter's draws come from a
generator keyed on (seed, stream, the parameter's name), so draw d of parameter x is the same whatever else is
uncertain, whatever the chunking, and whichever worker computes it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import stats

from .. import _ufuncs as uf
from ..errors import DataError, InputError
from ..model.parameters import Distribution, Parameter

Role = Literal["model", "endpoint", "trial"]
DRAW_STREAM = 8117  # random stream of the parameter draws: generator keyed on (seed, DRAW_STREAM, name)


def ppf(param: Parameter, u: np.ndarray, dist: Distribution | None = None) -> np.ndarray:
    """Values of ``param`` at quantiles ``u`` (in (0, 1)) of its uncertainty distribution (or ``dist``):
    lognormal and logitnormal around the nominal value (its median), normal around it, uniform and loguniform
    over their range; clipped to the parameter's bounds. A fixed parameter keeps its value."""
    dist = dist or param.uncertainty
    u = np.asarray(u, dtype=float)
    v = float(param.value)
    kind = dist.distribution
    if kind == "fixed":
        return np.full(u.shape, v)
    if kind == "uniform":
        out = dist.low + (dist.high - dist.low) * u
    elif kind == "loguniform":
        out = uf.exp(math.log(dist.low) + (math.log(dist.high) - math.log(dist.low)) * u)
    else:
        z = stats.norm.ppf(u)
        if kind == "lognormal":
            out = v * uf.exp(math.sqrt(math.log1p(dist.cv ** 2)) * z)
        elif kind == "logitnormal":
            out = 1.0 / (1.0 + uf.exp(-(math.log(v / (1.0 - v)) + dist.sd * z)))
        else:  # normal
            out = v + dist.sd * z
    if param.bounds is not None:
        out = np.clip(out, param.bounds[0], param.bounds[1])
    return np.asarray(out, dtype=float)


def prior_text(dist: Distribution) -> str:
    """A distribution in a few words for tables: 'loguniform 0.0014-0.0126', 'lognormal CV 0.3'."""
    if dist.distribution in ("uniform", "loguniform"):
        return f"{dist.distribution} {dist.low:.3g}-{dist.high:.3g}"
    if dist.distribution == "lognormal":
        return f"lognormal CV {dist.cv:g}"
    return f"{dist.distribution} SD {dist.sd:g}"


def check_prior(param: Parameter, dist: Distribution, where: str) -> None:
    """A replacement prior must fit the parameter as a data file's would (``where`` names the field)."""
    if dist.is_fixed:
        return
    v, b = param.value, param.bounds
    if dist.distribution in ("uniform", "loguniform"):
        if not dist.low <= v <= dist.high:
            raise InputError(where, f"low {dist.low}, high {dist.high}", f"a range that holds {param.name}'s value "
                             f"{v} {param.units}")
        if b and (dist.low < b[0] or dist.high > b[1]):
            raise InputError(where, f"low {dist.low}, high {dist.high}", f"a range inside {param.name}'s bounds "
                             f"{list(b)} {param.units}")
    if dist.distribution == "lognormal" and v <= 0:
        raise InputError(where, "lognormal", f"a distribution for {param.name}'s value {v} (lognormal needs > 0)")
    if dist.distribution == "logitnormal" and not 0 < v < 1:
        raise InputError(where, "logitnormal", f"a distribution for {param.name}'s value {v} (a fraction in (0, 1))")


@dataclass(frozen=True)
class UncertainParameter:
    """One uncertain parameter of a run: where it acts (the model, an endpoint map, the trial's observation)."""

    parameter: Parameter
    role: Role

    @property
    def name(self) -> str:
        return self.parameter.name

    @property
    def dist(self) -> Distribution:
        return self.parameter.uncertainty

    def values(self, u: np.ndarray) -> np.ndarray:
        return ppf(self.parameter, u)


@dataclass(frozen=True)
class ParameterSpace:
    """The uncertain parameters of a run, in a fixed order (sorted by name), and the map from unit samples."""

    parameters: tuple[UncertainParameter, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    def __getitem__(self, name: str) -> UncertainParameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def nominal(self) -> np.ndarray:
        return np.array([p.parameter.value for p in self.parameters], dtype=float)

    def values(self, unit: np.ndarray) -> np.ndarray:
        """Parameter values (n, k) from unit samples (n, k) in (0, 1)."""
        unit = np.atleast_2d(np.asarray(unit, dtype=float))
        if unit.shape[1] != len(self):
            raise ValueError(f"unit samples have {unit.shape[1]} columns, the space {len(self)} parameters")
        return np.stack([p.values(unit[:, j]) for j, p in enumerate(self.parameters)], axis=1) \
            if len(self) else np.zeros((unit.shape[0], 0))

    def by_role(self, row: np.ndarray) -> dict[str, dict[str, float]]:
        """One parameter set (a row of values) split by where it acts: {'model': {...}, 'endpoint': ..., ...}."""
        out: dict[str, dict[str, float]] = {"model": {}, "endpoint": {}, "trial": {}}
        for p, v in zip(self.parameters, row):
            out[p.role][p.name] = float(v)
        return out

    def subset(self, names: Sequence[str]) -> "ParameterSpace":
        keep = set(names)
        return ParameterSpace(tuple(p for p in self.parameters if p.name in keep))


def build_space(groups: Mapping[Role, Mapping[str, Parameter]],
                priors: Mapping[str, Distribution] | None = None, *, where: str = "uncertainty.priors"
                ) -> ParameterSpace:
    """The space of every non-fixed parameter in ``groups`` (role -> name -> Parameter), with ``priors``
    replacing a parameter's uncertainty by name. A name may act in one role only."""
    seen: dict[str, Role] = {}
    params: dict[str, UncertainParameter] = {}
    for role, group in groups.items():
        for name, par in group.items():
            if name in seen and seen[name] != role:
                raise DataError(f"parameter '{name}' is defined both as a {seen[name]} and as a {role} parameter; "
                                "a name may mean one thing only")
            seen[name] = role
            params[name] = UncertainParameter(par, role)
    for name, dist in (priors or {}).items():
        if name not in params:
            raise InputError(f"{where}.{name}", name, f"a parameter this run uses, e.g. {sorted(params)[:10]} ...")
        check_prior(params[name].parameter, dist, f"{where}.{name}")
        params[name] = replace(params[name], parameter=replace(params[name].parameter, uncertainty=dist))
    return ParameterSpace(tuple(params[n] for n in sorted(params) if not params[n].dist.is_fixed))


def draw_unit(seed: int, names: Sequence[str], first: int, count: int) -> np.ndarray:
    """(count, len(names)) uniforms for draws first..first+count-1: column j from a generator keyed on (seed,
    DRAW_STREAM, crc32(name)), so a draw does not depend on the chunk, the worker or the other parameters."""
    out = np.empty((count, len(names)))
    for j, name in enumerate(names):
        rng = np.random.default_rng([int(seed), DRAW_STREAM, zlib.crc32(name.encode())])
        out[:, j] = rng.random(first + count)[first:]
    return out


def draw_values(space: ParameterSpace, seed: int, first: int, count: int,
                posterior: "Posterior | None" = None) -> np.ndarray:
    """Parameter sets first..first+count-1 (count, k): rows of a posterior sample where one is given (for the
    parameters it holds), the other parameters drawn from their uncertainty distributions."""
    values = space.values(draw_unit(seed, space.names, first, count))
    if posterior is not None:
        rows = posterior.rows(first, count)
        for j, name in enumerate(space.names):
            if name in posterior.names:
                values[:, j] = rows[name]
    return values


@dataclass(frozen=True)
class Posterior:
    """Parameter sets from a file (CSV or Parquet: one column per parameter, one row per set; or the posterior.nc
    of ``mscsim calibrate``; in the data files' units), e.g. a calibration's posterior sample: draw d takes row d."""

    path: str
    names: tuple[str, ...]
    table: object  # pandas.DataFrame
    taus: np.ndarray | None = None  # (rows, 2) tau_trial, tau_cells of a calibration with between-trial effects

    def taus_at(self, index: np.ndarray) -> np.ndarray | None:
        """The between-trial SDs of rows ``index`` (None when the file has none)."""
        return None if self.taus is None else self.taus[np.asarray(index, dtype=int)]

    def rows(self, first: int, count: int):
        if first + count > len(self.table):
            raise InputError("uncertainty.posterior", self.path, f"a file with at least {first + count} rows "
                             f"(one per draw); it has {len(self.table)}")
        return self.table.iloc[first:first + count]


POSTERIOR_DIR = Path(__file__).resolve().parent.parent / "data" / "posteriors"
PRIOR_ONLY = "prior"  # ``posterior: prior``: bands from the data files' priors alone


def bundled_posterior(disease: str | None) -> Path | None:
    """The bundled calibration posterior of a disease (``mscsim calibrate DISEASE``, copied to
    data/posteriors/<disease>.nc), if there is one."""
    path = POSTERIOR_DIR / f"{disease}.nc" if disease else None
    return path if path is not None and path.exists() else None


def run_posterior(posterior: str | None, disease: str | None, space: ParameterSpace, draws: int
                  ) -> "Posterior | None":
    """The posterior a run's bands use: the user's file; none with ``posterior: prior``; by default the disease's
    bundled calibration posterior (for the parameters of this run it holds; the others from their priors)."""
    if posterior == PRIOR_ONLY:
        return None
    if posterior:
        return load_posterior(posterior, space, draws)
    path = bundled_posterior(disease)
    return load_posterior(str(path), space, draws, strict=False) if path else None


def load_posterior(path: str, space: ParameterSpace, draws: int, strict: bool = True) -> Posterior:
    """Read and check a posterior file against the run's uncertain parameters (named columns, finite values,
    inside the bounds, at least ``draws`` rows). Not ``strict`` (a bundled posterior): columns of parameters
    this run does not use are dropped instead of refused."""
    import pandas as pd

    where = "uncertainty.posterior"
    try:
        if str(path).endswith(".nc"):  # an 'mscsim calibrate' posterior: one variable per parameter over 'draw'
            import xarray as xr

            with xr.open_dataset(path) as ds:
                table = pd.DataFrame({name: ds[name].values for name in ds.data_vars if ds[name].dims == ("draw",)})
        else:
            table = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(where, str(path), f"a readable CSV, Parquet or netCDF (mscsim calibrate) file of "
                         f"parameter sets ({exc})") from None
    taus = _between_trial_sds(table, where, path)  # not model parameters: kept apart for new-trial bands
    table = table.drop(columns=[c for c in TAU_COLUMNS if c in table.columns])
    unknown = sorted(set(table.columns) - set(space.names))
    if unknown and not strict:
        table = table.drop(columns=unknown)
    elif unknown:
        raise InputError(where, str(path), f"columns named after this run's uncertain parameters; unknown: {unknown}")
    if len(table) < draws:
        raise InputError(where, str(path), f"at least {draws} rows (uncertainty.draws); it has {len(table)}")
    for name in table.columns:
        col = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
        b = space[name].parameter.bounds
        if not np.isfinite(col).all() or (b and ((col < b[0]) | (col > b[1])).any()):
            raise InputError(f"{where} ({path}), column {name}", "a missing or out-of-range value",
                             f"finite numbers inside the bounds {list(b) if b else '(none)'}")
        table[name] = col
    return Posterior(str(path), tuple(table.columns), table.reset_index(drop=True), taus)


TAU_COLUMNS = ("tau_trial", "tau_cells")  # mscsim calibrate's between-trial SDs (calibration.heterogeneity)


def _between_trial_sds(table, where: str, path: str) -> np.ndarray | None:
    """(rows, 2) the file's between-trial SDs (both columns, finite, >= 0), or None when it has neither."""
    import pandas as pd

    present = [c for c in TAU_COLUMNS if c in table.columns]
    if not present:
        return None
    if len(present) < 2:
        raise InputError(f"{where} ({path})", f"only {present[0]}", f"both {' and '.join(TAU_COLUMNS)} (the "
                         "between-trial SDs of mscsim calibrate), or neither")
    taus = np.column_stack([pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float) for c in TAU_COLUMNS])
    if not (np.isfinite(taus).all() and (taus >= 0).all()):
        raise InputError(f"{where} ({path}), columns {', '.join(TAU_COLUMNS)}", "a missing or negative value",
                         "finite between-trial SDs >= 0")
    return taus
