"""A trial under many parameter sets: the design's uncertain parameters (every arm's model parameters, the endpoint
maps and the trial-level responses it uses) and each arm's observed endpoints under each set, for bands and for
the sensitivity of a trial's result.

By default every set runs the same patients of an arm (the first ``count`` of its pool: same covariates, same
between-patient draws, same observation noise), so the sets differ only in their parameters; calibration gives
each set its own pool of patients instead (``pools``), so that no one pool's sampling noise is shared by all sets.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ..endpoints import load_endpoints
from ..model.parameters import ParameterSet
from ..uncertainty.evaluate import model_parameters, run_sets
from ..uncertainty.priors import ParameterSpace, build_space
from .cohort import draw_cohort, to_model_covariates
from .design import ArmSpec, DesignSpec, arm_scenario
from .observe import IMMUNOSUPPRESSED, NATURAL_COURSE, REMISSIONS, SCORES, SYMPTOMS, response_parameters
from .runner import arm_offsets, observed, simulated_per_arm


def trial_parameter_names(design: DesignSpec) -> list[str]:
    """The trial-level responses (data/parameters/trial_response.yaml) this design's observation model reads: the
    comparators' relief and the natural course for symptom endpoints, standard care's remissions or responses, the
    fall on induction therapy, each endpoint's noise. The one list for bands, calibration and the fitted-value
    record."""
    p = response_parameters()
    names: list[str] = []
    eps = set(design.endpoints)
    if eps & set(SYMPTOMS):
        comparators = {a.comparator for a in design.arms if a.comparator != "none"}
        names += [f"placebo_r_{c}" for c in sorted(comparators)]
        if comparators:
            names += ["placebo_tau_on", "placebo_tau_off", "placebo_persist"]
    if eps & set(SYMPTOMS + SCORES) and design.disease in NATURAL_COURSE:
        names += list(NATURAL_COURSE[design.disease])
    if eps & set(REMISSIONS):
        names += ["sc_remission_fistula_p_inf", "sc_remission_fistula_tau"]
    if design.disease == "acute_gvhd":
        names += ["sc_response_gvhd_day28", "sc_complete_share_gvhd"]
    if eps & set(IMMUNOSUPPRESSED) and any(a.comparator == "standard_care" for a in design.arms):
        names += ["sc_lupus_r", "sc_lupus_tau"]  # the fall on background induction therapy (lupus nephritis)
    names += [f"noise_sd_{e}" for e, spec in design.endpoints.items() if spec.noise_sd is None]
    return [n for n in dict.fromkeys(names) if n in p.names()]


def design_space(design: DesignSpec) -> ParameterSpace:
    """Every uncertain parameter the design's arms, endpoints and observation model use, with the design's prior
    replacements (``uncertainty.priors``)."""
    return _design_space(design.model_dump_json())


@lru_cache(maxsize=8)
def _design_space(design_json: str) -> ParameterSpace:
    design = DesignSpec.model_validate_json(design_json)
    model: dict = {}
    for arm in design.arms:
        model.update(model_parameters(arm_scenario(design, arm)))
    p = response_parameters()
    groups = {"model": model, "endpoint": dict(load_endpoints(design.disease).coefficients.parameters),
              "trial": {n: p[n] for n in trial_parameter_names(design)}}
    priors = design.uncertainty.priors if design.uncertainty else {}
    return build_space(groups, priors)


def trial_responses(values: dict[str, float]) -> ParameterSet:
    """The trial-level responses with some values replaced (one parameter set), citations kept."""
    p = response_parameters()
    return ParameterSet({**p.parameters, **{k: p[k].with_value(v) for k, v in values.items()}})


def arm_sets(design: DesignSpec, arm: ArmSpec, space: ParameterSpace, values: np.ndarray, keys: np.ndarray,
             count: int, pools: np.ndarray | None = None, *, first: int | None = None,
             pool_stride: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The observed endpoints (long table, with a 'draw' column holding ``keys``) of ``count`` patients of ``arm``
    under each parameter set (rows of ``values``); and which sets failed to integrate.

    Without ``pools`` every set sees the arm's first ``count`` patients. ``pools`` (one integer per set) gives each
    set its own patients instead: pool p is the arm's patients moved p strides up the patient ids (a stride being
    more than the design's patients), so pool 0 is the trial's own patients and no two pools or arms share one.
    ``first`` (the arm's first patient id; default its place in the design) and ``pool_stride`` (default the
    design's patients plus ``count``) let a caller lay the arms' patients out independently of ``count``, so that
    a larger ``count`` holds a smaller one's patients in every arm (the calibration does)."""
    start = arm_offsets(design)[arm.name] if first is None else int(first)
    if pools is None:
        firsts = np.full(len(values), start)
    else:
        stride = sum(simulated_per_arm(design).values()) + count if pool_stride is None else int(pool_stride)
        if stride < count:
            raise ValueError(f"arm_sets: pool_stride {stride} is smaller than the {count} patients of a pool")
        firsts = start + np.asarray(pools, dtype=np.int64) * stride
    cohorts = {int(f): draw_cohort(design.cohort, design.seed, int(f), count) for f in np.unique(firsts)}
    covariates = {f: to_model_covariates(c).reset_index(drop=True) for f, c in cohorts.items()}
    run = run_sets(arm_scenario(design, arm), space, values, start=start, count=count, treated=arm.has_cells,
                   with_untreated=False, starts=[int(f) for f in firsts],
                   covariates_per_set=[covariates[int(f)] for f in firsts])
    frames = []
    for r, row in enumerate(values):
        if run.failed[r]:
            continue
        sets = space.by_role(row)
        rows = slice(r * count, (r + 1) * count)
        coefficients = {k: v for k, v in sets["endpoint"].items()}
        first = int(firsts[r])
        long, _ = observed(design, arm, run.setups[r], np.arange(first, first + count), cohorts[first],
                           run.states[rows], coefficients=coefficients, params=trial_responses(sets["trial"]),
                           safety=False)
        long.insert(0, "draw", int(keys[r]))
        frames.append(long)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table, run.failed
