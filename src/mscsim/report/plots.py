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


def cell_fate_figure(ds: xr.Dataset, path: str | Path, patient: int | None = None) -> Path:
    """Two panels against time (days, log axis): viable cells per compartment, and the share of all
    administered cells that is viable, debris per organ, or cleared. Median patient when several."""
    sel = ds.median("patient") if patient is None and ds.sizes["patient"] > 1 else ds.isel(patient=patient or 0)
    t = ds["time_days"].values
    mask = t > 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    for name in _VIABLE:
        if name in sel and float(sel[name].max()) > 0:
            y = sel[name].values[mask]
            ax1.plot(t[mask], np.where(y > 0, y, np.nan), label=name.removeprefix("msc_"))
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
