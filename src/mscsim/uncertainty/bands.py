"""Bands on a scenario's predictions: the median and the 90 % and 95 % intervals of every summary quantity,
kept apart by source - parameter uncertainty (across parameter draws, for the scenario's patients), between-patient
variability (across the scenario's patients at the nominal parameters) and both together.

The draws run through the batched solver a chunk of parameter sets at a time (each set a block of rows of one
problem); a set's numbers do not depend on its chunk, so the bands are the same for any chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from ..io.outputs import summary_table
from ..io.scenario import Scenario
from .draws import Draws, parameter_draws
from .evaluate import run_sets, scenario_space
from .priors import run_posterior

QUANTILES = {"median": 0.5, "low90": 0.05, "high90": 0.95, "low95": 0.025, "high95": 0.975}
SOURCES = ("parameter uncertainty", "between-patient variability", "both")
NOT_BANDED = ("patient", "dose_cells")  # bookkeeping, not predictions
TIMECOURSE = ("viable_total", "msc_target")  # besides the endpoints, drawn per draw over time
SETS_PER_CHUNK = 64


def quantiles(values) -> dict[str, float]:
    """Median and 90 %/95 % interval of the finite values (NaN when there are none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return {k: np.nan for k in QUANTILES}
    q = np.quantile(v, list(QUANTILES.values()))
    return dict(zip(QUANTILES, map(float, q)))


@dataclass
class ScenarioBands:
    """A scenario's parameter draws and the bands they give."""

    draws: Draws
    per_draw: pd.DataFrame  # one row per (draw, patient): the summary quantities under that draw
    timecourse: xr.Dataset  # (draw, time): median patient of each endpoint and of viable cells, per draw
    table: pd.DataFrame  # quantity, source, n, median, low90, high90, low95, high95
    failed: int  # draws whose integration failed (left out)

    def patient_columns(self) -> pd.DataFrame:
        """Per patient, each quantity's median and intervals across draws (columns X_median, X_low90, ...)."""
        cols = [c for c in _numeric(self.per_draw) if c not in ("draw", *NOT_BANDED)]
        rows = []
        for patient, g in self.per_draw.groupby("patient", sort=True):
            row = {"patient": patient}
            for c in cols:
                row.update({f"{c}_{k}": v for k, v in quantiles(g[c]).items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def headline(self, name: str) -> dict[str, float]:
        """The parameter-uncertainty band of a quantity (for the terminal)."""
        r = self.table[(self.table["quantity"] == name) & (self.table["source"] == SOURCES[0])]
        return r.iloc[0].to_dict() if len(r) else {}


def _numeric(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


def simulate_bands(scenario: Scenario, nominal: xr.Dataset | None = None, *, progress=None,
                   screening=None) -> ScenarioBands:
    """Draw ``scenario.uncertainty.draws`` parameter sets and simulate the scenario's patients under each;
    ``nominal`` (the run at the nominal parameters) gives the between-patient band. ``screening(done, total)``
    reports the conditioning of the draws, ``progress(done, total)`` the draws simulated."""
    spec = scenario.uncertainty
    space = scenario_space(scenario, spec.priors)
    posterior = run_posterior(spec.posterior, scenario.disease, space, spec.draws)
    draws = parameter_draws(scenario, space, scenario.seed, spec.draws, posterior=posterior,
                            condition=spec.condition, progress=screening)
    size = scenario.population.size
    per_chunk = max(1, min(SETS_PER_CHUNK, scenario.solver.chunk_size // size))
    frames, curves, failed = [], [], 0
    for lo in range(0, len(draws.index), per_chunk):
        hi = min(lo + per_chunk, len(draws.index))
        run = run_sets(scenario, space, draws.values[lo:hi])
        ds = run.dataset()
        table = summary_table(ds)
        table.insert(0, "draw", draws.index[lo:hi][run.set_of_row()])
        table["patient"] = ds["patient_id"].values
        ok = ~run.failed[run.set_of_row()]
        frames.append(table[ok])
        failed += int(run.failed.sum())
        names = [v for v in ds.data_vars if ds[v].attrs.get("kind") == "endpoint"] + list(TIMECOURSE)
        curve = {n: np.nanmedian(ds[n].values.reshape(hi - lo, size, -1), axis=1) for n in names}
        curves.append((draws.index[lo:hi], curve, ds["time_days"].values, {n: ds[n].attrs for n in names}))
        if progress is not None:
            progress(hi, len(draws.index))
    per_draw = pd.concat(frames, ignore_index=True)
    timecourse = _timecourse(curves, draws)
    return ScenarioBands(draws, per_draw, timecourse, band_table(per_draw, nominal), failed)


def _timecourse(curves, draws: Draws) -> xr.Dataset:
    keys = np.concatenate([c[0] for c in curves])
    t = curves[0][2]
    data = {}
    for name, attrs in curves[0][3].items():
        data[name] = (("draw", "time"), np.concatenate([c[1][name] for c in curves]),
                      {k: v for k, v in attrs.items() if isinstance(v, (str, int, float))})
    ds = xr.Dataset(data, coords={"draw": keys, "time_days": ("time", t, {"units": "d"})})
    ds["parameter_value"] = (("draw", "parameter"), draws.values,
                             {"long_name": "the draw's value of each uncertain parameter (data-file units)"})
    ds = ds.assign_coords(parameter=list(draws.space.names),
                          parameter_units=("parameter", [p.parameter.units for p in draws.space.parameters]))
    return ds


def band_table(per_draw: pd.DataFrame, nominal: xr.Dataset | None = None) -> pd.DataFrame:
    """Each quantity's median and 90 %/95 % intervals by source: across draws of the patients' median (parameter
    uncertainty), across the nominal run's patients (between-patient variability) and across all (both)."""
    cols = [c for c in _numeric(per_draw) if c not in ("draw", *NOT_BANDED)]
    by_draw = per_draw.groupby("draw", sort=True)[cols].median()
    base = summary_table(nominal) if nominal is not None and nominal.sizes["patient"] > 1 else None
    rows = []
    for c in cols:
        rows.append({"quantity": c, "source": SOURCES[0], "n": int(by_draw[c].notna().sum()), **quantiles(by_draw[c])})
        if base is not None and c in base:
            rows.append({"quantity": c, "source": SOURCES[1], "n": int(base[c].notna().sum()), **quantiles(base[c])})
        if per_draw["patient"].nunique() > 1:
            rows.append({"quantity": c, "source": SOURCES[2], "n": int(per_draw[c].notna().sum()),
                         **quantiles(per_draw[c])})
    return pd.DataFrame(rows, columns=["quantity", "source", "n", *QUANTILES])
