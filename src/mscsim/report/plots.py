"""Figures: where the cells are over time (viable by compartment, and the fate of all administered cells)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

_VIABLE = ["msc_venous", "msc_arterial", "msc_lung", "msc_liver", "msc_spleen", "msc_other", "msc_target",
           "msc_offtarget", "msc_engrafted"]
_FATE = {"viable": None, "debris, lung": ["debris_lung"], "debris, liver": ["debris_liver"],
         "debris, spleen": ["debris_spleen"], "debris, target/local": ["debris_target", "debris_offtarget"],
         "debris, blood/other": ["debris_blood", "debris_other"], "cleared": ["cleared"]}


def cell_fate_figure(ds: xr.Dataset, path: str | Path, patient: int | None = None,
                     bands: xr.Dataset | None = None) -> Path:
    """Two panels against time (days, log axis): viable cells per compartment, and the share of all
    administered cells that is viable, debris per organ, or cleared. Median patient when several. ``bands``
    (draw x time, from parameter draws) shades the 90 % interval of viable cells at the site and in total."""
    sel = ds.median("patient") if patient is None and ds.sizes["patient"] > 1 else ds.isel(patient=patient or 0)
    t = ds["time_days"].values
    mask = t > 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    for name in _VIABLE:
        if name in sel and float(sel[name].max()) > 0:
            y = sel[name].values[mask]
            line, = ax1.plot(t[mask], np.where(y > 0, y, np.nan), label=name.removeprefix("msc_"))
            if bands is not None and name == "msc_target" and name in bands:
                _band(ax1, bands, name, t, mask, line.get_color(), "target, 90% of parameter draws")
    if bands is not None and "viable_total" in bands:
        _band(ax1, bands, "viable_total", t, mask, "0.4", "all viable, 90% of parameter draws")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    adm = float(sel["administered"].max())
    ax1.set_ylim(max(adm * 1e-7, 1e-3), adm * 2)
    ax1.set_xlabel("days after first dose")
    ax1.set_ylabel("viable MSCs (cells)")
    ax1.set_title("Viable cells by compartment")
    ax1.legend(fontsize=8, loc="lower left")
    total = np.maximum(sel["administered"].values, 1e-300)
    stacks, labels = [], []
    for label, names in _FATE.items():
        arr = sel["viable_total"].values if names is None else sum(sel[n].values for n in names)
        stacks.append(arr[mask] / total[mask])
        labels.append(label)
    ax2.stackplot(t[mask], *stacks, labels=labels)
    ax2.set_xscale("log")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("days after first dose")
    ax2.set_ylabel("share of administered cells")
    ax2.set_title("Fate of administered cells (label follows debris)")
    ax2.legend(fontsize=8, loc="upper left")
    fig.suptitle(ds.attrs.get("title", "mscsim"), fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_CYTOKINES = ["tnf", "il1b", "il6", "ifng", "il10", "tgfb"]
_IMMUNE = ["m1", "m2", "teff", "treg", "nk", "dc"]


def tissue_response_figure(ds: xr.Dataset, path: str | Path, patient: int | None = None,
                           bands: xr.Dataset | None = None) -> Path:
    """Four panels against days, treated (solid) beside untreated (dashed): MSCs (viable, at the site),
    cytokines (relative to their value at the first dose), immune cells, and the disease's endpoints.
    ``bands`` (draw x time, from parameter draws) shades each endpoint's 90 % interval, treated and untreated."""
    sel = ds.median("patient") if patient is None and ds.sizes["patient"] > 1 else ds.isel(patient=patient or 0)
    t = ds["time_days"].values
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), constrained_layout=True)
    ax = axes[0, 0]
    for name, label in (("viable_total", "viable, all compartments"), ("msc_target", "viable at the site"),
                        ("debris_total", "debris, all compartments")):
        y = sel[name].values
        ax.plot(t, np.where(y > 1e-3, y, np.nan), label=label)
    ax.set_yscale("log")
    ax.set_ylabel("cells")
    ax.set_title("MSCs")
    ax.legend(fontsize=8)
    _paired(axes[0, 1], sel, t, _CYTOKINES, relative=True)
    axes[0, 1].set_ylabel("relative to the value at the first dose")
    axes[0, 1].set_title("Cytokines at the lesion")
    _paired(axes[1, 0], sel, t, _IMMUNE, relative=False)
    axes[1, 0].set_ylabel("relative density (1 = inflamed reference)")
    axes[1, 0].set_title("Immune cells at the lesion")
    endpoints = [v for v in ds.attrs.get("endpoint_plot", "").split(",") if v in sel]
    ax = axes[1, 1]
    twin = None
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]  # one cycle over both axes: no repeated colour
    for i, name in enumerate(endpoints):
        units = ds[name].attrs.get("units", "")
        target = ax if i == 0 or units == ds[endpoints[0]].attrs.get("units") else (twin or ax.twinx())
        if target is not ax:
            twin = target
        colour = colours[i % len(colours)]
        target.plot(t, sel[name].values, label=f"{name} ({units})", color=colour)
        if f"{name}_untreated" in sel:
            target.plot(t, sel[f"{name}_untreated"].values, ls="--", color=colour)
        if bands is not None and name in bands:  # treated only: the untreated band is in bands.csv
            _band(target, bands, name, t, np.ones_like(t, dtype=bool), colour, None, alpha=0.15)
    if endpoints:
        ax.set_ylabel(f"{endpoints[0]} ({ds[endpoints[0]].attrs.get('units', '')})")
    ax.set_title("Endpoints (dashed: untreated" + ("; shaded: 90% of parameter draws, treated)" if bands is not None else ")"))
    handles = ax.get_legend_handles_labels()[0] + (twin.get_legend_handles_labels()[0] if twin else [])
    if handles:
        ax.legend(handles=handles, fontsize=8)
    for a in axes.ravel():
        a.set_xlabel("days after first dose")
    fig.suptitle(ds.attrs.get("title", "mscsim") + "  (solid: treated, dashed: untreated)", fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _paired(ax, sel: xr.Dataset, t: np.ndarray, names: list[str], *, relative: bool) -> None:
    for name in names:
        if name not in sel:
            continue
        y, u = sel[name].values, sel[f"{name}_untreated"].values if f"{name}_untreated" in sel else None
        ref = y[0] if relative and abs(y[0]) > 0 else 1.0
        line, = ax.plot(t, y / ref, label=name)
        if u is not None:
            ax.plot(t, u / ref, ls="--", color=line.get_color())
    ax.legend(fontsize=8, ncol=2)


def _band(ax, bands: xr.Dataset, name: str, t: np.ndarray, mask: np.ndarray, colour, label, alpha: float = 0.2):
    """Shade the 5th-95th percentile across parameter draws of ``name`` (draw x time, on the same time grid)."""
    v = bands[name].values
    if v.shape[-1] != len(t):
        return
    lo, hi = np.nanpercentile(v, [5, 95], axis=0)
    if ax.get_yscale() == "log" or name in ("viable_total", "msc_target"):
        lo, hi = np.where(lo > 0, lo, np.nan), np.where(hi > 0, hi, np.nan)
    ax.fill_between(t[mask], lo[mask], hi[mask], color=colour, alpha=alpha, lw=0, label=label)
