"""Many parameter sets through the batched solver at once: each set is a block of rows of one problem's
parameter matrix (its patients), so a chunk of sets costs one burn-in and one integration, not one per set.

Each set is resolved like a scenario (``resolve_setup(scenario, values)``), so what is derived from a parameter
(potency, placement, the patient's environment) follows its drawn value. A row's numbers do not depend on the
other rows of the batch (the batched solver's guarantee), so a set gives the same result in any chunk. A set
whose integration fails (a parameter combination the model cannot run) is found by bisection and reported as
failed (NaN) instead of failing its chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from ..endpoints import add_endpoints, load_endpoints
from ..errors import MscsimError
from ..io.scenario import Scenario
from ..model.parameters import load_parameter_sets
from ..simulation import Setup, output_times, parameter_files, resolve_setup, solve, to_dataset, untreated
from ..solvers.problem import Bolus, Infusion, Problem
from .priors import ParameterSpace, build_space


def model_parameters(scenario: Scenario) -> dict:
    """The model parameters a scenario's run uses (model, product, placement, patient environment) as the data
    files give them (before run-time derivation), less those the scenario's what-ifs fix."""
    setup = resolve_setup(scenario)
    raw = load_parameter_sets(parameter_files(scenario))
    return {n: raw[n] for n in setup.parameter_names_used() if n in raw and n not in scenario.parameters}


def model_values(scenario: Scenario, values: dict[str, float]) -> dict[str, float]:
    """The part of a parameter set that this scenario's parameter files hold (arms of a trial may differ)."""
    names = set(load_parameter_sets(parameter_files(scenario)).names())
    return {k: v for k, v in values.items() if k in names and k not in scenario.parameters}


def scenario_space(scenario: Scenario, priors=None, extra=None) -> ParameterSpace:
    """The uncertain parameters of a scenario's run: every parameter it uses (model, product, placement, patient
    environment), the disease's endpoint coefficients, and ``extra`` (role -> parameters, e.g. a trial's
    observation parameters); values fixed by the scenario's what-ifs are not uncertain."""
    groups = {"model": model_parameters(scenario)}
    if scenario.disease:
        coeffs = load_endpoints(scenario.disease).coefficients
        groups["endpoint"] = dict(coeffs.parameters)
    groups.update(extra or {})
    return build_space(groups, priors)


@dataclass
class SetRun:
    """Patients simulated under several parameter sets: row ``r * n_patients + i`` is patient i under set r."""

    setup: Setup  # the nominal setup (model, scenario, output times)
    setups: list[Setup | None]  # per set (None where it failed)
    states: np.ndarray  # (sets * patients, times, states); NaN rows for failed sets
    untreated: np.ndarray | None
    administered: np.ndarray  # (rows, times)
    coefficients: dict[str, np.ndarray]  # endpoint coefficients per row
    n_sets: int
    n_patients: int
    failed: np.ndarray  # (sets,) bool
    first_patient: int = 0

    def set_of_row(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_sets), self.n_patients)

    def dataset(self) -> xr.Dataset:
        """The rows as ordinary results (patient axis = rows), endpoints included, with each set's product and
        placement; coordinates ``set`` and ``patient_id`` say which set and which patient a row is."""
        s = self.setup
        t = output_times(s.scenario)
        doses = np.concatenate([(st or s).patient_doses(self.n_patients) for st in self.setups])
        ds = to_dataset(s, t, self.states, self.administered, doses=doses)
        potent = np.concatenate([(st or s).factors.effective_potent_dose((st or s).patient_doses(self.n_patients))
                                 for st in self.setups])
        ds["effective_potent_dose"].values[:] = potent
        if s.target_share is not None:
            ds["potent_dose_at_target"].values[:] = potent * np.repeat(
                [(st or s).target_share for st in self.setups], self.n_patients)
        if self.untreated is not None:
            for k, name in enumerate(s.model.state_names):
                if not s.model.cell_mask[k]:
                    ds[f"{name}_untreated"] = (("patient", "time"), self.untreated[:, :, k], ds[name].attrs)
        if s.has_tissue:
            add_endpoints(ds, s.scenario.disease, s.model.state_names, self.coefficients)
        patient = np.tile(np.arange(self.first_patient, self.first_patient + self.n_patients), self.n_sets)
        return ds.assign_coords(set=("patient", self.set_of_row()), patient_id=("patient", patient))


def run_sets(scenario: Scenario, space: ParameterSpace, values: np.ndarray, *, start: int = 0,
             count: int | None = None, covariates: pd.DataFrame | None = None, treated: bool = True,
             with_untreated: bool = True, starts: list[int] | None = None,
             covariates_per_set: list[pd.DataFrame | None] | None = None) -> SetRun:
    """Simulate patients start..start+count-1 of the scenario under each parameter set (rows of ``values``,
    columns in ``space`` order) as one batch; ``treated=False`` gives every row no doses (a cell-free arm),
    ``with_untreated`` adds the same rows untreated (the comparator of a disease run). ``starts`` (one first
    patient per set, with ``covariates_per_set``) gives each set its own patients instead of the same ones."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n_sets = values.shape[0]
    count = scenario.population.size - start if count is None else count
    if starts is None:
        starts, covariates_per_set = [start] * n_sets, [covariates] * n_sets
    elif len(starts) != n_sets or covariates_per_set is None or len(covariates_per_set) != n_sets:
        raise ValueError("run_sets: 'starts' and 'covariates_per_set' need one entry per parameter set")
    nominal = resolve_setup(scenario)
    sets = [space.by_role(row) for row in values]
    setups: list[Setup | None] = [resolve_setup(scenario, model_values(scenario, s["model"])) for s in sets]
    problems = [st.problem(s0, count, cov, with_baseline=False)
                for st, s0, cov in zip(setups, starts, covariates_per_set)]
    if not treated:
        problems = [untreated(p) for p in problems]
    n_rows, T, S = n_sets * count, len(problems[0].t_eval), nominal.model.n_states
    states = np.full((n_rows, T, S), np.nan)
    unt = np.full((n_rows, T, S), np.nan) if with_untreated and nominal.has_tissue and treated else None
    administered = np.full((n_rows, T), np.nan)
    failed = np.zeros(n_sets, dtype=bool)
    _solve_groups(nominal, problems, list(range(n_sets)), count, states, unt, administered, failed)
    for r in np.nonzero(failed)[0]:
        setups[r] = None
    coefficients: dict[str, np.ndarray] = {}
    for name in space.names:
        if space[name].role == "endpoint":
            coefficients[name] = np.repeat([s["endpoint"][name] for s in sets], count)
    return SetRun(nominal, setups, states, unt, administered, coefficients, n_sets, count, failed, start)


def _stack(problems: list[Problem], nominal: Setup) -> Problem:
    """Several sets' problems (same model, times and dose schedule) as one; the burn-in runs once for all."""
    first = problems[0]
    P = np.concatenate([p.params for p in problems])
    boluses = tuple(Bolus(b.t, np.concatenate([p.boluses[i].amount for p in problems]))
                    for i, b in enumerate(first.boluses))
    infusions = tuple(Infusion(f.t_start, f.t_end, np.concatenate([p.infusions[i].rate for p in problems]))
                      for i, f in enumerate(first.infusions))
    return Problem(first.model, P, first.t_eval, x0=nominal.baseline(P), boluses=boluses, infusions=infusions)


def _solve_groups(nominal, problems, group, count, states, unt, administered, failed) -> None:
    """Solve a group of sets as one batch; if it fails, halve it until the failing sets are found."""
    try:
        prob = _stack([problems[r] for r in group], nominal)
        x = solve(nominal, prob)
        xu = solve(nominal, untreated(prob)) if unt is not None else None
    except (MscsimError, FloatingPointError, np.linalg.LinAlgError):
        if len(group) == 1:
            failed[group[0]] = True
            return
        half = len(group) // 2
        _solve_groups(nominal, problems, group[:half], count, states, unt, administered, failed)
        _solve_groups(nominal, problems, group[half:], count, states, unt, administered, failed)
        return
    adm = prob.administered()
    for k, r in enumerate(group):
        rows = slice(r * count, (r + 1) * count)
        states[rows] = x[k * count:(k + 1) * count]
        administered[rows] = adm[k * count:(k + 1) * count]
        if unt is not None:
            unt[rows] = xu[k * count:(k + 1) * count]
