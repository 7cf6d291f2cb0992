"""Results of a run as a user reads them: the labelled xarray Dataset, the endpoints at their visits with the
statistic they show (median and 90 % of patients, or shares of patients for categories), bands, plots and the
standard output files.

results (xarray, patient x time) -> endpoint table / bands / figures. Nothing here runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .analysis.bands import band_frame, bands, category_shares, describe, spread_dims
from .display import RESPONSE_CATEGORIES, UNTREATED, Display, category_names, display, fmt, fmt_value, pct
from .errors import InputError

ENDPOINT_COLUMNS = ("variable", "label", "units", "kind", "visit", "visit_day", "statistic", "n", "median", "q05",
                    "q95", "q025", "q975", "untreated_median", "untreated_q05", "untreated_q95", "value_text",
                    "untreated_text")


def _visit_name(day: float) -> str:
    return "baseline" if day == 0 else f"day {day:g}"


def _visits(ds: xr.Dataset) -> list[float]:
    td = ds["time_days"].values
    days = [float(v) for v in ds.attrs.get("endpoint_visits_days", "").split(",") if v]
    return [0.0] + [d for d in days if 0 < d <= td[-1] + 1e-9]


def _column(ds: xr.Dataset, name: str, day: float) -> np.ndarray:
    """Every patient's value of ``name`` at the output time nearest ``day`` (flattened over draws too)."""
    da = ds[name]
    if "time" in da.dims:
        i = int(np.argmin(np.abs(ds["time_days"].values - day)))
        da = da.isel(time=i)
    return np.asarray(da.values).ravel()


def _summary(values: np.ndarray, disp: Display, n: int) -> tuple[dict, str]:
    """Statistics of one endpoint at one visit and their display text."""
    stats = band_frame(values)
    if disp.kind in ("binary",):
        share = float(np.mean(values >= 0.5))
        stats.update(median=share, q05=np.nan, q95=np.nan, q025=np.nan, q975=np.nan)
        return stats, (fmt_value(values[0], disp) if n == 1 else pct(share))
    if disp.kind in ("stage", "response"):
        codes = np.rint(values).astype(int)
        stats["median"] = float(np.quantile(codes, 0.5, method="nearest"))
        if n == 1:
            return stats, fmt_value(codes[0], disp)
        names = category_names(disp, range(int(codes.max()) + 1))
        shares = category_shares(codes, names)
        return stats, ", ".join(f"{k} {pct(v)}" for k, v in shares.items() if v > 0)
    text = fmt_value(stats["median"], disp)
    if n > 1 and disp.kind != "count":
        text += f" (90% of patients {fmt_value(stats['q05'], disp)} to {fmt_value(stats['q95'], disp)})"
    return stats, text


def endpoint_table(ds: xr.Dataset) -> pd.DataFrame:
    """Each endpoint at baseline and at its disease's visits (responses at their day), treated beside
    untreated: the median and 90/95 % of patients for continuous endpoints, the share of patients for 0/1
    endpoints, the share in each category for stages and responses (one patient: the value itself)."""
    dims = spread_dims(ds)
    n = int(np.prod([ds.sizes[d] for d in dims])) if dims else 1
    rows = []
    for name, var in ds.data_vars.items():
        kind = var.attrs.get("kind")
        if kind not in ("endpoint", "response") or name.endswith(UNTREATED):
            continue
        disp = display(name, var.attrs)
        if kind == "response":
            disp = Display(label=disp.label, kind="response")
        days = [float(var.attrs["day"])] if kind == "response" else _visits(ds)
        for day in days:
            stats, text = _summary(_column(ds, name, day), disp, n)
            row = {"variable": name, "label": disp.label, "units": disp.units, "kind": disp.kind,
                   "visit": _visit_name(day), "visit_day": day, "n": n,
                   "statistic": _statistic(disp, n, describe(ds, dims)), **{k: stats[k] for k in
                                                                           ("median", "q05", "q95", "q025", "q975")},
                   "value_text": text, "untreated_median": np.nan, "untreated_q05": np.nan, "untreated_q95": np.nan,
                   "untreated_text": ""}
            if f"{name}{UNTREATED}" in ds:
                ustats, utext = _summary(_column(ds, f"{name}{UNTREATED}", day), disp, n)
                row.update(untreated_median=ustats["median"], untreated_q05=ustats["q05"],
                           untreated_q95=ustats["q95"], untreated_text=utext)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(ENDPOINT_COLUMNS))


def _statistic(disp: Display, n: int, members: str) -> str:
    if n == 1:
        return "one patient"
    if disp.categorical:
        return f"share of {members}"
    return f"median of {members}"


def endpoint_lines(ds: xr.Dataset) -> list[str]:
    """The endpoint table as terminal lines: ``pain VAS, day 180 (mm, median of 50 patients): 45.6 (90% of
    patients 38.1 to 55.0)   untreated: 65.6``."""
    lines = []
    for _, r in endpoint_table(ds).iterrows():
        what = ", ".join(x for x in (r["units"], "" if r["n"] == 1 else r["statistic"]) if x)
        visit = "" if r["kind"] == "response" else f", {r['visit']}"
        head = f"{r['label']}{visit}" + (f" ({what})" if what else "")
        line = f"  {head}: {r['value_text']}"
        if r["untreated_text"]:
            line += f"   untreated: {r['untreated_text']}"
        lines.append(line)
    return lines


def viable_line(ds: xr.Dataset) -> str:
    """'viable at end (365 d, median of 50 patients): 1,200 cells (0.0024% of administered)'."""
    dims = spread_dims(ds)
    v = ds["viable_total"].median(dims) if dims else ds["viable_total"]
    adm = float(ds["administered"].max())
    end = float(np.asarray(v)[..., -1].ravel()[0])
    who = "one patient" if not dims or describe(ds, dims) == "one patient" else f"median of {describe(ds, dims)}"
    shown = f"{fmt(end)} cells ({end / adm:.2%} of administered)" if end >= 1 else "fewer than 1 cell"
    return f"viable MSCs at the end ({float(ds['time_days'][-1]):g} d, {who}): {shown}"


@dataclass(frozen=True, eq=False)
class Results:
    """What ``Simulation.run()`` returns: the labelled results (``data``, an xarray Dataset with dims patient x
    time: every state with units, the endpoints and their untreated comparators) and ways to read them. With
    ``uncertainty:`` in the scenario, ``parameter_bands`` holds the parameter draws and the bands they give
    (``mscsim.uncertainty.bands.ScenarioBands``: ``table``, ``per_draw``, ``timecourse``)."""

    data: xr.Dataset
    parameter_bands: object | None = None

    def __getitem__(self, name: str) -> xr.DataArray:
        return self.data[name]

    def __contains__(self, name: str) -> bool:
        return name in self.data

    @property
    def n_patients(self) -> int:
        return int(self.data.sizes["patient"])

    @property
    def has_endpoints(self) -> bool:
        return any(v.attrs.get("kind") in ("endpoint", "response") for v in self.data.data_vars.values())

    def endpoints(self) -> pd.DataFrame:
        """Each endpoint at baseline and its visits, treated and untreated, with the statistic it shows
        (see ``endpoint_table``)."""
        return endpoint_table(self.data)

    def endpoint_lines(self) -> list[str]:
        return endpoint_lines(self.data)

    def bands(self, variables: list[str] | None = None) -> xr.Dataset:
        """Median and 90/95 % intervals over patients (and parameter draws, when present) of ``variables``
        (default: every floating-point variable): a Dataset with a ``quantile`` dimension."""
        return bands(self.data, variables)

    def summary(self) -> pd.DataFrame:
        """One row per patient: dose, potent dose at the target, where the cells are at key times, and each
        endpoint at its visits (the table written to summary.csv)."""
        from .io.outputs import summary_table

        return summary_table(self.data)

    def plot(self, kind: str = "auto", path: str | Path | None = None):
        """A matplotlib Figure: ``cells`` (where the cells are and what became of them) or ``tissue`` (MSCs,
        cytokines, immune cells and the endpoints against the untreated course); ``auto`` picks ``tissue``
        for a disease run. With ``path`` it is also saved there (PNG, SVG or PDF by the suffix)."""
        from .report.plots import cell_fate_figure, tissue_response_figure

        if kind == "auto":
            kind = "tissue" if self.has_endpoints else "cells"
        draw = {"cells": cell_fate_figure, "tissue": tissue_response_figure}.get(kind)
        if draw is None:
            raise InputError("kind", kind, "'auto', 'cells' or 'tissue'")
        return draw(self.data, path, bands=self._curves())

    def _curves(self) -> xr.Dataset | None:
        return None if self.parameter_bands is None else self.parameter_bands.timecourse

    def save(self, out: str | Path, *, scenario_path: str | None = None) -> Path:
        """Write results.nc, summary.csv, the figures (PNG, SVG and PDF) and manifest.json into ``out``
        (atomically: all or nothing), as ``mscsim simulate`` does; with parameter bands also bands.csv, draws.csv
        and draws.nc, and band columns in summary.csv."""
        from functools import partial

        from .io.outputs import write_results
        from .report.plots import cell_fate_figure, imaging_figure, tissue_response_figure

        curves = self._curves()
        extra = {"tissue_response": partial(tissue_response_figure, bands=curves)} if self.has_endpoints else {}
        if "label" in self.data.attrs:
            extra["imaging"] = imaging_figure
        return write_results(self.data, out, scenario_path=scenario_path, figure=partial(cell_fate_figure, bands=curves),
                             figures=extra, bands=self.parameter_bands)

    def to_netcdf(self, path: str | Path) -> Path:
        self.data.to_netcdf(path)
        return Path(path)

    def __repr__(self) -> str:
        title = self.data.attrs.get("title", "mscsim results")
        lines = [f"<Results {title}: {self.n_patients} patient(s), {self.data.sizes['time']} time points>"]
        return "\n".join(lines + (self.endpoint_lines() if self.has_endpoints else [viable_line(self.data)]))

    def _repr_html_(self) -> str:
        import html

        table = self.endpoints() if self.has_endpoints else None
        head = f"<p><b>{html.escape(self.data.attrs.get('title', 'mscsim results'))}</b>: {self.n_patients} " \
               f"patient(s); {html.escape(viable_line(self.data))}</p>"
        if table is None or table.empty:
            return head
        cols = ["label", "visit", "units", "statistic", "value_text", "untreated_text"]
        return head + table[cols].rename(columns={"value_text": "treated", "untreated_text": "untreated"}) \
            .to_html(index=False)


__all__ = ["Results", "endpoint_table", "endpoint_lines", "viable_line", "RESPONSE_CATEGORIES"]
