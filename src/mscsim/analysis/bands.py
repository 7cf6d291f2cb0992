"""Bands: a spread over patients (between-patient variability) or over parameter draws (uncertainty) reduced to
the median and the central 90 % and 95 % intervals.

One function for every spread, so a later ``draw`` dimension (parameter uncertainty) slots in beside
``patient``: ``bands(ds, dim="patient")``, ``bands(ds, dim="draw")`` or both at once. The result is an xarray
Dataset with a ``quantile`` dimension (0.025, 0.05, 0.5, 0.95, 0.975) and attributes saying what was reduced
and over how many members, so a plot or a table can say "median of 50 patients, 90 % of patients in ...".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..display import display
from ..errors import InputError

QUANTILES = (0.025, 0.05, 0.5, 0.95, 0.975)
SPREAD_DIMS = ("draw", "patient")
WHAT = {"patient": "patients", "draw": "parameter draws"}


def spread_dims(obj: xr.Dataset | xr.DataArray, dim: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The dimensions a band is taken over: those asked for, or every spread dimension present."""
    dims = SPREAD_DIMS if dim is None else ((dim,) if isinstance(dim, str) else tuple(dim))
    unknown = [d for d in dims if d not in SPREAD_DIMS and d not in obj.dims]
    if unknown:
        raise InputError("dim", unknown, f"dimensions of the results to take bands over: {list(obj.dims)}")
    return tuple(d for d in dims if d in obj.dims)


def describe(obj: xr.Dataset | xr.DataArray, dims: Iterable[str]) -> str:
    """'50 patients', '20 parameter draws x 50 patients', or 'one patient'."""
    parts = [f"{obj.sizes[d]} {WHAT.get(d, d)}" for d in dims if obj.sizes[d] > 1]
    return " x ".join(parts) if parts else "one patient"


def bands(ds: xr.Dataset, variables: Sequence[str] | None = None, *,
          dim: str | Sequence[str] | None = None) -> xr.Dataset:
    """Median and 90/95 % intervals of ``variables`` (default: every floating-point variable that has a spread
    dimension) over ``dim`` (default: ``draw`` and ``patient``, whichever are present).

    Stage endpoints (whole numbers) take the nearest observed value, so a band never shows stage 2.4."""
    dims = spread_dims(ds, dim)
    if variables is None:
        variables = [v for v in ds.data_vars if set(dims) & set(ds[v].dims) and ds[v].dtype.kind == "f"]
    missing = [v for v in variables if v not in ds]
    if missing:
        raise InputError("variables", missing, f"variables of the results, e.g. {sorted(ds.data_vars)[:10]}")
    out = {}
    for v in variables:
        da = ds[v]
        red = [d for d in dims if d in da.dims]
        method = "nearest" if display(v, da.attrs).kind == "stage" else "linear"
        q = da.quantile(list(QUANTILES), dim=red, method=method) if red else da.expand_dims(quantile=list(QUANTILES))
        out[v] = q.assign_attrs(da.attrs)
    result = xr.Dataset(out)
    result.attrs.update({"reduced_over": ",".join(dims), "members": describe(ds, dims),
                         "quantiles": ",".join(f"{q:g}" for q in QUANTILES)})
    return result


def band_frame(values: np.ndarray) -> dict[str, float]:
    """Median, 90 % and 95 % interval and mean of a 1-D sample, as plain floats (NaN-free sample assumed)."""
    v = np.asarray(values, dtype=float)
    q = np.quantile(v, QUANTILES) if v.size else np.full(len(QUANTILES), np.nan)
    return {"median": float(q[2]), "q05": float(q[1]), "q95": float(q[3]), "q025": float(q[0]),
            "q975": float(q[4]), "mean": float(v.mean()) if v.size else float("nan"), "n": int(v.size)}


def category_shares(codes: np.ndarray, categories: Sequence[str]) -> pd.Series:
    """Share of members in each category (codes 0..k-1), every category listed, in order."""
    codes = np.asarray(codes).astype(int).ravel()
    counts = np.bincount(codes, minlength=len(categories))[:len(categories)]
    return pd.Series(counts / max(len(codes), 1), index=list(categories))
