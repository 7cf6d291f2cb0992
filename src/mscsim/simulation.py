"""A Simulation ties a scenario to the model, the parameters, the product, the regimen and a solver.

scenario -> (parameters, product factors, dose events, patients) -> solver -> labelled xarray results.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import pandas as pd
import xarray as xr

from . import __version__
from .delivery.routes import is_local, placement_parameter, retention_parameter, site_of, split_dose
from .endpoints import add_endpoints, load_endpoints
from .errors import ConservationError, InputError, MscsimError, PositivityError
from .io.scenario import Scenario
from .model.cache import load_compiled
from .model.compiled import CompiledModel
from .model.core import Model
from .model.labels import ORGAN_NAMES, decay_factor, label_parameter, organ_states, with_label
from .model.overrides import Override, apply_overrides, check_overrides
from .model.parameters import ParameterSet, load_parameter_sets
from .model.references import Reference, resolve
from .model.units import convert
from .patients.population import draw_parameters
from .product.product import PotencyFactors, Product, potency_factors
from .solvers.batched import solve_batched
from .solvers.compiled import SolveFailure, solve_compiled, steady_state
from .solvers.linear import solve_linear
from .solvers.problem import Bolus, Infusion, Problem
from .solvers.reference import solve_reference

KINETICS = ("cell_compartments", "circulation", "homing", "cell_death", "local_retention", "debris_clearance",
            "engraftment")
TISSUE = ("tissue_states", "msc_licensing", "msc_secretion", "efferocytosis", "cytokine_network",
          "macrophage_polarisation", "t_cell_response", "innate_activation", "tissue_injury_repair", "fibrosis",
          "angiogenesis", "structural_damage", "nociception", "site_ischaemia", "msc_immune_lysis", "wound_closure")
CONSERVATION_RTOL = 1e-9
BURN_IN_DAYS = 1000.0  # the untreated run, where a patient's chronic state is integrated rather than solved for
BASELINE_METHODS = {0: "steady state", 1: "integrated (requested)", 2: "integrated: no steady state found",
                    3: "integrated: steady state not stable"}
# how far below zero round-off may take a state, relative to its scale (see check_positivity): cell states are
# integrated to 1e-13 of the dose, signal states to 1e-9 of their typical magnitude
POSITIVITY_RTOL_CELLS = 1e-9
POSITIVITY_RTOL_SIGNALS = 1e-6


@lru_cache(maxsize=16)
def compiled(mechanisms: tuple[str, ...], switches: tuple[tuple[str, bool], ...], label: str | None = None
             ) -> CompiledModel:
    """Compile each distinct composition once per process; ``label`` (e.g. ``111In-oxine``) adds the imaging
    label's states, generated from the composition's cell processes (:mod:`mscsim.model.labels`)."""
    model = Model.compose(list(mechanisms), dict(switches))
    return load_compiled(with_label(model, label) if label else model)


@dataclass(frozen=True)
class Setup:
    """A scenario resolved into everything the solver needs, before any patient is simulated."""

    scenario: Scenario
    model: CompiledModel
    pset: ParameterSet
    product: Product
    factors: PotencyFactors
    site: str
    placement_parameter: str | None
    placement: float | None
    nominal: np.ndarray
    solver_citations: tuple[str, ...]
    overrides: tuple[Override, ...] = ()
    retention_parameter: str | None = None  # an organ route's share held at first contact (site file)
    retained: float | None = None

    @property
    def placement_fraction(self) -> float:
        return 1.0 if self.placement is None else self.placement

    @property
    def target_share(self) -> float | None:
        """The share of an administration's cells the dose puts at the lesion: placement, times the share an organ
        route's organ holds at first contact; None for intravenous dosing (cells reach it only by homing)."""
        if self.placement is None and self.retained is None:
            return None
        return self.placement_fraction * (1.0 if self.retained is None else self.retained)

    def parameter_names_used(self) -> list[str]:
        names = list(self.model.param_names) + list(self.factors.parameters)
        if self.placement_parameter:
            names.append(self.placement_parameter)
        if self.retention_parameter:
            names.append(self.retention_parameter)
        if self.scenario.regimen.dose.cells_per_kg is not None and self.scenario.patient.weight_kg is None:
            names.append("body_weight")
        if self.scenario.label:  # used by the dose and the outputs, not by a rate law
            names += [label_parameter(self.scenario.label, w) for w in ("cell_bound", "half_life")]
        if self.has_tissue:
            pt = self.scenario.patient
            names += ["ecf_per_kg"] + (["smoking_perfusion"] if pt.smoker else []) + \
                (["vascular_perfusion"] if pt.vascular_disease else []) + \
                (["age_repair_slope"] if pt.age_years is not None else []) + \
                (["poor_nutrition_repair"] if pt.nutrition == "poor" else []) + \
                ([f"structure_0_kl{pt.kellgren_lawrence}"] if pt.kellgren_lawrence is not None else []) + \
                ([f"insult_grade_{pt.gvhd_grade}"] if pt.gvhd_grade is not None else [])
        return list(dict.fromkeys(names))

    def citation_keys(self) -> list[str]:
        keys = self.pset.citations(self.parameter_names_used()) + list(self.solver_citations)
        if self.has_tissue:
            keys += load_endpoints(self.scenario.disease).citation_keys()
        return list(dict.fromkeys(keys))

    def citations(self) -> list[Reference]:
        return resolve(self.citation_keys())

    def body_weight(self) -> float:
        if self.scenario.patient.weight_kg is not None:
            return self.scenario.patient.weight_kg
        return self.pset["body_weight"].value

    def dose_cells(self) -> float:
        """Cells per administration (0 for a vesicle product)."""
        d = self.scenario.regimen.dose
        if d.particles is not None:
            return 0.0
        return d.cells if d.cells is not None else d.cells_per_kg * self.body_weight()

    @property
    def has_tissue(self) -> bool:
        return self.scenario.disease is not None

    def patient_doses(self, count: int, covariates: pd.DataFrame | None = None) -> np.ndarray:
        """Cells per administration for each patient (per-kg doses follow each patient's weight)."""
        dose = self.scenario.regimen.dose
        if covariates is not None and "weight_kg" in covariates and dose.cells_per_kg is not None:
            return dose.cells_per_kg * covariates["weight_kg"].astype(float).fillna(self.body_weight()).to_numpy()
        return np.full(count, self.dose_cells())

    def _dose_amounts(self, count: int, P: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """What one administration adds to each state, per patient."""
        sc = self.scenario
        if sc.product.kind == "vesicles":
            amount = np.zeros((count, self.model.n_states))
            if is_local(sc.regimen.route):
                volume = P[:, self.model.param_index("V_site")]
                share = self.placement_fraction
            else:
                volume = P[:, self.model.param_index("V_ecf")]
                share = P[:, self.model.param_index("phi_sys")]
            amount[:, self.model.index("ev")] = sc.regimen.dose.particles * share / volume
            return amount
        amount = split_dose(sc.regimen.route, cells, self.factors.viability, self.placement, self.model,
                            self.retained)
        if sc.label:
            amount = self._with_label_dose(amount, cells)
        return amount

    def _with_label_dose(self, amount: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """The label given with the cells (share of one administration's activity): the bound share on the cells,
        in proportion to where the dose puts them (viable and dead), the rest as free label."""
        model = self.model
        bound = self.pset[label_parameter(self.scenario.label, "cell_bound")].value
        per_cell = bound / np.maximum(cells, 1e-300)
        out = amount.copy()
        for k, name in enumerate(model.state_names):
            if model.cell_mask[k] and f"label_{name}" in model.state_names:
                out[:, model.index(f"label_{name}")] = amount[:, k] * per_cell
        out[:, model.index("label_free")] = 1.0 - out[:, model.label_mask].sum(axis=1)
        return out

    def label_half_life_hours(self) -> float | None:
        """The label's physical half-life in hours (None without a label)."""
        if not self.scenario.label:
            return None
        par = self.pset[label_parameter(self.scenario.label, "half_life")]
        return convert(par.value, par.units, "h", what=f"parameter '{par.name}'")

    def baseline(self, P: np.ndarray) -> np.ndarray | None:
        """Each patient's untreated chronic disease state, or None for the kinetics-only model
        (see :meth:`chronic_state`)."""
        chronic = self.chronic_state(P)
        return None if chronic is None else chronic[0]

    def chronic_state(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(states, method) for each patient's untreated chronic disease, or None for the kinetics-only model.

        The chronic state is the untreated disease's stable steady state (no cells; states marked ``baseline: held``,
        such as structural loss set by the patient's grade, kept at their start values), found by pseudo-transient
        continuation with the analytic Jacobian and checked for stability. Where a patient has none (or the
        scenario asks for ``solver.baseline: integration``) the untreated disease is integrated for
        BURN_IN_DAYS instead, with the same held states. ``method`` says which, per patient (BASELINE_METHODS)."""
        if not self.has_tissue:
            return None
        model = self.model
        x0 = model.initial_signals(P)
        hold = model.chronic_hold_mask
        atol = Problem(model, P, np.array([0.0]), x0=x0).atol(1e-13)
        method = np.ones(len(P), dtype=np.int64)
        x = x0.copy()
        if self.scenario.solver.baseline == "steady_state":
            ss = steady_state(model, P, x0, atol, hold, method=self.scenario.solver.method)
            found = ss.status == 0
            x[found] = ss.x[found]
            method = np.where(found, 0, np.where(ss.status == 2, 3, 2))
        todo = np.nonzero(method != 0)[0]
        if todo.size:
            t = np.array([0.0, BURN_IN_DAYS * 24.0])
            burn = solve_compiled(Problem(model, P[todo], t, x0=x0[todo], hold=hold),
                                  rtol=min(self.scenario.solver.rtol, 1e-6), method=self.scenario.solver.method)
            x[todo] = burn[:, -1, :]
        x[:, model.cell_mask] = 0.0
        return x, method

    def problem(self, start: int = 0, count: int | None = None, covariates: pd.DataFrame | None = None, *,
                with_baseline: bool = True) -> Problem:
        """The solver problem for patients start..start+count-1 of the scenario's population.

        ``covariates`` (one row per patient, columns from COVARIATES) gives each patient their own weight, age,
        smoking, grade... in place of the scenario's single patient; their between-patient draws are kept.
        ``with_baseline=False`` leaves the start state empty, for a caller that stacks several setups' problems
        (parameter sets) and runs their burn-in as one batch (``baseline``)."""
        sc = self.scenario
        count = sc.population.size - start if count is None else count
        P = draw_parameters(self.nominal, self.model.param_names, self.pset, seed=sc.seed, start=start,
                            count=count, variability=sc.population.variability)
        if covariates is not None:
            if len(covariates) != count:
                raise InputError("covariates", len(covariates), f"one row per patient ({count})")
            unknown = sorted(set(covariates.columns) - set(COVARIATES))
            if unknown:
                raise InputError("covariates", unknown, f"columns among {list(COVARIATES)}")
            P = self._with_covariates(P, covariates)
        amount = self._dose_amounts(count, P, self.patient_doses(count, covariates))
        t_eval = output_times(sc)
        boluses, infusions = [], []
        for td in sc.regimen.times_days:
            t0 = td * 24.0
            if sc.regimen.infusion_minutes > 0:
                dur = sc.regimen.infusion_minutes / 60.0
                infusions.append(Infusion(t0, t0 + dur, amount / dur))
            else:
                boluses.append(Bolus(t0, amount))
        chronic = self.chronic_state(P) if with_baseline else None
        return Problem(self.model, P, t_eval, x0=None if chronic is None else chronic[0], boluses=tuple(boluses),
                       infusions=tuple(infusions), baseline_method=None if chronic is None else chronic[1])

    def _with_covariates(self, P: np.ndarray, covariates: pd.DataFrame) -> np.ndarray:
        """Scale each environment parameter by patient value / scenario value (set it where the scenario's is 0);
        what-if overrides named in the scenario's ``parameters`` win."""
        if not self.has_tissue:
            return P
        P = P.copy()
        for name, values in environment_parameters(covariates, self.pset).items():
            if name not in self.model.param_names or name in self.scenario.parameters:
                continue
            col = self.model.param_index(name)
            ref = self.pset[name].value
            P[:, col] = values if ref == 0 else P[:, col] * (values / ref)
        return P


@dataclass(frozen=True)
class _Inputs:
    """Everything a scenario resolves to before its model is compiled (all names and values checked)."""

    pset: ParameterSet
    product: Product
    factors: PotencyFactors
    site: str
    placement_parameter: str | None
    placement: float | None
    mechanisms: tuple[str, ...]
    overrides: tuple[Override, ...]
    retention_parameter: str | None = None
    retained: float | None = None


def check_scenario(scenario: Scenario, *, file: str | None = None) -> None:
    """Resolve every name and value of a scenario against the model's data (parameter overrides and their bounds,
    mechanisms, guidance, the species' body weight, a lot) without compiling or running anything: an InputError
    naming ``file`` (default: the file the scenario was read from) on the first problem."""
    _resolve_inputs(scenario, file or scenario.source_file)


def _resolve_inputs(scenario: Scenario, file: str | None, values: Mapping[str, float] | None = None) -> _Inputs:
    try:
        return _inputs(scenario, file, values)
    except InputError as exc:
        raise exc.with_file(file) from None


def _inputs(scenario: Scenario, file: str | None, values: Mapping[str, float] | None = None) -> _Inputs:
    """``values`` replaces data-file values by name before anything is derived from them (one parameter set drawn
    from the uncertainty distributions: potency, placement and the patient's environment follow it)."""
    reg = scenario.regimen
    site = scenario_site(scenario)
    pset = load_parameter_sets(parameter_files(scenario))
    _check_weight(scenario, pset)
    if values:
        unknown = sorted(set(values) - set(pset.names()))
        if unknown:
            raise InputError("parameter set", unknown, f"names of model parameters, e.g. {sorted(pset.names())[:12]} ...")
        pset = _with_values(pset, values)
    mechanisms = KINETICS + TISSUE if scenario.disease else KINETICS
    unknown_mech = sorted(set(scenario.mechanisms) - set(mechanisms))
    if unknown_mech:
        close = difflib.get_close_matches(unknown_mech[0], mechanisms, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InputError("mechanisms", unknown_mech[0], f"{hint}switches for the model's mechanisms: {list(mechanisms)}")
    product = _product(scenario)
    factors = potency_factors(product, pset)
    derived = {"m_death": factors.death_multiplier, "S_target": scenario.patient.target_inflammation}
    if scenario.disease:
        derived.pop("S_target")
        derived.update(patient_environment(scenario, pset))
        derived["potency"] = factors.potency
    pset = _with_values(pset, derived)
    overrides = check_overrides(pset, scenario.parameters, scenario.allow_out_of_bounds, file=file)
    pset = apply_overrides(pset, overrides)
    placement_name = placement = None
    if is_local(reg.route):
        placement_name = placement_parameter(site, reg.guidance, reg.approach, pset)
        placement = pset[placement_name].value
    retention_name = retention_parameter(reg.route)
    retained = None
    if retention_name is not None:
        if retention_name not in pset:
            raise InputError("regimen.route", reg.route, f"a route with a recorded retention ({retention_name}) in "
                             f"site_{site}.yaml")
        retained = pset[retention_name].value
    return _Inputs(pset, product, factors, site, placement_name, placement, mechanisms, overrides, retention_name,
                   retained)


def _check_weight(scenario: Scenario, pset: ParameterSet) -> None:
    """The patient's weight within the species' plausible range (the bounds of body_weight in its data file)."""
    w = scenario.patient.weight_kg
    par = pset["body_weight"]
    if w is None or par.bounds is None:
        return
    w_kg = convert(w, "kg", par.units)
    if not par.bounds[0] <= w_kg <= par.bounds[1]:
        raise InputError("patient.weight_kg", w, f"a {scenario.species} body weight within [{par.bounds[0]:g}, "
                         f"{par.bounds[1]:g}] {par.units} (body_weight bounds in {par.origin})")


def resolve_setup(scenario: Scenario, values: Mapping[str, float] | None = None, *, file: str | None = None
                  ) -> Setup:
    """Resolve parameters (defaults, species, site, product, what-ifs) and the model composition. Every name and
    value is checked (``check_scenario``) before the model is compiled; errors name ``file`` (default: the file
    the scenario was read from). ``values`` replaces data-file values by name first (one parameter set drawn from
    the uncertainty distributions)."""
    return _compile_setup(scenario, _resolve_inputs(scenario, file or scenario.source_file, values))


def _compile_setup(scenario: Scenario, inputs: _Inputs) -> Setup:
    model = compiled(inputs.mechanisms, tuple(sorted(scenario.mechanisms.items())), scenario.label)
    cited = {"rodas5p": "steinebach2023", "rodas4": "hairer1996"}[scenario.solver.method]
    solver_keys = (cited,) if scenario.solver.kind in ("batched", "numpy", "jax") else ()
    if scenario.solver.kind == "batched" and model.linear:
        solver_keys = ("moler2003", cited)  # the exact solution (solvers.linear); the Rosenbrock method its fallback
    return Setup(scenario, model, inputs.pset, inputs.product, inputs.factors, inputs.site,
                 inputs.placement_parameter, inputs.placement, model.parameter_vector(inputs.pset), solver_keys,
                 inputs.overrides, inputs.retention_parameter, inputs.retained)


def scenario_site(scenario: Scenario) -> str:
    """The site a scenario delivers to: regimen.site, else its lesion's organ (intravenous), else the route's."""
    lesion = scenario.lesion
    return site_of(scenario.regimen.route, scenario.regimen.site, lesion.organ if lesion else None)


def parameter_files(scenario: Scenario) -> list[str]:
    """The bundled parameter files a scenario's run reads, later ones overriding earlier ones."""
    site = scenario_site(scenario)
    files = ["kinetics", "product", f"species_{scenario.species}", f"site_{site}"]
    if scenario.disease:
        files += ["tissue", f"disease_{scenario.disease}"]
    if scenario.label:
        files.append("labels")
    return files


COVARIATES = ("weight_kg", "age_years", "smoker", "vascular_disease", "nutrition", "baseline_inflammation",
              "kellgren_lawrence", "gvhd_grade")


def patient_environment(scenario: Scenario, pset: ParameterSet) -> dict[str, float]:
    """The scenario's patient as run-time parameter values (see ``environment_parameters``)."""
    pt = scenario.patient
    table = pd.DataFrame([{c: getattr(pt, c) for c in COVARIATES}])
    return {k: float(v[0]) for k, v in environment_parameters(table, pset).items()}


def environment_parameters(covariates: pd.DataFrame, pset: ParameterSet) -> dict[str, np.ndarray]:
    """Patients' covariates (one row each; columns as PatientSpec, None/NaN = not given) as run-time parameter
    values (B15, B17): extracellular volume from weight, perfusion from smoking and vascular disease, repair
    capacity from age and nutrition, the disease's drive from its grade and the patient's baseline inflammation,
    structural loss from the radiographic grade. Vectorised so a virtual trial can give every patient their own."""
    n = len(covariates)

    def col(name, default):
        if name not in covariates:
            return np.full(n, default, dtype=object)
        values = covariates[name].to_numpy(dtype=object, copy=True)
        values[pd.isna(values)] = default  # None or NaN: not given
        return values

    weight = col("weight_kg", pset["body_weight"].value).astype(float)
    out = {"V_ecf": convert(pset["ecf_per_kg"].value, "L", "mL") * weight}
    perf = np.full(n, pset["perf_base"].value)
    perf = np.where(col("smoker", False).astype(bool), perf * pset["smoking_perfusion"].value, perf)
    perf = np.where(col("vascular_disease", False).astype(bool), perf * pset["vascular_perfusion"].value, perf)
    out["perf_base"] = perf
    age = col("age_years", np.nan).astype(float)
    slope = pset["age_repair_slope"].value
    age_factor = np.where(np.isnan(age), 1.0, np.maximum(0.2, 1.0 - slope * np.maximum(0.0, age - 40.0) / 10.0))
    poor = col("nutrition", "adequate") == "poor"
    out["repair_capacity"] = pset["repair_capacity"].value * age_factor * \
        np.where(poor, pset["poor_nutrition_repair"].value, 1.0)
    grade = col("gvhd_grade", None)
    insult = np.array([pset[f"insult_grade_{g}"].value if g else pset["insult"].value for g in grade])
    out["insult"] = insult * col("baseline_inflammation", 1.0).astype(float)
    kl = col("kellgren_lawrence", None)
    if any(k is not None for k in kl):
        default = pset["structure_0"].value
        out["structure_0"] = np.array([pset[f"structure_0_kl{int(k)}"].value if k is not None else default
                                       for k in kl])
    return out


def _with_values(pset: ParameterSet, values: dict[str, float]) -> ParameterSet:
    """Set run-time values (from product and patient) while keeping each parameter's citation."""
    return ParameterSet({**pset.parameters, **{k: pset[k].with_value(v) for k, v in values.items()}})


def _product(scenario: Scenario) -> Product:
    spec = scenario.product
    if spec.lot:
        from .product.lot import product_from_lot

        return product_from_lot(spec.lot, allow_unreleased=spec.allow_unreleased, donor=spec.donor)
    return Product(source=spec.source, donor=spec.donor, passage=spec.passage,
                   population_doublings=spec.population_doublings, viability=spec.viability,
                   cryo_state=spec.cryo_state)


def output_times(scenario: Scenario) -> np.ndarray:
    """Output grid in hours: early minutes-to-hours points, a regular grid, and each dose time."""
    end = scenario.duration_days * 24.0
    if scenario.outputs.times_hours is not None:
        t = np.asarray(scenario.outputs.times_hours, dtype=float)
        if t.max() > end:
            raise InputError("outputs.times_hours", float(t.max()), f"times <= duration ({end} h)")
        return np.unique(np.append(t, 0.0))
    early = np.array([0.0, 1 / 60, 5 / 60, 0.25, 0.5, 1, 2, 4, 8, 12, 16, 20])
    step = 24.0 / scenario.outputs.points_per_day
    grid = np.arange(0.0, end + 1e-9, step)
    doses = np.array(scenario.regimen.times_days) * 24.0
    after = (doses[:, None] + early[None, 1:]).ravel()
    t = np.unique(np.concatenate([early, grid, doses, after, [end]]))
    return t[t <= end]


def solve(setup: Setup, problem: Problem, *, first_patient: int = 0) -> np.ndarray:
    """Run the scenario's solver on a problem and check the result: finite, no state negative beyond round-off,
    and the cell mass balance. With the compiled engine, a patient whose solve fails does not stop the others:
    :class:`SolveFailure` is raised after the whole batch, carrying the other patients' (checked) results and each
    patient's status."""
    sc = setup.scenario.solver
    if sc.kind == "reference":
        states = solve_reference(problem)
    elif sc.kind == "jax":
        try:
            from .solvers.jax_solver import solve_jax
        except ImportError as exc:
            raise InputError("solver.kind", "jax", "'batched', 'numpy' or 'reference', or install the JAX extra: "
                             f"pip install 'mscsim[jax]' ({exc})") from None
        states = solve_jax(problem, rtol=sc.rtol, method=sc.method)
    elif sc.kind == "numpy":
        states = solve_batched(problem, rtol=sc.rtol, max_steps=sc.max_steps, method=sc.method)
    else:
        engine = solve_linear if problem.model.linear else solve_compiled  # linear: the exact solution
        try:
            states = engine(problem, rtol=sc.rtol, max_steps=sc.max_steps, method=sc.method)
        except SolveFailure as failure:
            ok = np.asarray(failure.status) == 0
            check_positivity(problem, failure.states, first_patient=first_patient, patients=ok)
            check_conservation(problem, failure.states)
            raise
    check_positivity(problem, states, first_patient=first_patient)
    check_conservation(problem, states)
    return states


def check_positivity(problem: Problem, states: np.ndarray, *, first_patient: int = 0,
                     patients: np.ndarray | None = None) -> None:
    """Every state finite, and none below zero by more than round-off: cell states by more than
    POSITIVITY_RTOL_CELLS of the patient's administered cells (at least one cell), signal states by more than
    POSITIVITY_RTOL_SIGNALS of their typical magnitude (states declared ``signed``, running totals of a net rate,
    are only checked for being finite). A negative count of cells or a negative concentration means the inputs or
    the numerics failed; its results are not written. ``patients``: a mask of the patients to
    check (those whose solve succeeded; a failed one is NaN and reported as failed)."""
    model = problem.model
    if patients is not None:
        idx = np.flatnonzero(patients)
        states = states[idx]
    else:
        idx = np.arange(states.shape[0])
    bad = ~np.isfinite(states)
    if bad.any():
        p, t, k = (int(i[0]) for i in np.nonzero(bad))
        raise PositivityError(f"the solver returned a non-finite value ({states[p, t, k]}) for state "
                              f"'{model.state_names[k]}' of patient {first_patient + int(idx[p])} at "
                              f"{problem.t_eval[t]:g} h; "
                              "the parameters may be outside what the model can integrate")
    rtol = np.where(model.cell_mask, POSITIVITY_RTOL_CELLS, POSITIVITY_RTOL_SIGNALS)
    scale = np.broadcast_to(problem.state_scale(), (problem.n_patients, model.n_states))[idx]
    floor = np.where(model.signed_mask[None, :], -np.inf, -rtol[None, :] * scale)  # (B, n); signed: no floor
    below = states < floor[:, None, :]
    if below.any():
        p, t, k = (int(i[0]) for i in np.nonzero(below))
        name = model.state_names[k]
        what = "cells" if model.cell_mask[k] else model.state_units[k]
        raise PositivityError(f"state '{name}' went negative: {states[p, t, k]:.4g} {what} for patient "
                              f"{first_patient + int(idx[p])} at {problem.t_eval[t]:g} h (round-off allows "
                              f"{floor[p, k]:.3g}); a parameter value (an override outside its bounds?) makes the "
                              "model unphysical")


def check_conservation(problem: Problem, states: np.ndarray) -> None:
    """viable + debris + cleared = administered, to 1e-9 relative, for every patient and time (patients whose solve
    failed, NaN, are skipped: they are reported as failed)."""
    total = states[:, :, problem.model.cell_mask].sum(axis=2)
    adm = problem.administered()
    scale = np.maximum(adm.max(axis=1, keepdims=True), 1.0)
    err = np.abs(total - adm) / scale
    worst = float(np.nanmax(err)) if np.isfinite(err).any() else 0.0
    if worst > CONSERVATION_RTOL:
        raise ConservationError(f"cell mass balance broken: relative error {worst:.3g} > {CONSERVATION_RTOL}")
    if problem.model.label_mask.any():  # the label: on cells + in debris + in phagocytes + free + excreted = injected
        label = states[:, :, problem.model.label_mask].sum(axis=2)
        given = problem.administered(problem.model.label_mask)
        err = np.abs(label - given) / np.maximum(given.max(axis=1, keepdims=True), 1e-300)
        worst = float(np.nanmax(err)) if np.isfinite(err).any() else 0.0
        if worst > CONSERVATION_RTOL:
            raise ConservationError(f"label mass balance broken: relative error {worst:.3g} > {CONSERVATION_RTOL}")


def untreated(problem: Problem) -> Problem:
    """The same patients, baseline and output times with every dose set to nothing (the untreated comparator)."""
    return replace(problem, boluses=tuple(replace(b, amount=np.zeros_like(b.amount)) for b in problem.boluses),
                   infusions=tuple(replace(i, rate=np.zeros_like(i.rate)) for i in problem.infusions))


def simulate_chunk(setup: Setup, start: int, count: int, covariates: pd.DataFrame | None = None, *,
                   stage=None) -> xr.Dataset:
    """Patients start..start+count-1 of a resolved scenario as labelled results (the unit of work a chunked
    or distributed runner hands out; a patient's numbers do not depend on the chunk it is in). ``covariates``
    gives each patient their own covariates (see ``Setup.problem``). ``stage(text)``, when given, is told as
    each step starts (burn-in, treated course, untreated comparator): progress for long single runs."""
    say = stage or (lambda text: None)
    sc = setup.scenario
    if setup.has_tissue:
        say("untreated disease to its chronic state" + (f" ({BURN_IN_DAYS:g}-day untreated run)"
                                                         if sc.solver.baseline == "integration" else " (steady state)"))
    prob = setup.problem(start, count, covariates)
    doses = len(sc.regimen.times_days)
    say(f"treated course ({sc.duration_days:g} d, {doses} dose{'s' if doses > 1 else ''})")
    states, status = solve_keeping_others(setup, prob, first_patient=start)
    untreated_states = None
    if setup.has_tissue:  # the same patients untreated, from the same baseline: what the treatment changed
        say(f"untreated comparator ({sc.duration_days:g} d)")
        untreated_states, status_u = solve_keeping_others(setup, untreated(prob), first_patient=start)
        status = np.maximum(status, status_u)
    ds = label_chunk(setup, prob, states, untreated_states, start=start, doses=setup.patient_doses(count, covariates))
    add_run_status(ds, status, prob.baseline_method)
    return ds


def label_chunk(setup: Setup, prob: Problem, states: np.ndarray, untreated_states: np.ndarray | None, *,
                start: int = 0, doses: np.ndarray | None = None) -> xr.Dataset:
    """Solved states of a chunk (and, for a disease, of the same patients untreated) as labelled results with
    the disease's endpoints."""
    ds = to_dataset(setup, np.asarray(prob.t_eval, dtype=float), states, prob.administered(), first_patient=start,
                    doses=doses)
    if untreated_states is not None:
        for k, name in enumerate(setup.model.state_names):
            if not setup.model.cell_mask[k] and not setup.model.label_mask[k]:
                attrs = dict(ds[name].attrs, long_name=f"{ds[name].attrs.get('long_name', name)} (untreated)")
                ds[f"{name}_untreated"] = (("patient", "time"), untreated_states[:, :, k], attrs)
        add_endpoints(ds, setup.scenario.disease, setup.model.state_names)
    return ds


def solve_keeping_others(setup: Setup, problem: Problem, *, first_patient: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(states, status): ``solve``, but a patient whose solve failed is kept as NaN with its status (non-zero, see
    ``mscsim.solvers.compiled.STATUS``) instead of failing the whole batch."""
    try:
        return solve(setup, problem, first_patient=first_patient), np.zeros(problem.n_patients, dtype=np.int64)
    except SolveFailure as failure:
        return failure.states, failure.status


def add_run_status(ds: xr.Dataset, status: np.ndarray, baseline_method: np.ndarray | None) -> None:
    """Per patient: whether the solve succeeded (``solve_status``, 0 = ok) and, for a disease, how the chronic
    start state was found (``baseline_method``); failed patients are listed in the ``solve_failures`` attribute."""
    from .solvers.compiled import STATUS

    ds["solve_status"] = (("patient",), np.asarray(status, dtype=np.int64),
                          {"long_name": "solver status (0 = ok)", "flag_values": list(STATUS),
                           "flag_meanings": " | ".join(STATUS.values())})
    failed = [f"patient {int(p)}: {STATUS[int(c)]}" for p, c in zip(ds["patient"].values, status) if c]
    ds.attrs["solve_failures"] = "; ".join(failed)
    if baseline_method is not None:
        ds["baseline_method"] = (("patient",), np.asarray(baseline_method, dtype=np.int64),
                                 {"long_name": "how the untreated chronic state was found",
                                  "flag_values": list(BASELINE_METHODS),
                                  "flag_meanings": " | ".join(BASELINE_METHODS.values())})


def simulate(scenario: Scenario, *, progress=None, stage=None, allow_large: bool = False) -> xr.Dataset:
    """Simulate every patient of the scenario (in chunks) and return labelled results. ``progress(done, total)``
    is called after each chunk; ``stage(text)`` as each step of a chunk starts. ``scenario`` may also be a
    preset name or a scenario file's path. A run whose numbers cannot be trusted (a negative or non-finite state,
    a broken mass balance) raises an MscsimError that names the scenario; a cohort too large to hold in memory is
    refused unless ``allow_large`` (see ``mscsim.sizing.check_size``)."""
    if not isinstance(scenario, Scenario):
        from .api import load

        scenario = load(scenario).scenario
    from .sizing import check_size

    inputs = _resolve_inputs(scenario, scenario.source_file)  # every name and value, before any work
    check_size(scenario, allow_large=allow_large)
    setup = _compile_setup(scenario, inputs)
    n = scenario.population.size
    chunk = scenario.solver.chunk_size
    parts = []
    for start in range(0, n, chunk):
        try:
            parts.append(simulate_chunk(setup, start, min(chunk, n - start), stage=stage))
        except (InputError, KeyboardInterrupt):
            raise
        except MscsimError as exc:
            where = scenario.source_file or f"scenario '{scenario.name}'"
            raise type(exc)(f"{where}: {exc}") from None
        if progress is not None:
            progress(min(start + chunk, n), n)
    if len(parts) == 1:
        return parts[0]
    return xr.concat(parts, dim="patient", data_vars="minimal", coords="minimal", compat="override",
                     combine_attrs="override")


def to_dataset(setup: Setup, t: np.ndarray, states: np.ndarray, administered: np.ndarray, *,
               first_patient: int = 0, doses: np.ndarray | None = None) -> xr.Dataset:
    """Results as an xarray Dataset: one variable per state (patient x time) with units and metadata."""
    model = setup.model
    kinds = {s.name: s for s in model.model.states}
    n = states.shape[0]
    coords = {"patient": np.arange(first_patient, first_patient + n), "time": ("time", t, {"units": "h", "long_name": "time since first dose"}),
              "time_days": ("time", t / 24.0, {"units": "d"})}
    data = {}
    for k, name in enumerate(model.state_names):
        s = kinds[name]
        data[name] = (("patient", "time"), states[:, :, k],
                      {"units": s.units, "long_name": s.description, "compartment": s.compartment, "kind": s.kind})
    viable = states[:, :, [i for i, nm in enumerate(model.state_names) if kinds[nm].kind == "viable"]].sum(axis=2)
    debris = states[:, :, [i for i, nm in enumerate(model.state_names) if kinds[nm].kind == "debris"]].sum(axis=2)
    data["viable_total"] = (("patient", "time"), viable, {"units": "cell", "long_name": "viable MSCs, all compartments"})
    data["debris_total"] = (("patient", "time"), debris, {"units": "cell", "long_name": "debris, all compartments"})
    data["administered"] = (("patient", "time"), administered, {"units": "cell",
                                                              "long_name": "cells administered so far"})
    f = setup.factors
    dose = np.full(n, setup.dose_cells()) if doses is None else np.asarray(doses, dtype=float)
    data["dose_cells"] = (("patient",), dose, {"units": "cell", "long_name": "cells per administration"})
    data["effective_potent_dose"] = (("patient",), f.effective_potent_dose(dose),
                                     {"units": "cell", "long_name": "count x viability x potency, per administration"})
    share = setup.target_share
    placed = f.effective_potent_dose(dose) * share if share is not None else np.nan
    data["potent_dose_at_target"] = (
        ("patient",), np.broadcast_to(placed, (n,)).astype(float),
        {"units": "cell", "long_name": "count x viability x potency x placement (x the organ's first-contact "
                                       "retention for a route into an organ lesion), per local or organ "
                                       "administration (NaN for intravenous dosing: the target gets cells only by "
                                       "homing)"})
    half_life = setup.label_half_life_hours()
    if half_life is not None:
        injected = 24.0 * setup.scenario.regimen.times_days[0]  # a labelled run has one administration
        data.update(imaging_variables(model, states, t, half_life, setup.scenario.label, injected))
    ds = xr.Dataset(data, coords=coords)
    if half_life is not None:
        ds.attrs.update({"label": setup.scenario.label, "label_half_life_h": half_life})
    ds.attrs.update({
        "title": f"mscsim results: {setup.scenario.name}",
        "mscsim_version": __version__,
        "scenario": setup.scenario.model_dump_json(),
        "seed": setup.scenario.seed,
        "site": setup.site,
        "placement_fraction": setup.placement_fraction,
        "retained_fraction": 1.0 if setup.retained is None else setup.retained,
        "viability": f.viability,
        "potency_factor": f.potency,
        "death_multiplier": f.death_multiplier,
        "mechanisms_enabled": ",".join(sorted(model.model.enabled)),
        "citations": ",".join(setup.citation_keys()),
        "parameter_overrides": json.dumps([o.record() for o in setup.overrides]),
        "disclaimer": "Research tool output, not medical advice.",
    })
    return ds


def imaging_variables(model: CompiledModel, states: np.ndarray, t: np.ndarray, half_life_h: float, label: str,
                      injected_h: float = 0.0) -> dict:
    """Each imaged organ's share of the injected activity over time (``imaging_<organ>``, decay-corrected, and
    ``imaging_<organ>_not_decay_corrected``: what a camera counts, corrected x exp(-ln2 (t - t_injection) / T)),
    as percent."""
    out = {}
    decay = decay_factor(np.maximum(t - injected_h, 0.0), half_life_h)[None, :]
    for organ, names in organ_states(model.model.states).items():
        share = 100.0 * states[:, :, [model.index(n) for n in names]].sum(axis=2)
        what = ORGAN_NAMES[organ]
        out[f"imaging_{organ}"] = (("patient", "time"), share, {
            "units": "% of injected activity", "kind": "imaging", "organ": what, "decay_corrected": 1,
            "long_name": f"{label} in {what}, % of injected activity (decay-corrected to injection)"})
        out[f"imaging_{organ}_not_decay_corrected"] = (("patient", "time"), share * decay, {
            "units": "% of injected activity", "kind": "imaging", "organ": what, "decay_corrected": 0,
            "long_name": f"{label} in {what}, % of injected activity (not decay-corrected: counts now)"})
    return out
