"""Adverse events of a virtual trial (BIOLOGY B19): per patient and arm, Bernoulli draws from cited risks.

Most events after MSC therapy are mild and transient (fever within a day of an infusion, pain or swelling at
the injection site); risk grows with the intravenous dose (cells lodged in the lungs) and with unregulated or
out-of-specification products. Events that MSCs do not raise (infection) get the same probability in every
arm, so a virtual trial shows no excess. Every number comes from ``data/parameters/safety.yaml``.

Model, per patient (one course of ``n_administrations`` administrations):

- ``infusion_fever`` (intravenous / intra-arterial only): per infusion ``p0 * RR(dose)``, with
  ``RR = 1 + (RR_ref - 1) * (dose_per_kg / dose_ref) * g_donor`` (``g_donor`` > 1 for allogeneic cells).
- ``injection_site_reaction`` (local routes only): odds per injection ``odds0 * OR(c)``, with
  ``OR(c) = 1 + (OR_ref - 1) * (c / c_ref) ** k`` for ``c`` cells per injection; a saline arm (c = 0) keeps
  the needle's control incidence.
- ``pulmonary_event`` (intravenous only; serious): per infusion
  ``logit p = logit(p_ref) + b * ln(L / L_ref)`` in the peak viable lung load ``L`` (cells/kg).
- ``infection``: a per-disease background probability, the same with or without cells.

Administrations are independent exposures, ``p_course = 1 - (1 - p)^n``; an unregulated product multiplies
the fever and injection-site hazard per administration by a factor, ``p -> 1 - (1 - p)^factor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral

import numpy as np
import pandas as pd
from scipy import special, stats

from .. import _ufuncs as uf
from .._keyed_random import keyed_rows
from ..delivery.routes import LOCAL_ROUTES
from ..errors import InputError
from ..model.parameters import DATA_DIR, ParameterSet, load_parameter_file, load_parameter_sets

STREAM = 4241  # this module's per-patient random stream: default_rng([seed, patient_index, STREAM])
AE_TYPES = ("infusion_fever", "injection_site_reaction", "pulmonary_event", "infection")  # draw order
SERIOUS = ("pulmonary_event",)
INTRAVASCULAR_ROUTES = ("intravenous", "intra_arterial")
ROUTES = INTRAVASCULAR_ROUTES + tuple(LOCAL_ROUTES)
DONORS = ("autologous", "allogeneic")
SAFETY_TABLE_COLUMNS = ("arm", "event", "n", "events", "rate", "ci_low", "ci_high")
_INFECTION_PREFIX = "infection_p_"


@dataclass(frozen=True, eq=False)  # eq=False: fields may be per-patient arrays, which have no truth value
class ExposureContext:
    """What one arm gives each patient: route, cells per administration (0 for saline/placebo/HA; a scalar or
    one value per patient), body weight (scalar or per patient), how many administrations, donor type, disease
    (for the background infection risk) and whether the product is unregulated or failed release testing."""

    route: str
    cells_per_administration: float | np.ndarray
    weight_kg: float | np.ndarray
    n_administrations: int
    donor: str
    disease: str | None = None
    unregulated: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.route, str) or self.route not in ROUTES:
            raise InputError("route", self.route, ", ".join(ROUTES))
        cells = self.cells_per_administration
        allowed = "a finite number (or 1-D array, one per patient) of cells >= 0; 0 for a placebo arm"
        try:
            arr = np.asarray(cells, dtype=float)
        except (TypeError, ValueError):
            raise InputError("cells_per_administration", cells, allowed) from None
        if isinstance(cells, bool) or arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise InputError("cells_per_administration", cells, allowed)
        try:
            weight = np.asarray(self.weight_kg, dtype=float)
        except (TypeError, ValueError):
            raise InputError("weight_kg", self.weight_kg, "a positive number or array of body weights in kg") from None
        if weight.ndim > 1 or weight.size == 0 or not np.all(np.isfinite(weight)) or np.any(weight <= 0):
            raise InputError("weight_kg", self.weight_kg, "a positive number or 1-D array of body weights in kg")
        n = self.n_administrations
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise InputError("n_administrations", n, "an integer >= 1")
        if self.donor not in DONORS:
            raise InputError("donor", self.donor, ", ".join(DONORS))
        if self.disease is not None and not isinstance(self.disease, str):
            raise InputError("disease", self.disease, "a disease name or None")
        if not isinstance(self.unregulated, (bool, np.bool_)):
            raise InputError("unregulated", self.unregulated, "true or false")


@lru_cache(maxsize=1)
def load_safety_parameters() -> ParameterSet:
    """The bundled adverse-event parameters (``data/parameters/safety.yaml``)."""
    return load_parameter_file(DATA_DIR / "parameters" / "safety.yaml")


@lru_cache(maxsize=1)
def _default_f_trap() -> float:
    """First-pass lung retention of the kinetics model, used when the caller gives no lung load."""
    return float(load_parameter_sets(["kinetics", "species_human"])["f_trap"].value)


def _course(p: np.ndarray, n: float) -> np.ndarray:
    """Probability of at least one event in ``n`` independent exposures of probability ``p`` each."""
    with np.errstate(divide="ignore"):
        return -uf.expm1(n * uf.log1p(-np.clip(p, 0.0, 1.0)))


def _per_patient(values, n: int, where: str, allowed: str) -> np.ndarray:
    """Broadcast a scalar or per-patient array to ``n`` patients; a length mismatch is the caller's error."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.ndim != 1 or arr.size != n:
        raise InputError(where, f"array of shape {arr.shape}", f"{allowed}, one value per patient ({n})")
    return arr


def infection_diseases(params: ParameterSet | None = None) -> list[str]:
    """Diseases with a background-infection parameter in the safety data (``infection_p_<disease>``)."""
    pset = params if params is not None else load_safety_parameters()
    return sorted(n.removeprefix(_INFECTION_PREFIX) for n in pset.names()
                  if n.startswith(_INFECTION_PREFIX) and n != f"{_INFECTION_PREFIX}default")


def ae_probabilities(ctx: ExposureContext, peak_lung_cells_per_kg: np.ndarray | float | None = None,
                     params: ParameterSet | None = None, *, n_patients: int | None = None) -> pd.DataFrame:
    """Per-patient probability of each adverse event over the course (columns ``AE_TYPES``, one row per
    patient in the order of the weight / lung-load arrays), so a report can show expected rates.

    ``peak_lung_cells_per_kg`` is the peak viable lung load from the kinetics model (intravenous arms); when it
    is None, the load is taken as the first-pass lung fraction ``f_trap`` times the dose per kg.
    """
    pset = params if params is not None else load_safety_parameters()
    sizes = [np.size(x) for x in (ctx.weight_kg, ctx.cells_per_administration, peak_lung_cells_per_kg)
             if x is not None and np.ndim(x) == 1]
    n = int(n_patients) if n_patients is not None else (sizes[0] if sizes else 1)
    weight = _per_patient(ctx.weight_kg, n, "weight_kg", "body weights in kg")
    cells = _per_patient(ctx.cells_per_administration, n, "cells_per_administration", "cells per administration")
    n_adm = int(ctx.n_administrations)
    product = pset["unregulated_risk_factor"].value if ctx.unregulated else 1.0
    zeros = np.zeros(n)

    fever = zeros
    if ctx.route in INTRAVASCULAR_ROUTES:
        donor = pset["fever_allogeneic_factor"].value if ctx.donor == "allogeneic" else 1.0
        rr = 1.0 + (pset["fever_rr_ref"].value - 1.0) * (cells / weight) / pset["fever_dose_ref"].value * donor
        p1 = np.clip(pset["fever_p0_per_infusion"].value * rr, 0.0, 1.0)
        fever = _course(_course(p1, product), n_adm)

    site = zeros
    if ctx.route in LOCAL_ROUTES:
        p0 = pset["site_reaction_p0_per_injection"].value
        odds_ratio = 1.0 + (pset["site_reaction_or_ref"].value - 1.0) * (
            cells / pset["site_reaction_cells_ref"].value) ** pset["site_reaction_dose_exponent"].value
        odds = p0 / (1.0 - p0) * odds_ratio
        p1 = odds / (1.0 + odds)
        site = _course(_course(p1, product), n_adm)

    pulmonary = zeros
    if ctx.route == "intravenous":
        if peak_lung_cells_per_kg is None:
            lung = _default_f_trap() * cells / weight
        else:
            lung = _per_patient(peak_lung_cells_per_kg, n, "peak_lung_cells_per_kg", "viable cells per kg >= 0")
            if not np.all(np.isfinite(lung)) or np.any(lung < 0):
                raise InputError("peak_lung_cells_per_kg", peak_lung_cells_per_kg, "finite viable cells per kg >= 0")
        logit_ref = special.logit(pset["pulmonary_p_ref_per_infusion"].value)
        slope = pset["pulmonary_load_exponent"].value
        with np.errstate(divide="ignore"):
            log_load = uf.log(lung / pset["pulmonary_lung_ref"].value)
        p1 = np.where(lung > 0, special.expit(logit_ref + slope * log_load), 0.0)
        pulmonary = _course(p1, n_adm)

    if ctx.disease is None:
        p_infection = pset[f"{_INFECTION_PREFIX}default"].value
    elif f"{_INFECTION_PREFIX}{ctx.disease}" in pset:
        p_infection = pset[f"{_INFECTION_PREFIX}{ctx.disease}"].value
    else:
        raise InputError("disease", ctx.disease, ", ".join(infection_diseases(pset)) + " or None")
    infection = np.full(n, p_infection)

    return pd.DataFrame(dict(zip(AE_TYPES, (fever, site, pulmonary, infection))), columns=list(AE_TYPES))


def adverse_events(ctx: ExposureContext, patient_ids: np.ndarray, seed: int,
                   peak_lung_cells_per_kg: np.ndarray | float | None = None,
                   params: ParameterSet | None = None) -> pd.DataFrame:
    """Simulated adverse events, one row per patient (index: patient id), one bool column per AE type plus
    ``serious`` and ``any_ae``. Each patient's uniforms come from ``default_rng([seed, id, STREAM])``, one per AE
    type in the order of ``AE_TYPES``, so a patient's events do not depend on chunking or worker count.
    Per-patient arrays (weight, lung load) follow the order of ``patient_ids``."""
    ids = np.asarray(patient_ids)
    if ids.ndim != 1 or (ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0)):
        raise InputError("patient_ids", patient_ids, "a 1-D array of integer patient indices >= 0")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise InputError("seed", seed, "an integer >= 0")
    probs = ae_probabilities(ctx, peak_lung_cells_per_kg, params, n_patients=ids.size).to_numpy()
    k = len(AE_TYPES)
    uniforms = keyed_rows([int(seed), ids, STREAM], lambda g: g.random(k), k)
    events = pd.DataFrame(uniforms < probs, index=pd.Index(ids, name="patient_id"), columns=list(AE_TYPES))
    events["serious"] = events[list(SERIOUS)].any(axis=1)
    events["any_ae"] = events[list(AE_TYPES)].any(axis=1)
    return events


def _wilson(events: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion (Wilson 1927); good coverage for rare events."""
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    p = events / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    low = np.where(events <= 0, 0.0, np.clip(centre - half, 0.0, 1.0))  # exact bounds at 0 and n events
    high = np.where(events >= n, 1.0, np.clip(centre + half, 0.0, 1.0))
    return low, high


def safety_table(events: pd.DataFrame, arm: pd.Series) -> pd.DataFrame:
    """Per arm and adverse event: patients, patients with the event, rate and Wilson 95% CI (columns
    ``SAFETY_TABLE_COLUMNS``); ``arm`` maps each patient id in ``events`` to its arm label."""
    labels = arm.reindex(events.index)
    if labels.isna().any():
        missing = list(events.index[labels.isna().to_numpy()][:5])
        raise InputError("arm", f"no arm for patient ids {missing}", "an arm label for every patient in events")
    columns = [c for c in events.columns if pd.api.types.is_bool_dtype(events[c])]
    rows = []
    for label in pd.unique(labels):
        block = events.loc[(labels == label).to_numpy(), columns]
        n = len(block)
        for column in columns:
            rows.append((label, column, n, int(block[column].sum())))
    table = pd.DataFrame(rows, columns=["arm", "event", "n", "events"])
    n_arr = table["n"].to_numpy(dtype=float)
    k_arr = table["events"].to_numpy(dtype=float)
    table["rate"] = k_arr / n_arr
    table["ci_low"], table["ci_high"] = _wilson(k_arr, n_arr)
    return table[list(SAFETY_TABLE_COLUMNS)]
