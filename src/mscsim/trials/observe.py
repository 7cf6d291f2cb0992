"""From a virtual patient's modelled endpoints to what a trial records: the non-specific (placebo, comparator,
standard-care) response, measurement error, dropout, and derived responder endpoints.

The model says what the cells do; every trial arm also improves for reasons that have nothing to do with the
cells (the injection, hyaluronic acid, curettage and seton, second-line immunosuppression, induction therapy of
lupus nephritis, regression to the mean). Those responses are cited data (data/parameters/trial_response.yaml), added here, after the model, so the
same mechanistic model serves every trial. Each patient's random numbers come from a generator keyed on
(seed, patient id, stream), so a patient's observations do not depend on the chunk or worker.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from .. import _ufuncs as uf
from .._keyed_random import keyed_rows
from ..endpoints import RESPONSE_CODES, load_endpoints, response_codes
from ..model.parameters import DATA_DIR, ParameterSet, load_parameter_file
from .design import ArmSpec, DesignSpec
from .statistics import omeract_oarsi_responder

STREAM = 5171
SYMPTOMS = ("pain_vas", "womac_total", "odi")  # endpoints that carry the placebo/comparator relief
# scores where higher is better (the range's top is no symptom): the relief shrinks their distance from the top
SCORES = ("mepi", "visa_a")
REMISSIONS = ("fistula_closed", "combined_remission")  # remission by standard care counts for these
# endpoints that background immunosuppression (induction therapy of lupus nephritis) lowers in a standard-care arm
IMMUNOSUPPRESSED = ("proteinuria", "sledai_2k")
# diseases whose symptoms resolve on their own over months (the self-limiting natural course), whatever the arm:
# (peak share resolved, time constant), data/parameters/trial_response.yaml
NATURAL_COURSE = {"tendinopathy": ("natural_r_tendinopathy", "natural_tau_tendinopathy")}
WOMAC_MAX = 96.0


@lru_cache(maxsize=None)
def response_parameters() -> ParameterSet:
    return load_parameter_file(DATA_DIR / "parameters" / "trial_response.yaml")


def endpoint_kinds(design: DesignSpec) -> dict[str, str]:
    """'binary' (0/1: closure, remission, response, responder) or 'continuous', per design endpoint."""
    eps = load_endpoints(design.disease)
    out = {}
    for name in design.endpoints:
        if name in eps.spec.responses or name == "omeract_oarsi_responder":
            out[name] = "binary"
        elif name in eps.spec.endpoints and tuple(eps.spec.endpoints[name].range or ()) == (0.0, 1.0):
            out[name] = "binary"
        else:
            out[name] = "continuous"
    out.update({name: "binary" for name in response_parts(design)})
    return out


RESPONSE_PARTS = ("complete", "partial")  # categories a response also reports as 0/1 endpoints of their own


def response_parts(design: DesignSpec) -> dict[str, tuple[str, str]]:
    """{derived endpoint: (response, category)}: each response of the design also gives its complete and partial
    responses as 0/1 endpoints (``response_day28_complete``, ``response_day28_partial``), so the trial reports CR,
    PR and overall (CR + PR) rates per arm, as GVHD trials do."""
    eps = load_endpoints(design.disease)
    return {f"{name}_{c}": (name, c) for name in design.endpoints if name in eps.spec.responses
            for c in RESPONSE_PARTS}


def noise_sd(design: DesignSpec, endpoint: str, params: ParameterSet | None = None) -> float:
    spec = design.endpoints[endpoint]
    if spec.noise_sd is not None:
        return spec.noise_sd
    p = params if params is not None else response_parameters()
    return p[f"noise_sd_{endpoint}"].value if f"noise_sd_{endpoint}" in p.names() else 0.0


def _draws(seed: int, ids: np.ndarray, size: int) -> np.ndarray:
    """(patients, size) standard uniforms, one generator per patient keyed on (seed, id, STREAM)."""
    return keyed_rows([int(seed), np.asarray(ids), STREAM], lambda g: g.random(size), size)


def observe(design: DesignSpec, arm: ArmSpec, ids: np.ndarray, modelled: dict[str, np.ndarray],
            responses: dict[str, np.ndarray], params: ParameterSet | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Observed endpoints for one chunk of an arm.

    ``modelled`` maps each disease endpoint to (patients, 1 + visits) values at day 0 and each visit;
    ``responses`` maps each response (e.g. 'response_day28') to per-patient category codes.
    Returns (long table: patient, arm, endpoint, visit_day, value, baseline, change, modelled;
    per-patient table: dropout day and the comparator draws). ``params`` replaces the cited trial-level
    responses (data/parameters/trial_response.yaml), e.g. with one parameter set drawn from their uncertainty."""
    from scipy.stats import norm

    p = params if params is not None else response_parameters()
    visits = np.asarray(design.visits_days, dtype=float)
    days = np.concatenate([[0.0], visits])
    names = sorted(design.endpoints)
    n = len(ids)
    u = _draws(design.seed, ids, 4 + len(names) * len(days))
    z_resp, u_sc, u_cr, u_drop = norm.ppf(u[:, 0]), u[:, 1], u[:, 2], u[:, 3]
    z_noise = norm.ppf(u[:, 4:]).reshape(n, len(names), len(days))
    rate = design.dropout.rate_per_year / 365.25
    dropout_day = np.where(rate > 0, -uf.log1p(-u_drop) / max(rate, 1e-300), np.inf)
    present = days[None, :] < dropout_day[:, None]  # baseline always (dropout day > 0)

    relief = np.zeros((n, len(days)))
    if arm.comparator != "none":
        r_name = f"placebo_r_{arm.comparator}"
        r = np.clip(p[r_name].value + p[r_name].between_patient.sd * z_resp, 0.0, 0.95)
        on, off, keep = p["placebo_tau_on"].value, p["placebo_tau_off"].value, p["placebo_persist"].value
        shape = (1 - uf.exp(-days / on)) * (keep + (1 - keep) * uf.exp(-days / off))
        relief = r[:, None] * shape[None, :]

    natural = np.zeros(len(days))  # the share of the symptoms resolved by the natural course, every arm alike
    if design.disease in NATURAL_COURSE:
        r_nc, tau_nc = NATURAL_COURSE[design.disease]
        natural = p[r_nc].value * (1 - uf.exp(-days / p[tau_nc].value))
    kept = (1 - relief) * (1 - natural[None, :])  # the share of a symptom left: both lower it (independent shares)

    fistula_sc = p["sc_remission_fistula_p_inf"].value * (1 - uf.exp(-days / p["sc_remission_fistula_tau"].value))
    sc_remitted = u_sc[:, None] < fistula_sc[None, :]  # standard care (curettage, seton) remission by each day
    gvhd_sc_response = u_sc < p["sc_response_gvhd_day28"].value
    gvhd_sc_complete = gvhd_sc_response & (u_cr < p["sc_complete_share_gvhd"].value)
    induction = np.zeros((n, len(days)))  # lupus nephritis: relative fall on background immunosuppression
    if design.disease == "lupus_nephritis" and arm.comparator == "standard_care":
        r_sc = np.clip(p["sc_lupus_r"].value + p["sc_lupus_r"].between_patient.sd * norm.ppf(u_sc), 0.0, 0.98)
        induction = r_sc[:, None] * (1 - uf.exp(-days / p["sc_lupus_tau"].value))[None, :]

    true_values: dict[str, np.ndarray] = {}
    observed: dict[str, np.ndarray] = {}
    eps = load_endpoints(design.disease)
    reductions = [name for name in names if name in responses
                  and eps.spec.responses[name].kind.endswith("reduction_response")]
    for k, name in enumerate(names):
        if name in reductions:
            continue
        if name in responses:
            resp = eps.spec.responses[name]
            codes = responses[name].astype(int)
            sc_code = np.where(gvhd_sc_complete, RESPONSE_CODES["complete"],
                               np.where(gvhd_sc_response, RESPONSE_CODES["partial"], RESPONSE_CODES["none"]))
            best = np.minimum(codes, sc_code)  # the better of the two routes to a response
            j = int(np.argmin(np.abs(days - resp.day)))
            outcomes = {name: lambda code: code <= RESPONSE_CODES["partial"]}  # overall: complete or partial
            outcomes.update({f"{name}_{c}": (lambda code, c=c: code == RESPONSE_CODES[c]) for c in RESPONSE_PARTS})
            for part, hit in outcomes.items():
                val = np.full((n, len(days)), np.nan)
                val[:, j] = hit(best)
                true_values[part] = np.where(np.isnan(val), np.nan, hit(codes).astype(float)[:, None])
                observed[part] = val
            continue
        if name == "omeract_oarsi_responder":
            continue
        y = np.asarray(modelled[name], dtype=float)
        true_values[name] = y
        obs = y.copy()
        if name in SYMPTOMS:
            obs = obs * kept
        if name in SCORES:
            top = eps.spec.endpoints[name].range[1]
            obs = top - (top - obs) * kept
        if name in REMISSIONS:
            obs = np.maximum(obs, sc_remitted.astype(float))
        if name in IMMUNOSUPPRESSED:
            obs = obs * (1 - induction)
        if name == "organ_stage" and arm.comparator == "standard_care":
            after = days >= 28.0
            sc_stage = np.where(gvhd_sc_complete[:, None], 0.0, np.maximum(obs[:, :1] - 1.0, 0.0))
            obs = np.where(after[None, :] & gvhd_sc_response[:, None], np.minimum(obs, sc_stage), obs)
        sd = noise_sd(design, name, p)
        if sd > 0:
            lo, hi = eps.spec.endpoints[name].range or (-np.inf, np.inf)
            obs = np.clip(obs + sd * z_noise[:, k, :], lo, hi)
        observed[name] = obs
    for name in reductions:  # judged on the endpoint as the trial measures it (background therapy and noise)
        resp = eps.spec.responses[name]
        if resp.of not in observed:
            raise ValueError(f"design '{design.name}': response '{name}' is judged on '{resp.of}', which the "
                             "design must list among its endpoints")
        codes = response_codes(resp, observed[resp.of], days, design.visits_days)
        j = int(np.argmin(np.abs(days - resp.day)))
        outcomes = {name: lambda code: code <= RESPONSE_CODES["partial"]}
        outcomes.update({f"{name}_{c}": (lambda code, c=c: code == RESPONSE_CODES[c]) for c in RESPONSE_PARTS})
        model_codes = responses[name].astype(int)
        for part, hit in outcomes.items():
            val = np.full((n, len(days)), np.nan)
            val[:, j] = hit(codes)
            true_values[part] = np.where(np.isnan(val), np.nan, hit(model_codes).astype(float)[:, None])
            observed[part] = val
    if "omeract_oarsi_responder" in design.endpoints:
        pain, womac = observed["pain_vas"], observed["womac_total"] * (100.0 / WOMAC_MAX)
        resp = omeract_oarsi_responder(pain[:, :1], pain, womac[:, :1], womac).astype(float)
        resp[:, 0] = np.nan
        observed["omeract_oarsi_responder"] = resp
        true_values["omeract_oarsi_responder"] = np.full((n, len(days)), np.nan)

    parts = response_parts(design)
    judged = {name: eps.spec.responses[parts[name][0] if name in parts else name].day for name in [*responses, *parts]}
    visit_of_row, patient_of_row = np.tile(visits, n), np.repeat(ids, len(visits))
    columns: dict[str, list[np.ndarray]] = {"patient": [], "visit_day": [], "value": [], "baseline": [],
                                            "change": [], "modelled": []}
    endpoint_rows = []
    for name in [*names, *parts]:  # one block of rows per endpoint; a response is judged at one visit only
        val = np.where(present, observed[name], np.nan)
        base = np.repeat(val[:, :1], len(visits), axis=1).ravel()
        v = val[:, 1:].ravel()
        keep = visit_of_row == judged[name] if name in judged else slice(None)
        block = {"patient": patient_of_row, "visit_day": visit_of_row, "value": v, "baseline": base,
                 "change": v - base, "modelled": true_values[name][:, 1:].ravel()}
        for key, values in block.items():
            columns[key].append(values[keep])
        endpoint_rows.append(len(columns["patient"][-1]))
    long = pd.DataFrame({"patient": np.concatenate(columns["patient"]), "arm": arm.name,
                         "endpoint": np.repeat([*names, *parts], endpoint_rows),
                         **{key: np.concatenate(columns[key]) for key in ("visit_day", "value", "baseline", "change",
                                                                          "modelled")}})
    per_patient = pd.DataFrame({"patient": ids, "dropout_day": dropout_day,
                                "comparator_relief_peak": relief.max(axis=1) if n else []})
    return long, per_patient
