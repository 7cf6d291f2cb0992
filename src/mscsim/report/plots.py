"""Figures of one run, fit for a slide: where the cells are over time and what became of them, and the tissue
response (MSCs, cytokines, immune cells, endpoints) against the untreated course.

Every axis carries a readable name and units (``mscsim.display``); counts are floored at one cell; stages and
responses are drawn as categories; with more than one patient each line is the median and its band holds 90 %
of patients. Layouts are constrained (no clipped labels). Each function returns the matplotlib Figure and, given
a path, saves it; ``save_figure`` writes PNG, SVG and PDF side by side.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..analysis.bands import describe, spread_dims  # noqa: E402
from ..display import UNTREATED, category_names, display, scaled  # noqa: E402
from ..endpoints.evaluate import RESPONSE_CODES  # noqa: E402

FORMATS = ("png", "svg", "pdf")
DPI = 150
_VIABLE = ["msc_lung", "msc_liver", "msc_spleen", "msc_other", "msc_venous", "msc_arterial", "msc_target",
           "msc_offtarget", "msc_engrafted"]
_FATE = {"viable MSCs": ["viable_total"], "debris, lung": ["debris_lung"], "debris, liver": ["debris_liver"],
         "debris, spleen": ["debris_spleen"], "debris at the site": ["debris_target", "debris_offtarget"],
         "debris, blood, bone marrow and other organs": ["debris_blood", "debris_other", "debris_marrow"],
         "cleared": ["cleared"]}
_CYTOKINES = ["tnf", "il1b", "il6", "ifng", "il10", "tgfb"]
_IMMUNE = ["m1", "m2", "teff", "treg", "nk", "dc"]
_COLOURS = plt.get_cmap("tab10").colors
BAND_NOTE = "line: median; band: 90% of patients"


def save_figure(fig: Figure, path: str | Path, formats: tuple[str, ...] | None = None, *,
                make_folder: bool = True) -> list[Path]:
    """Save ``fig`` at ``path``: with a suffix (``.png``, ``.svg``, ``.pdf``) in that format only; without one,
    or with ``formats`` given, in each format beside it (``cell_fate.png``, ``cell_fate.svg``, ...). The folder
    is created unless ``make_folder`` is False (then a missing folder is an error)."""
    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    if formats is None:
        formats = (suffix,) if suffix in FORMATS else FORMATS
    stem = path.with_suffix("") if suffix in FORMATS else path
    if make_folder:
        stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    engine = fig.get_layout_engine()
    try:
        for k, f in enumerate(formats):
            target = stem.with_name(f"{stem.name}.{f}")
            fig.savefig(target, dpi=DPI, metadata={"Creator": "mscsim"} if f in ("png", "pdf", "svg") else None)
            written.append(target)
            if k == 0 and engine is not None:
                # the layout is solved once, by the first save; later formats reuse it (constrained layout
                # measures every label again on each save, the larger part of the time a figure takes)
                fig.set_layout_engine("none")
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
    return written


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
        plt.close(fig)
    return fig


def _matrix(da: xr.DataArray, dims: tuple[str, ...]) -> np.ndarray:
    """(members, time) values of a variable: every patient (and draw) as a row."""
    if not dims:
        return np.atleast_2d(np.asarray(da.values, dtype=float))
    other = [d for d in da.dims if d not in dims]
    return np.asarray(da.transpose(*dims, *other).values, dtype=float).reshape(-1, da.sizes["time"])


def _line_band(ax, t: np.ndarray, rows: np.ndarray, *, colour, ls="-", label=None, band=True, alpha=0.18,
               method="linear", step=False, floor: float | None = None):
    """The median of ``rows`` (members x time) against ``t``, with the 5-95 % band when there are several;
    values below ``floor`` (one cell, for counts) are not drawn."""
    if rows.shape[0] == 1:
        y = rows[0]
        lo = hi = None
    else:
        lo, y, hi = np.quantile(rows, [0.05, 0.5, 0.95], axis=0, method=method)
    if floor is not None:
        y = np.where(y >= floor, y, np.nan)
        if lo is not None:
            hi = np.where(hi >= floor, hi, np.nan)
            lo = np.where(np.isnan(hi), np.nan, np.maximum(lo, floor))
    draw = ax.step if step else ax.plot
    kwargs = {"where": "post"} if step else {}
    line, = draw(t, y, ls=ls, color=colour, label=label, lw=1.6, **kwargs)
    if band and lo is not None:
        ax.fill_between(t, lo, hi, color=colour, alpha=alpha, lw=0, step="post" if step else None)
    return line


_TIME_TICKS = ((1 / 1440, "1 min"), (10 / 1440, "10 min"), (1 / 24, "1 h"), (6 / 24, "6 h"), (1, "1 d"),
               (7, "1 wk"), (28, "4 wk"), (91, "3 mo"), (365, "1 y"), (730, "2 y"))


PARAM_BAND = "hatched: 90% of parameter draws"


def _param_band(ax, bands: xr.Dataset | None, name: str, t: np.ndarray, mask: np.ndarray, colour, *,
                label: str | None = None, transform=None) -> bool:
    """Hatch the 5-95 % range across parameter draws of ``name`` (``bands``: draw x time on the figure's time
    grid, from ``mscsim.uncertainty.bands``), kept apart from the between-patient band, which is shaded."""
    if bands is None or name not in bands:
        return False
    v = np.asarray(bands[name].values, dtype=float)
    if v.ndim != 2 or v.shape[-1] != len(t) or not np.isfinite(v).any():
        return False
    lo, hi = np.nanpercentile(v, [5, 95], axis=0)
    if transform is not None:
        lo, hi = transform(lo), transform(hi)
    if ax.get_yscale() == "log":
        lo, hi = np.where(lo > 0, lo, np.nan), np.where(hi > 0, hi, np.nan)
    ax.fill_between(t[mask], lo[mask], hi[mask], facecolor="none", edgecolor=colour, hatch="////", lw=0.0,
                    alpha=0.7, label=label)
    return True


def log_count_axis(ax) -> None:
    """A log y axis of counts labelled 0.01, 0.1, 1, 10, 100, 1000, 10⁴, 10⁵, ... in plain text (no mathtext: the default labels'
    TeX parsing costs each process about 0.2 s of drawing), decades only: no unlabelled minor ticks (as the time
    axes; measuring their dozens of empty labels was a sixth of the tissue-response figure's drawing time)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10.0))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_power_of_ten))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(v: float, _pos=None) -> str:
    if not (v > 0 and math.isfinite(v)):
        return ""
    k = round(math.log10(v))
    if abs(v / 10.0 ** k - 1.0) > 1e-9:
        return f"{v:g}"
    return f"{10.0 ** k:g}" if -2 <= k <= 3 else "10" + str(k).translate(_SUPERSCRIPT)


def log_time_axis(ax, t_min: float, t_max: float) -> None:
    """A log axis of days after dosing labelled as people say it (1 min, 1 h, 1 d, 1 wk, ...)."""
    ax.set_xscale("log")
    ticks = [(v, lab) for v, lab in _TIME_TICKS if t_min <= v <= t_max * 1.001]
    ax.set_xticks([v for v, _ in ticks], [lab for _, lab in ticks])
    ax.minorticks_off()
    ax.set_xlim(t_min, t_max)
    ax.set_xlabel("time after first dose (log scale)")


def _title(ds: xr.Dataset) -> str:
    sc = ds.attrs.get("title", "mscsim").removeprefix("mscsim results: ")
    dims = spread_dims(ds)
    members = describe(ds, dims)
    return f"{sc} ({members})" if members != "one patient" else f"{sc} (one patient)"


# ---------------------------------------------------------------- cell kinetics

def cell_fate_figure(ds: xr.Dataset, path: str | Path | None = None, *, bands: xr.Dataset | None = None) -> Figure:
    """Two panels against days after the first dose (log axis): viable MSCs in each compartment (log axis,
    from one cell up), and the share of all administered cells that is viable, debris in each organ, or cleared
    (mean over patients, so the shares add up to 100 %). ``bands`` (draw x time, from parameter draws) hatches
    the 90 % range of viable cells in total and at the site across the draws."""
    dims = spread_dims(ds)
    t = ds["time_days"].values
    mask = t > 0
    several = bool(dims) and describe(ds, dims) != "one patient"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.8), layout="constrained")
    k = 0
    top = 1.0
    for name in _VIABLE:
        if name not in ds:
            continue
        rows = _matrix(ds[name], dims)[:, mask]
        if not np.nanmax(rows) >= 1.0:
            continue
        label = display(name).label.removeprefix("viable MSCs, ").removeprefix("viable MSCs ")
        _line_band(ax1, t[mask], rows, colour=_COLOURS[k % 10], label=label, floor=1.0)
        top = max(top, float(np.nanmax(rows)))
        k += 1
    log_count_axis(ax1)
    drew = _param_band(ax1, bands, "viable_total", t, mask, "#57606a", label=f"all viable MSCs, {PARAM_BAND}")
    drew |= _param_band(ax1, bands, "msc_target", t, mask, "#cf222e", label=f"at the site, {PARAM_BAND}")
    log_time_axis(ax1, t[mask][0], t[mask][-1])
    ax1.set_ylim(1.0, top * 3)
    ax1.set_ylabel("viable MSCs (cells)")
    ax1.set_title("Viable MSCs by compartment" + (f"  ({BAND_NOTE})" if several else ""), fontsize=10, loc="left")
    ax1.grid(alpha=0.3, lw=0.5)
    if k or drew:
        ax1.legend(fontsize=8, loc="lower left", title="viable MSCs in", title_fontsize=8)
    adm = np.maximum(_matrix(ds["administered"], dims)[:, mask], 1e-300)
    stacks, labels = [], []
    for label, names in _FATE.items():
        present = [n for n in names if n in ds]
        if not present:
            continue
        amount = sum(_matrix(ds[n], dims)[:, mask] for n in present)
        if not np.any(amount > 0):
            continue
        stacks.append(100.0 * np.mean(amount / adm, axis=0))
        labels.append(label)
    ax2.stackplot(t[mask], *stacks, labels=labels, colors=[_COLOURS[i % 10] for i in range(len(stacks))])
    log_time_axis(ax2, t[mask][0], t[mask][-1])
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("share of administered cells (%)")
    ax2.set_title("Fate of the administered cells" + (" (mean of patients)" if several else ""), fontsize=10,
                  loc="left")
    ax2.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    import textwrap

    fig.suptitle(textwrap.fill(_title(ds), 120), fontsize=11)
    return _finish(fig, path)


def imaging_figure(ds: xr.Dataset, path: str | Path | None = None) -> Figure:
    """What imaging sees: each organ's share of the label's injected activity against days after the injection
    (log axis), decay-corrected (left) and as a camera counts it, not decay-corrected (right); the median of the
    patients with their 5-95 % band."""
    dims = spread_dims(ds)
    t = ds["time_days"].values
    mask = t > 0
    organs = [n for n, v in ds.data_vars.items() if v.attrs.get("kind") == "imaging" and v.attrs.get("decay_corrected")]
    label = ds.attrs.get("label", "label")
    half = float(ds.attrs.get("label_half_life_h", np.nan))
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.8), layout="constrained", sharey=True)
    for ax, corrected in zip(axes, (True, False)):
        k = 0
        for name in organs:
            rows = _matrix(ds[name if corrected else f"{name}_not_decay_corrected"], dims)[:, mask]
            if not np.nanmax(rows) >= 0.5:  # an organ that never holds 0.5 % of the activity is not drawn
                continue
            _line_band(ax, t[mask], rows, colour=_COLOURS[organs.index(name) % 10], label=ds[name].attrs["organ"])
            k += 1
        log_time_axis(ax, t[mask][0], t[mask][-1])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3, lw=0.5)
        how = ("decay-corrected to the injection" if corrected
               else f"not decay-corrected (what the camera counts; half-life {half / 24.0:.3g} d)")
        ax.set_title(f"{label}: {how}", fontsize=10, loc="left")
        if k:
            ax.legend(fontsize=8, loc="upper right", title="organ", title_fontsize=8)
    axes[0].set_ylabel("share of injected activity (%)")
    import textwrap

    fig.suptitle(textwrap.fill(f"What imaging sees: {_title(ds)}", 120), fontsize=11)
    return _finish(fig, path)


# ---------------------------------------------------------------- tissue response

def _paired(ax, ds: xr.Dataset, dims, t: np.ndarray, names: list[str], *, relative: bool) -> None:
    k = 0
    for name in names:
        if name not in ds:
            continue
        rows = _matrix(ds[name], dims)
        unt = _matrix(ds[f"{name}{UNTREATED}"], dims) if f"{name}{UNTREATED}" in ds else None
        ref = np.where(np.abs(rows[:, :1]) > 0, rows[:, :1], 1.0) if relative else 1.0
        colour = _COLOURS[k % 10]
        _line_band(ax, t, rows / ref, colour=colour, label=display(name).label, alpha=0.12)
        if unt is not None:
            _line_band(ax, t, unt / ref, colour=colour, ls="--", band=False)
        k += 1
    if k:
        ax.legend(fontsize=7.5, ncol=2, framealpha=0.85)
    ax.grid(alpha=0.3, lw=0.5)


def _endpoint_panel(ax, ds: xr.Dataset, dims, t: np.ndarray, name: str, bands: xr.Dataset | None = None) -> None:
    """One endpoint against days: continuous as median and band, stages on a categorical axis, 0/1 endpoints
    as the share of patients (the value itself for one patient); untreated dashed."""
    disp = display(name, ds[name].attrs)
    rows = _matrix(ds[name], dims)
    unt = _matrix(ds[f"{name}{UNTREATED}"], dims) if f"{name}{UNTREATED}" in ds else None
    treated, untreated = _COLOURS[0], "#57606a"
    if disp.kind == "stage":
        cats = category_names(disp, range(5))
        _line_band(ax, t, np.rint(rows), colour=treated, label="treated", method="nearest", step=True)
        if unt is not None:
            _line_band(ax, t, np.rint(unt), colour=untreated, ls="--", label="untreated", method="nearest",
                       step=True, alpha=0.10)
        ax.set_yticks(range(len(cats)), cats)
        ax.set_ylim(-0.4, len(cats) - 0.6)
        ax.set_ylabel(disp.label)
    elif disp.kind == "binary":
        if rows.shape[0] == 1:
            ax.step(t, rows[0], where="post", color=treated, label="treated")
            if unt is not None:
                ax.step(t, unt[0], where="post", color=untreated, ls="--", label="untreated")
            ax.set_yticks([0, 1], ["no", "yes"])
            ax.set_ylim(-0.1, 1.1)
            ax.set_ylabel(disp.label)
        else:
            ax.plot(t, 100 * np.mean(rows >= 0.5, axis=0), color=treated, label="treated")
            if unt is not None:
                ax.plot(t, 100 * np.mean(unt >= 0.5, axis=0), color=untreated, ls="--", label="untreated")
            ax.set_ylim(0, 100)
            ax.set_ylabel(f"{disp.label}, share of patients (%)")
    elif disp.kind == "count":
        _line_band(ax, t, rows, colour=treated, label="treated", floor=1.0)
        if unt is not None:
            _line_band(ax, t, unt, colour=untreated, ls="--", label="untreated", alpha=0.10, floor=1.0)
        log_count_axis(ax)
        ax.set_ylabel(disp.axis_label())
    else:
        _line_band(ax, t, scaled(rows, disp), colour=treated, label="treated")
        _param_band(ax, bands, name, t, np.ones_like(t, dtype=bool), treated, label=f"treated, {PARAM_BAND}",
                    transform=lambda v: scaled(v, disp))
        if unt is not None:
            _line_band(ax, t, scaled(unt, disp), colour=untreated, ls="--", label="untreated", alpha=0.10)
        ax.set_ylabel(disp.axis_label())
    ax.set_title(disp.label, fontsize=10, loc="left")
    ax.set_xlabel("days after first dose")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, lw=0.5)


def _response_panel(ax, ds: xr.Dataset, name: str) -> None:
    """A categorical response (complete / partial / none / progression): share of patients in each category,
    treated beside untreated."""
    cats = list(RESPONSE_CODES)
    x = np.arange(len(cats))
    for i, (var, label, colour) in enumerate(((name, "treated", _COLOURS[0]),
                                              (f"{name}{UNTREATED}", "untreated", "#8c959f"))):
        if var not in ds:
            continue
        codes = np.asarray(ds[var].values).astype(int).ravel()
        share = 100 * np.bincount(codes, minlength=len(cats))[:len(cats)] / max(codes.size, 1)
        ax.bar(x + (i - 0.5) * 0.38, share, width=0.38, color=colour, label=label)
    ax.set_xticks(x, cats)
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of patients (%)")
    day = ds[name].attrs.get("day")
    ax.set_title(f"{display(name, ds[name].attrs).label}" + (f" (day {float(day):g})" if day else ""), fontsize=10,
                 loc="left")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y", lw=0.5)


def tissue_response_figure(ds: xr.Dataset, path: str | Path | None = None, *,
                           bands: xr.Dataset | None = None) -> Figure:
    """Panels against days after the first dose, treated (solid) beside untreated (dashed): MSCs (viable, at
    the site, debris; from one cell up), cytokines (fold change from the first dose), immune cells (relative
    to the inflamed reference), then each endpoint the disease's file lists for plotting and its responses."""
    dims = spread_dims(ds)
    t = ds["time_days"].values
    several = bool(dims) and describe(ds, dims) != "one patient"
    endpoints = [v for v in ds.attrs.get("endpoint_plot", "").split(",") if v in ds]
    responses = [v for v, da in ds.data_vars.items() if da.attrs.get("kind") == "response"
                 and not v.endswith(UNTREATED)]
    lower = endpoints + responses
    ncols = max(3, len(lower))
    fig = plt.figure(figsize=(4.6 * ncols, 8.4), layout="constrained")
    grid = fig.add_gridspec(2, ncols)
    ax = fig.add_subplot(grid[0, 0])
    for k, name in enumerate(("viable_total", "msc_target", "debris_total")):
        rows = _matrix(ds[name], dims)
        lab = {"viable_total": "viable, all compartments", "msc_target": "viable, at the lesion",
               "debris_total": "debris, all compartments"}[name]
        _line_band(ax, t, rows, colour=_COLOURS[k], label=lab, floor=1.0)
    log_count_axis(ax)
    peak = float(np.nanmax(_matrix(ds["administered"], dims)))
    ax.set_ylim(1.0, max(peak, 10.0) * 3)
    ax.set_ylabel("MSCs (cells)")
    ax.set_title("MSCs", fontsize=10, loc="left")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, lw=0.5)
    ax = fig.add_subplot(grid[0, 1])
    _paired(ax, ds, dims, t, _CYTOKINES, relative=True)
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # 1, 2, 5 labelled: no unlabelled ticks between
    ax.set_ylabel("fold change from the first dose (x, log scale)")
    ax.set_title("Cytokines at the lesion", fontsize=10, loc="left")
    ax = fig.add_subplot(grid[0, 2])
    _paired(ax, ds, dims, t, _IMMUNE, relative=False)
    ax.set_ylabel("density (x inflamed reference)")
    ax.set_title("Immune cells at the lesion", fontsize=10, loc="left")
    for i, name in enumerate(lower):
        ax = fig.add_subplot(grid[1, i])
        if name in responses:
            _response_panel(ax, ds, name)
        else:
            _endpoint_panel(ax, ds, dims, t, name, bands)
    for a in fig.axes[:3]:
        a.set_xlabel("days after first dose")
    note = "solid: treated, dashed: untreated" + (f"; {BAND_NOTE}" if several else "") \
        + (f"; {PARAM_BAND}" if bands is not None else "")
    import textwrap

    fig.suptitle(f"{textwrap.fill(_title(ds), int(40 * ncols))}\n{note}", fontsize=11)
    return _finish(fig, path)
