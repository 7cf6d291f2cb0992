"""What the explorer computes, apart from any browser: form values (text, as a page sends them) -> a validated
Simulation -> a run, a dose-response sweep and a trial's power -> plain columns for the plots.

Every form value is checked here with the API's own validation, so the page shows the same messages as the
command line (field, value, what is allowed) and never a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..api import Simulation, load, presets
from ..display import display, field_display
from ..errors import InputError, MscsimError
from ..results import Results, endpoint_table

MAX_PATIENTS = 50
DOSE_POINTS = 5
POWER_REPLICATES = 400
FORM_FIELDS = ("preset", "source", "donor", "viability", "route", "guidance", "dose", "patients", "age",
               "smoker", "vascular", "kl", "inflammation", "n_per_arm")


def _number(form: dict, key: str, label: str, allowed: str, *, integer: bool = False, optional: bool = False):
    text = str(form.get(key, "")).strip()
    if not text and optional:
        return None
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        raise InputError(label, text, f"a number: {allowed}") from None
    if not math.isfinite(value):
        raise InputError(label, text, f"a finite number: {allowed}")
    if integer:
        if value != int(value):
            raise InputError(label, text, f"a whole number: {allowed}")
        return int(value)
    return value


DEFAULT_PATIENTS = 8


def form_from(sim: Simulation, n_per_arm: int = 20, patients: int | None = None) -> dict:
    """The form's values for a scenario (what the page shows when a preset is picked)."""
    sc = sim.scenario
    d = sc.regimen.dose
    dose = d.cells if d.cells is not None else (d.cells_per_kg * (sc.patient.weight_kg or 70.0)
                                               if d.cells_per_kg is not None else d.particles)
    return {"preset": sim.origin, "source": sc.product.source, "donor": sc.product.donor,
            "viability": f"{100 * sc.product.viability:g}", "route": sc.regimen.route,
            "guidance": sc.regimen.guidance or "", "dose": f"{dose:.4g}".replace("e+0", "e").replace("e+", "e"), "patients": str(patients or max(sc.population.size, DEFAULT_PATIENTS)),
            "age": "" if sc.patient.age_years is None else f"{sc.patient.age_years:g}",
            "smoker": sc.patient.smoker, "vascular": sc.patient.vascular_disease,
            "kl": "" if sc.patient.kellgren_lawrence is None else str(sc.patient.kellgren_lawrence),
            "inflammation": f"{sc.patient.baseline_inflammation:g}", "n_per_arm": str(n_per_arm)}


def build(form: dict, extra: dict[str, str] | None = None) -> tuple[Simulation, int]:
    """A validated Simulation from the form and the trial size per arm; an InputError names the bad field.
    ``extra`` maps further scenario names the page offers (a file given on the command line) to their paths."""
    preset = str(form.get("preset", ""))
    extra = extra or {}
    if preset not in presets()["name"].tolist() and preset not in extra:
        raise InputError("preset", preset, f"a bundled preset: {presets()['name'].tolist()}")
    sim = load(extra.get(preset, preset))
    sc = sim.scenario
    dose = _number(form, "dose", "dose", "cells per dose, e.g. 5e7 (more than 0, at most 1e12)")
    viability = _number(form, "viability", "viability (%)", "the percentage of viable cells, 1 to 100")
    if not 0 < viability <= 100:
        raise InputError("viability (%)", form.get("viability"), "the percentage of viable cells, more than 0, at "
                         "most 100")
    patients = _number(form, "patients", "patients", f"virtual patients, 1 to {MAX_PATIENTS}", integer=True)
    if not 1 <= patients <= MAX_PATIENTS:
        raise InputError("patients", patients, f"virtual patients, 1 to {MAX_PATIENTS} (more: mscsim simulate)")
    n_per_arm = _number(form, "n_per_arm", "trial size", "patients per arm, 2 to 10,000", integer=True)
    if not 2 <= n_per_arm <= 10_000:
        raise InputError("trial size", n_per_arm, "patients per arm, 2 to 10,000")
    route = str(form.get("route") or sc.regimen.route)
    sim = sim.with_route(route, guidance=str(form.get("guidance")) or None)
    if sc.product.kind == "vesicles":
        sim = sim.with_dose(particles=dose)
    else:
        sim = sim.with_dose(cells=dose)
    sim = sim.with_product(source=str(form.get("source") or sc.product.source),
                           donor=str(form.get("donor") or sc.product.donor), viability=viability / 100.0)
    if sc.disease:
        patient = {"smoker": bool(form.get("smoker")), "vascular_disease": bool(form.get("vascular")),
                   "baseline_inflammation": _number(form, "inflammation", "baseline inflammation",
                                                    "a multiplier of the disease's drive, 0 to 10 (1 typical)")}
        age = _number(form, "age", "age (years)", "years, 0 to 120, or empty", optional=True)
        if age is not None:
            patient["age_years"] = age
        if sc.disease == "knee_osteoarthritis":
            kl = _number(form, "kl", "Kellgren-Lawrence grade", "1 to 4, or empty", integer=True, optional=True)
            if kl is not None:
                patient["kellgren_lawrence"] = kl
        sim = sim.with_patient(**patient)
    return sim.with_population(patients, variability=patients > 1), n_per_arm


def _band(ds, name: str, *, floor: float | None = None) -> dict:
    """Median and 5-95 % band of a variable over patients, per time (NaN below ``floor``)."""
    v = np.asarray(ds[name].values, dtype=float)
    lo, mid, hi = np.quantile(v, [0.05, 0.5, 0.95], axis=0)
    if floor is not None:
        mid = np.where(mid >= floor, mid, np.nan)
        hi = np.where(hi >= floor, hi, np.nan)
        lo = np.where(np.isnan(hi), np.nan, np.maximum(lo, floor))
    return {"median": mid, "lo": lo, "hi": hi}


@dataclass(frozen=True)
class View:
    """Everything the page draws after one run (plain arrays and tables, no Bokeh objects)."""

    title: str
    t: np.ndarray
    cells: dict
    tissue: dict
    endpoint: str | None
    endpoint_label: str
    endpoint_series: dict
    table: pd.DataFrame
    n_patients: int


def view(res: Results, endpoint: str | None = None) -> View:
    ds = res.data
    t = ds["time_days"].values.astype(float)
    cells = {name: _band(ds, name, floor=1.0) for name in ("viable_total", "msc_target")}
    tissue = {}
    for name in ("m1", "teff", "tnf"):
        if name in ds:
            ref = np.where(ds[name].values[:, :1] > 0, ds[name].values[:, :1], 1.0) if name == "tnf" else 1.0
            tissue[name] = {"treated": np.median(ds[name].values / ref, axis=0),
                            "untreated": np.median(ds[f"{name}_untreated"].values / ref, axis=0)}
    plot = [v for v in ds.attrs.get("endpoint_plot", "").split(",") if v in ds]
    endpoint = endpoint if endpoint in plot else (plot[0] if plot else None)
    series, label = {}, "no disease: kinetics only"
    if endpoint is not None:
        disp = display(endpoint, ds[endpoint].attrs)
        label = disp.axis_label() if disp.kind not in ("binary",) else f"{disp.label}, share of patients (%)"
        for arm, name in (("treated", endpoint), ("untreated", f"{endpoint}_untreated")):
            if disp.kind == "binary":
                share = 100 * np.mean(ds[name].values >= 0.5, axis=0)
                series[arm] = {"median": share, "lo": share, "hi": share}
            else:
                series[arm] = _band(ds, name)
    table = endpoint_table(ds) if res.has_endpoints else pd.DataFrame()
    return View(ds.attrs.get("title", "").removeprefix("mscsim results: "), t, cells, tissue, endpoint, label, series,
                table, res.n_patients)


def run(sim: Simulation) -> Results:
    try:
        return sim.run()
    except MscsimError:
        raise
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:  # a numerical failure, said plainly
        raise MscsimError(f"the simulation failed for these inputs ({type(exc).__name__}: {exc})") from None


def dose_response(sim: Simulation, endpoint: str | None, visit_day: float | None) -> pd.DataFrame:
    """The endpoint at ``visit_day`` (without a disease: the target exposure, viable cells at the lesion x days)
    over DOSE_POINTS doses around the chosen one (x1/30 to x30, log-spaced), the same patients at every dose:
    columns dose, median, q05, q95, untreated_median; ``attrs['label']`` is the y-axis label."""
    d = sim.scenario.regimen.dose
    dose = d.cells if d.cells is not None else (d.particles if d.particles is not None else d.cells_per_kg)
    field = next(f"regimen.dose.{k}" for k in ("cells", "particles", "cells_per_kg") if getattr(d, k) is not None)
    cap = {"regimen.dose.cells": 1e12, "regimen.dose.particles": 1e16, "regimen.dose.cells_per_kg": 1e10}[field]
    doses = np.geomspace(max(dose / 30, 1.0), min(dose * 30, cap), DOSE_POINTS)
    output = f"{endpoint}_day{visit_day:g}" if endpoint and visit_day is not None else "target_exposure_cell_days"
    sweep = sim.sweep({field: [float(x) for x in doses]}, [output])
    t = sweep.table
    out = pd.DataFrame({"dose": t[field].astype(float), "median": t["median"], "q05": t["q05"], "q95": t["q95"],
                        "untreated_median": t["untreated_median"], "statistic": t["statistic"]})
    r0 = t.iloc[0]
    units = "share of patients, %" if str(r0["statistic"]).startswith("share") else r0["units"]
    if output == "target_exposure_cell_days":
        r0 = {"label": "viable MSCs at the lesion x days", "units": "cell-days"}
        units = r0["units"]
    out.attrs["label"] = f"{r0['label']} ({units})" if units else r0["label"]
    out.attrs["field"] = field
    return out


def power(res: Results, endpoint: str, visit_day: float, n_per_arm: int, seed: int) -> dict:
    """Power of a two-arm trial (treated vs untreated, ``n_per_arm`` each) on the endpoint's change from
    baseline at ``visit_day``, by repeating it in silico from this cohort with the cited measurement error
    (Welch t; chi-squared for a 0/1 endpoint). No placebo response: that is ``mscsim trial``'s design work."""
    from ..trials.observe import response_parameters
    from ..trials.statistics import simulated_power

    ds = res.data
    disp = display(endpoint)
    i = int(np.argmin(np.abs(ds["time_days"].values - visit_day)))
    treated, untreated = ds[endpoint].values, ds[f"{endpoint}_untreated"].values
    if disp.kind == "binary":
        a, b, test = (treated[:, i] >= 0.5).astype(float), (untreated[:, i] >= 0.5).astype(float), "chi2"
        noise = 0.0
    else:
        p = response_parameters()
        noise = p[f"noise_sd_{endpoint}"].value if f"noise_sd_{endpoint}" in p.names() else 0.0
        rng = np.random.default_rng([seed, 7])
        err = rng.normal(0.0, noise, size=(2, 2, treated.shape[0]))  # (arm, visit, patient)
        a = treated[:, i] + err[0, 1] - (treated[:, 0] + err[0, 0])
        b = untreated[:, i] + err[1, 1] - (untreated[:, 0] + err[1, 0])
        test = "welch_t"
    out = simulated_power(a, b, n_per_arm, test, POWER_REPLICATES, seed)
    out.update(test=test, noise_sd=noise, pool=int(len(a)), endpoint=endpoint, visit_day=visit_day)
    return out


def choices() -> dict[str, list[str]]:
    """Options of the page's selects, from the schema and the bundled presets."""
    from typing import get_args

    from ..delivery.routes import Guidance, Route
    from ..io.scenario import ProductSpec

    f = ProductSpec.model_fields
    return {"preset": presets()["name"].tolist(), "route": list(get_args(Route)),
            "guidance": [""] + list(get_args(Guidance)), "source": list(get_args(f["source"].annotation)),
            "donor": list(get_args(f["donor"].annotation)), "kl": ["", "1", "2", "3", "4"]}


def field_label(path: str) -> str:
    return field_display(path).label
