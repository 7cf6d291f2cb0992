"""Writing a run's outputs atomically: results.nc, summary.csv, cell_fate.png, manifest.json.

Everything is written to a temporary folder beside the target and moved into place only when complete,
so an error never leaves a half-written output folder behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InputError

SUMMARY_TIMES_H = {"1h": 1.0, "24h": 24.0, "72h": 72.0, "7d": 168.0, "28d": 672.0}


def check_output_dir(out: str | Path) -> None:
    """Refuse ``out`` unless it is absent, an empty folder, or an earlier mscsim output with a manifest.json
    (long runs call this before any work, so that they are not refused only at the end)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists())):
        raise InputError("--out", str(out), "a new folder, an empty folder, or an earlier mscsim output folder "
                         "(one with a manifest.json); refusing to overwrite other files")


@contextmanager
def atomic_output_dir(out: str | Path):
    """Yield a temporary folder; on success it replaces ``out`` (only if ``out`` is absent, empty, or an
    earlier mscsim output with a manifest.json); on error it is removed."""
    out = Path(out)
    check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def summary_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per patient: dose, potent dose at target, and where the cells are at key times."""
    t = ds["time"].values
    adm = ds["administered"].values
    rows = {"patient": ds["patient"].values, "dose_cells": ds["dose_cells"].values,
            "effective_potent_dose": ds["effective_potent_dose"].values,
            "potent_dose_at_target": ds["potent_dose_at_target"].values}
    imaging = [n for n, v in ds.data_vars.items() if v.attrs.get("kind") == "imaging" and v.attrs.get("decay_corrected")]
    lung_label = ds["msc_lung"] + ds["debris_lung"]
    liver_label = ds["msc_liver"] + ds["debris_liver"]
    # a lesion in the lung or the liver is part of that organ: an image of the label sees its cells there too
    at_lesion = ds["msc_target"] + ds["debris_target"]
    site = ds.attrs.get("site")
    if site == "lung_lesion":
        lung_label = lung_label + at_lesion
    elif site == "liver_lesion":
        liver_label = liver_label + at_lesion
    for label, th in SUMMARY_TIMES_H.items():
        if th > t[-1]:
            continue
        i = int(np.argmin(np.abs(t - th)))
        a = np.maximum(adm[:, i], 1e-300)
        rows[f"viable_fraction_{label}"] = ds["viable_total"].values[:, i] / a
        rows[f"viable_target_cells_{label}"] = ds["msc_target"].values[:, i]
        rows[f"lung_label_fraction_{label}"] = lung_label.values[:, i] / a
        rows[f"liver_label_fraction_{label}"] = liver_label.values[:, i] / a
        for name in imaging:  # an imaging label: % of the injected activity, decay-corrected
            rows[f"{name}_pct_{label}"] = ds[name].values[:, i]
    rows["viable_fraction_end"] = ds["viable_total"].values[:, -1] / np.maximum(adm[:, -1], 1e-300)
    rows["viable_target_cells_end"] = ds["msc_target"].values[:, -1]
    rows["target_exposure_cell_days"] = np.trapezoid(ds["msc_target"].values, ds["time_days"].values, axis=1)
    rows.update(endpoint_columns(ds))
    return pd.DataFrame(rows)


def imaging_table(ds: xr.Dataset) -> pd.DataFrame | None:
    """What imaging sees, one row per patient and time: each organ's share of the injected activity of the
    scenario's label, decay-corrected (to the injection) and not (what a camera counts then); None without a label."""
    organs = [n for n, v in ds.data_vars.items() if v.attrs.get("kind") == "imaging" and v.attrs.get("decay_corrected")]
    if not organs:
        return None
    n, t = ds.sizes["patient"], ds["time"].values
    cols = {"patient": np.repeat(ds["patient"].values, len(t)), "time_h": np.tile(t, n),
            "time_days": np.tile(ds["time_days"].values, n)}
    for corrected in (True, False):
        for name in organs:
            var = ds[name if corrected else f"{name}_not_decay_corrected"]
            how = "decay-corrected" if corrected else "not decay-corrected"
            cols[f"{var.attrs['organ']} (% injected activity, {how})"] = var.values.ravel()
    return pd.DataFrame(cols)


def endpoint_columns(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Each endpoint at baseline and at the disease's visits (treated and untreated), and each response."""
    cols: dict[str, np.ndarray] = {}
    visits = [float(v) for v in ds.attrs.get("endpoint_visits_days", "").split(",") if v]
    td = ds["time_days"].values
    for name, var in ds.data_vars.items():
        kind = var.attrs.get("kind")
        if kind == "endpoint":
            cols[f"{name}_baseline"] = var.values[:, 0]
            for day in visits:
                if day <= td[-1] + 1e-9:
                    cols[f"{name}_day{day:g}"] = var.values[:, int(np.argmin(np.abs(td - day)))]
        elif kind == "response":
            meanings = var.attrs["flag_meanings"].split()
            names = {int(m.split("=")[1]): m.split("=")[0] for m in meanings}
            cols[name] = np.array([names[int(c)] for c in var.values])
    for key in list(cols):  # what the treatment changed: treated minus untreated, same patient, same day
        head, sep, day = key.rpartition("_day")
        if sep and f"{head}_untreated_day{day}" in cols and not head.endswith("_untreated"):
            cols[f"{head}_effect_day{day}"] = cols[key] - cols[f"{head}_untreated_day{day}"]
    return cols


def manifest(ds: xr.Dataset, scenario_path: str | None, files: list[str]) -> dict:
    return {
        "mscsim_version": ds.attrs["mscsim_version"],
        "scenario_file": scenario_path,
        "scenario": json.loads(ds.attrs["scenario"]),
        "seed": int(ds.attrs["seed"]),
        "patients": int(ds.sizes["patient"]),
        "mechanisms_enabled": ds.attrs["mechanisms_enabled"].split(","),
        "parameter_overrides": json.loads(ds.attrs.get("parameter_overrides", "[]")),
        "allow_out_of_bounds": json.loads(ds.attrs["scenario"]).get("allow_out_of_bounds", []),
        "citations": ds.attrs["citations"].split(","),
        "files": files,
        "disclaimer": ds.attrs["disclaimer"],
    }


def write_results(ds: xr.Dataset, out: str | Path, *, scenario_path: str | None = None, figure=None,
                  figures: dict | None = None, bands=None) -> Path:
    """Write the standard outputs; ``figure(ds)`` draws the cell-fate figure (cell_fate.png, .svg and .pdf) and
    ``figures`` maps further figure names (without suffix) to drawing functions (the tissue-response panels for
    a disease run). Each drawing function returns a matplotlib Figure. ``bands`` (parameter draws,
    ``mscsim.uncertainty.bands.ScenarioBands``) adds bands.csv, draws.csv, draws.nc and, in summary.csv, each
    quantity's median and 90 %/95 % intervals across the draws."""
    from ..report.figure_worker import save_figures

    out = Path(out)
    with atomic_output_dir(out) as tmp:
        files = ["results.nc", "summary.csv"]
        if bands is not None:
            files += ["bands.csv", "draws.csv", "draws.nc"]
        imaging = imaging_table(ds)
        if imaging is not None:
            files.append("imaging.csv")

        def tables() -> None:  # written while a helper process draws figures (report.figure_worker)
            ds.to_netcdf(tmp / "results.nc")
            summary = summary_table(ds)
            if bands is not None:
                summary = summary.merge(bands.patient_columns(), on="patient", how="left")
                bands.table.to_csv(tmp / "bands.csv", index=False)
                bands.per_draw.to_csv(tmp / "draws.csv", index=False)
                bands.timecourse.to_netcdf(tmp / "draws.nc")
            summary.to_csv(tmp / "summary.csv", index=False)
            if imaging is not None:
                imaging.to_csv(tmp / "imaging.csv", index=False)

        drawings = ({"cell_fate": figure} if figure is not None else {}) | dict(figures or {})
        files += save_figures({Path(name).stem: draw for name, draw in drawings.items()}, ds, tmp, meanwhile=tables)
        files.append("manifest.json")
        record = manifest(ds, scenario_path, files)
        if bands is not None:
            record["uncertainty"] = uncertainty_record(bands)
        (tmp / "manifest.json").write_text(json.dumps(record, indent=2, allow_nan=False))
    return out


def uncertainty_record(bands) -> dict:
    """What the bands rest on: how many draws, how they were kept, which parameters were uncertain."""
    d = bands.draws
    return {"draws": int(len(d.index)), "candidates_screened": int(d.candidates), "condition": d.condition,
            "acceptance": round(float(d.acceptance), 4), "failed_draws": int(bands.failed),
            "draw_keys": "draw d takes the d-th value of each parameter's generator keyed on (seed, 8117, name)",
            "uncertain_parameters": list(d.space.names),
            "posterior": d.posterior, "posterior_parameters": list(d.posterior_parameters),
            "quantiles": {"median": 0.5, "90%": [0.05, 0.95], "95%": [0.025, 0.975]}}
