"""The parameters a scenario's run uses, as a table a user can read: value, units, bounds, between-patient and
uncertainty distributions, evidence grade, sources and where each value comes from (``mscsim parameters``)."""

from __future__ import annotations

import pandas as pd

from .parameters import Distribution, Parameter

COLUMNS = ("name", "value", "units", "bounds", "between_patient", "uncertainty", "grade", "source", "fitted_to",
           "file", "note")


def distribution_text(dist: Distribution | None, units: str = "") -> str:
    """'lognormal, CV 30%', 'logit-normal, SD 0.5 on the logit scale', 'uniform 0.1 to 0.5 1/d', or ''."""
    if dist is None:
        return ""
    u = "" if units in ("1", "") else f" {units}"
    kind = dist.distribution
    if kind == "lognormal":
        return f"lognormal, CV {100 * dist.cv:.3g}%"
    if kind == "logitnormal":
        return f"logit-normal, SD {dist.sd:.3g} on the logit scale"
    if kind == "normal":
        return f"normal, SD {dist.sd:.3g}{u}"
    if kind == "fixed":
        return "fixed"
    return f"{'log-uniform' if kind == 'loguniform' else 'uniform'} {dist.low:.3g} to {dist.high:.3g}{u}"


def parameter_row(p: Parameter) -> dict:
    return {"name": p.name, "value": p.value, "units": p.units,
            "bounds": "" if p.bounds is None else f"{p.bounds[0]:.4g} to {p.bounds[1]:.4g}",
            "between_patient": distribution_text(p.between_patient, p.units),
            "uncertainty": distribution_text(p.uncertainty, p.units),
            "grade": p.grade, "source": ", ".join(p.source), "fitted_to": ", ".join(p.fitted_to),
            "file": p.origin, "note": " ".join(p.note.split())}


def parameter_table(setup, *, every: bool = False) -> pd.DataFrame:
    """One row per parameter the scenario's run uses (``every``: every parameter loaded for it), then the
    disease's endpoint coefficients; values as the run uses them (after product, patient and what-ifs)."""
    names = setup.pset.names() if every else setup.parameter_names_used()
    rows = [parameter_row(setup.pset[n]) for n in names]
    if setup.scenario.disease:
        from ..endpoints import load_endpoints

        coeffs = load_endpoints(setup.scenario.disease).coefficients
        rows += [parameter_row(coeffs[n]) for n in coeffs.names()]
    return pd.DataFrame(rows, columns=list(COLUMNS))
