"""Export a disease's calibration problem as PEtab v1, so pyPESTO, AMICI or COPASI users can rerun or extend it.

The problem is the typical patient of each trial arm (one patient, nominal parameters, no between-patient draw)
against the published arm means and medians at the visits. It carries the SBML model of ``export-sbml`` (the
disease preset's scenario) with two changes that PEtab conditions need: a bolus of cells at time 0 is the cell
species' initial amounts, which each arm's condition sets (0 for a cell-free arm; a later dose is an event adding
a parameter ``dose_<event>_<species>`` that the condition sets), and each state mscsim holds
at its start value while it finds the chronic state (structural loss set by the grade, running totals) has its
own conversion factor (``hold_release_<state>``), 0 in an arm's preequilibration condition (the untreated
burn-in to the chronic steady state) and 1 after it. Estimated parameters are the disease's influential
uncertain ones in the bundled sensitivity records, with priors from their uncertainty distributions.
Changes from baseline are read against ``baseline_<state>`` species that keep the chronic state's values. What
PEtab cannot express (virtual cohorts, responder rates, differences between arms) is listed in
NOT_EXPORTED.tsv, never silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sympy as sp

from .. import __version__
from ..errors import InputError, MscsimError

if TYPE_CHECKING:
    from ..simulation import Setup

SBML_FILE, CONDITIONS, OBSERVABLES, MEASUREMENTS, PARAMETERS = (
    "model.xml", "conditions.tsv", "observables.tsv", "measurements.tsv", "parameters.tsv")
PROBLEM, NOT_EXPORTED, README = "problem.yaml", "NOT_EXPORTED.tsv", "README.md"
QUANTILES = (0.005, 0.995)  # bounds of an estimated parameter: the range the sensitivity runs sampled
CI_Z = 1.959963984540054  # a published 95% confidence interval spans mean +- this many standard errors
# published statistics a typical patient's value is compared to, and the observable each is read from
COMPARISONS = {"mean": "obs_{}", "median": "obs_{}", "mean_change": "obs_{}_change", "median_change": "obs_{}_change"}
CHANGES = ("mean_change", "median_change")
TRACKING_RATE = "baseline_tracking_rate"  # in the burn-in TRACKING_PER_HOUR, 0 after it, so baseline_<state>
TRACKING_PER_HOUR = 1.0  # keeps the chronic value through the arm (a numerical device: any rate > 0 has the same
# steady state, baseline = state; one per hour settles within the burn-in's first days)
LEFT_OUT_STATISTICS = {
    "rate": "a share of responders across an arm: needs a virtual cohort (population draws), which PEtab cannot "
            "express for one typical patient",
    "complete_rate": "a share of complete responders across an arm: needs a virtual cohort",
    "partial_rate": "a share of partial responders across an arm: needs a virtual cohort",
    "difference_rate": "a difference of responder shares between arms: needs a virtual cohort per arm",
    "difference_mean_change": "a difference between arms of changes from baseline: one PEtab observable sees "
                              "one condition (the arms' own changes are exported where published)",
}


@dataclass
class PetabProblem:
    """The exported problem in memory: SBML text, the PEtab tables and what was left out (with why)."""

    disease: str
    scenario: str
    scenario_file: str
    sbml: str
    conditions: pd.DataFrame
    observables: pd.DataFrame
    measurements: pd.DataFrame
    parameters: pd.DataFrame
    not_exported: pd.DataFrame
    designs: list[str] = field(default_factory=list)
    unit_warnings: list[str] = field(default_factory=list)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {CONDITIONS: self.conditions, OBSERVABLES: self.observables, MEASUREMENTS: self.measurements,
                PARAMETERS: self.parameters}


@dataclass(frozen=True)
class Arm:
    """One trial arm as a pair of PEtab conditions: its typical patient's parameters, doses and held states."""

    design: str
    name: str
    comparator: str
    values: dict[str, float]  # model parameters (internal units) of the arm's typical patient
    doses: dict[str, float]  # dose parameter -> amount at that event (0 for a cell-free arm)
    held: dict[str, tuple[float, str | None]]  # held state -> (start value, the parameter it is declared from)

    @property
    def condition(self) -> str:
        return f"{self.design}__{self.name}"

    @property
    def preequilibration(self) -> str:
        return f"{self.condition}__untreated"


def resolve_target(target: str) -> tuple[str, Path]:
    """(disease, scenario file) for a disease name (its preset) or a disease scenario (a preset name or file)."""
    from ..analysis.credibility import DISEASES
    from ..api import scenario_path
    from ..io.scenario import load_scenario

    if target in DISEASES:
        from .._presets import preset_dir

        return target, preset_dir() / f"{DISEASES[target].preset}.yaml"
    try:
        path = scenario_path(target)
    except InputError:
        raise InputError("DISEASE", target, f"a disease ({', '.join(sorted(DISEASES))}) or a disease scenario "
                         "(a preset name or YAML file)") from None
    disease = load_scenario(path).disease
    if disease not in DISEASES:
        raise InputError("disease", disease, f"a scenario of a disease with trial designs: {sorted(DISEASES)} "
                         "(a kinetics-only scenario has no endpoints to calibrate against)", file=str(path))
    return disease, path


def petab_problem(target: str, progress=None) -> PetabProblem:
    """Build the PEtab problem for a disease (its preset) or a disease scenario; see the module docstring."""
    from ..analysis.credibility import DISEASES
    from ..api import load
    from .sbml import unit_warnings

    say = progress or (lambda text: None)
    disease, path = resolve_target(target)
    left: list[dict] = []
    observables, tracked = _observables(disease, left)
    _check_comparable(disease, observables)  # refused before any model is built
    setup = load(path).setup()
    say(f"export-petab: the SBML model of {setup.scenario.name}")
    doc, slots, held = petab_document(setup, tracked)
    sbml = _sbml_text(doc)
    say(f"export-petab: the trial arms of {', '.join(DISEASES[disease].designs)} (each arm's chronic state)")
    arms = []
    for name in DISEASES[disease].designs:
        arms += _design_arms(name, setup, slots, held, left)
    measurements = _measurements(disease, arms, observables, left)
    if measurements.empty:
        raise MscsimError(f"PEtab export of {disease}: none of the trial arms with published means or medians can "
                          f"be expressed by the SBML of {setup.scenario.name} (see: "
                          f"{'; '.join(sorted({r['reason'] for r in left if r['what'] == 'trial arm'}))[:400]})")
    used = {a.condition for a in arms} & set(measurements["simulationConditionId"])
    arms = [a for a in arms if a.condition in used]
    conditions = _conditions(arms, slots, held, dict(zip(setup.model.param_names, map(float, setup.nominal))),
                             tracking=bool(tracked))
    parameters = _parameters(disease, setup, conditions, observables, measurements, left)
    _left_out_everywhere(disease, left)
    return PetabProblem(disease=disease, scenario=setup.scenario.name, scenario_file=str(path), sbml=sbml,
                        conditions=conditions,
                        observables=observables, measurements=measurements, parameters=parameters,
                        not_exported=pd.DataFrame(left, columns=["what", "item", "reason"]),
                        designs=list(DISEASES[disease].designs), unit_warnings=unit_warnings(doc))


# ---------------------------------------------------------------- the SBML model, made ready for conditions

def petab_document(setup: Setup, tracked: tuple[str, ...] = ()):
    """The export-sbml document made ready for conditions; returns (document, {condition column: (dose time h,
    state)}, {held state: release parameter}).

    A bolus of cells at time 0 becomes the species' initial amount (the preset's dose), which each arm's condition
    sets (0 in the burn-in: cells are 0 in the chronic state); a later dose stays an event adding a parameter
    ``dose_<event>_<state>``. Time-0 doses are not events because PEtab tools that process events during
    preequilibration (AMICI, PEtab v2) would fire them there, not after. Each state in ``tracked`` gets a
    ``baseline_<state>`` species that follows it during the burn-in and keeps its chronic value afterwards."""
    import libsbml

    from ..model.core import CELL_KINDS
    from .sbml import _math, _set, _xhtml, build_document, validate

    doc = build_document(setup)
    model = doc.getModel()
    states = {s.name: s for s in setup.model.model.states}
    slots: dict[str, tuple[float, str]] = {}
    for k in reversed(range(model.getNumEvents())):
        ev = model.getEvent(k)
        t = _event_time(ev)
        changes = {}
        for j in range(ev.getNumEventAssignments()):
            ea = ev.getEventAssignment(j)
            var, ast = ea.getVariable(), ea.getMath()
            amount = ast.getChild(1)
            if ast.getNumChildren() != 2 or ast.getChild(0).getName() != var or not amount.isNumber() \
                    or ast.getType() not in (libsbml.AST_PLUS, libsbml.AST_MINUS):
                raise MscsimError(f"PEtab export: event '{ev.getId()}' changes {var} by "
                                  f"'{libsbml.formulaToL3String(ast)}', not by a fixed amount")
            changes[var] = (ea, (-1.0 if ast.getType() == libsbml.AST_MINUS else 1.0) * amount.getValue(),
                            amount.getUnits())
        if t == 0.0:
            not_cells = [v for v in changes if v not in states or states[v].kind not in CELL_KINDS]
            if not_cells:
                raise MscsimError(f"PEtab export: the dose at time 0 changes {', '.join(not_cells)} (an infusion or "
                                  "a vesicle product), which a condition cannot set as a start value; only a bolus "
                                  "of cells at time 0 is exported")
            for var, (_, change, _) in changes.items():
                _set(model.getSpecies(var), InitialAmount=change)
                slots[var] = (0.0, var)
            model.removeEvent(k)
            continue
        for var, (ea, change, units) in changes.items():
            pid = f"dose_{ev.getId()}_{var}"
            p = model.createParameter()
            _set(p, Id=pid, Value=change, Units=units, Constant=True)
            _set(p, Notes=_xhtml(f"<p>Amount added to {var} by event {ev.getId()} at {t:g} h (a PEtab condition "
                                 "sets it per trial arm: 0 for a cell-free arm).</p>"))
            _set(ea, Math=_math(f"{var} + {pid}", model, f"event '{ev.getId()}'"))
            slots[pid] = (t, var)
    held = {}
    factors = {s.getId(): s.getConversionFactor() for s in model.getListOfSpecies()}  # before the held ones'
    for name in np.asarray(setup.model.state_names)[setup.model.held_mask]:
        species = model.getSpecies(str(name))
        factor = species.getConversionFactor()
        units = model.getParameter(factor).getUnits() if factor else "dimensionless"
        pid = f"hold_release_{name}"
        p = model.createParameter()
        _set(p, Id=pid, Value=1.0, Units=units, Constant=True)
        _set(p, Notes=_xhtml(f"<p>Conversion factor of {name}: 1 (its reactions act), or 0 in a preequilibration "
                             "condition, where mscsim holds it at its start value while it finds the untreated "
                             "chronic state.</p>"))
        _set(species, ConversionFactor=pid)
        held[str(name)] = pid
    if tracked:
        _add_baselines(model, setup, tracked, factors)
    validate(doc)
    return doc, slots, held


def _add_baselines(model, setup: Setup, tracked: tuple[str, ...], factors: dict[str, str]) -> None:
    """A species ``baseline_<state>`` per tracked state, like it (compartment, units, conversion factor), with a
    reaction ``track_baseline_<state>`` at rate baseline_tracking_rate x (state - baseline): during the burn-in
    (rate > 0) its steady state is the state's chronic value, and with the rate 0 (every arm's condition) it keeps
    that value while the arm runs, so an observable can subtract the baseline."""
    from ..model.units import is_concentration
    from .sbml import _math, _set, _xhtml

    k = model.createParameter()
    _set(k, Id=TRACKING_RATE, Value=0.0, Units="per_hour", Constant=True)  # a unit the rate constants define
    _set(k, Notes=_xhtml("<p>How fast each baseline_* species follows its state: set above 0 in the "
                         "preequilibration (burn-in) conditions, 0 in the arms' conditions, where the baselines "
                         "then hold the chronic state's values.</p>"))
    for name in tracked:
        x = model.getSpecies(name)
        b = model.createSpecies()
        bid = f"baseline_{name}"
        _set(b, Id=bid, Name=f"{name} at baseline (the chronic state before the first dose)",
             Compartment=x.getCompartment(), SubstanceUnits=x.getSubstanceUnits(),
             HasOnlySubstanceUnits=x.getHasOnlySubstanceUnits(), BoundaryCondition=False, Constant=False)
        if x.getHasOnlySubstanceUnits():
            _set(b, InitialAmount=x.getInitialAmount())
        else:
            _set(b, InitialConcentration=x.getInitialConcentration())
        law = f"{TRACKING_RATE} * ({name} - {bid})"
        if is_concentration(setup.model.model.state(name).units):
            law = f"{x.getCompartment()} * {law}"
        if factors.get(name):
            _set(b, ConversionFactor=factors[name])
            law = f"({law}) / {factors[name]}"
        r = model.createReaction()
        _set(r, Id=f"track_baseline_{name}", Name=f"baseline of {name} follows it in the burn-in", Reversible=True)
        _set(r.createProduct(), Species=bid, Stoichiometry=1.0, Constant=True)
        _set(r.createModifier(), Species=name)
        _set(r.createKineticLaw(), Math=_math(law, model, f"baseline of '{name}'"))


def _event_time(ev) -> float:
    """The time (h) of a dosing event, read from its trigger 'time >= T'."""
    ast = ev.getTrigger().getMath()
    return float(ast.getChild(1).getValue())


def _sbml_text(doc) -> str:
    import libsbml

    return libsbml.writeSBMLToString(doc)


# ---------------------------------------------------------------- arms as conditions

def _design_arms(name: str, setup: Setup, slots: dict, held: dict, left: list[dict]) -> list[Arm]:
    """The design's arms that the preset's SBML can express: same model, doses at the preset's dosing events."""
    from ..simulation import resolve_setup
    from ..trials.design import arm_scenario, load_design
    from .sbml import dosing_steps, exported_problem

    design, _ = load_design(name)
    cm = setup.model
    by_time = {(t, var): pid for pid, (t, var) in slots.items()}
    out = []
    for arm in design.arms:
        arm_setup = resolve_setup(arm_scenario(design, arm))
        am = arm_setup.model
        if am.state_names != cm.state_names or am.param_names != cm.param_names:
            left.append(_row("trial arm", f"{design.name}/{arm.name}", "its model composition differs from the "
                             f"preset's ({setup.scenario.name}); one SBML model cannot carry both"))
            continue
        prob = exported_problem(arm_setup)
        doses = dict.fromkeys(slots, 0.0)
        unplaced = []
        if arm.has_cells:
            for s in dosing_steps(prob, am.state_names, am.state_units):
                pid = by_time.get((s.t, s.variable))
                if pid is None:
                    unplaced.append(f"{s.variable} at {s.t:g} h")
                else:
                    doses[pid] += s.change
        if unplaced:
            left.append(_row("trial arm", f"{design.name}/{arm.name}", "doses at times or into states the preset's "
                             f"dosing events do not have ({', '.join(unplaced[:4])}); export the arm's own scenario"))
            continue
        P = prob.params[0]
        start = am.initial_signals(prob.params)[0]
        declared = {st.name: st.initial for st in am.model.states}
        out.append(Arm(design=design.name, name=arm.name, comparator=arm.comparator,
                       values=dict(zip(cm.param_names, map(float, P))), doses=doses,
                       held={s: (float(start[am.index(s)]), declared[s]) for s in held}))
    return out


def _conditions(arms: list[Arm], slots: dict, held: dict, nominal: dict[str, float], tracking: bool = False
                ) -> pd.DataFrame:
    """One simulation and one preequilibration condition per arm: doses (0 before the first dose), release
    factors (0 during the burn-in), the parameters where an arm's patient differs from the SBML's (the preset's
    patient), the held states' start values, and (for changes from baseline) the baselines' tracking rate."""
    track = ({TRACKING_RATE: TRACKING_PER_HOUR}, {TRACKING_RATE: 0.0}) if tracking else ({}, {})
    differ = [n for n in nominal if any(a.values[n] != nominal[n] for a in arms)]
    rows = []
    for a in arms:
        common = {n: a.values[n] for n in differ}
        # a held state starts from its declared parameter (so estimating that parameter moves it), or from the
        # number where a condition sets that parameter
        start = {s: v if p is None or p in differ else p for s, (v, p) in a.held.items()}
        rows.append({"conditionId": a.preequilibration, "conditionName": f"{a.design} {a.name}: untreated burn-in",
                     **common, **dict.fromkeys(slots, 0.0), **dict.fromkeys(held.values(), 0.0), **start, **track[0]})
        rows.append({"conditionId": a.condition, "conditionName": f"{a.design} {a.name}",
                     **common, **a.doses, **dict.fromkeys(held.values(), 1.0), **dict.fromkeys(held, np.nan),
                     **track[1]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- observables and measurements

def _check_comparable(disease: str, observables: pd.DataFrame) -> None:
    """Refuse a disease whose designs publish no mean or median of an exported endpoint (only rates, say)."""
    from ..analysis.credibility import DISEASES
    from ..trials.design import load_design

    obs = set(observables["observableId"])
    published = [p for name in DISEASES[disease].designs for p in load_design(name)[0].published]
    if not any(p.statistic in COMPARISONS and COMPARISONS[p.statistic].format(p.endpoint) in obs for p in published):
        kinds = sorted({p.statistic for p in published})
        raise MscsimError(f"PEtab export of {disease}: no published number that one typical patient per arm can be "
                          f"compared to: its designs ({', '.join(DISEASES[disease].designs)}) publish "
                          f"{', '.join(kinds)} of {', '.join(sorted({p.endpoint for p in published}))}, shares of a "
                          "cohort that PEtab cannot express (means or medians of a continuous endpoint are needed)")


def _observables(disease: str, left: list[dict]) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Each continuous endpoint as an observable of SBML species and the endpoint file's coefficients; the
    symptom endpoints carry the arm's comparator relief (trials.observe) through observableParameter1. An
    endpoint whose change from baseline is published also gets ``obs_<endpoint>_change``: the value minus the
    same expression of the baseline_<state> species (relief is 0 at baseline). Returns (table, the states
    whose baselines the changes need)."""
    from ..analysis.credibility import DISEASES
    from ..endpoints import load_endpoints
    from ..trials.design import load_design
    from ..model.units import convert
    from ..trials.observe import NATURAL_COURSE, SYMPTOMS
    from .sbml import L3Printer

    eps = load_endpoints(disease)
    day = convert(1.0, "d", "h", what="a day")
    changes = {p.endpoint for name in DISEASES[disease].designs for p in load_design(name)[0].published
               if p.statistic in CHANGES}
    rows, tracked = [], []
    for name, ep in eps.spec.endpoints.items():
        expr = sp.sympify(ep.expression, locals={"step": sp.Heaviside})
        if expr.has(sp.Heaviside) or tuple(ep.range or ()) == (0.0, 1.0):
            left.append(_row("endpoint", name, "a categorical (step) score of the typical patient: its value is "
                             "0/1 (or a stage) with no gradient, and the published numbers are shares of an arm; "
                             "not exported as an observable"))
            continue
        formula = L3Printer().doprint(expr)
        if name in SYMPTOMS:
            r = f"observableParameter1_obs_{name}"
            formula = (f"({formula}) * (1 - {r} * (1 - exp(-time / ({day:g} * placebo_tau_on))) * "
                       f"(placebo_persist + (1 - placebo_persist) * exp(-time / ({day:g} * placebo_tau_off))))")
            if disease in NATURAL_COURSE:  # the self-limiting natural course, every arm alike
                r_nc, tau_nc = NATURAL_COURSE[disease]
                formula = f"({formula}) * (1 - {r_nc} * (1 - exp(-time / ({day:g} * {tau_nc}))))"
        rows.append({"observableId": f"obs_{name}", "observableName": ep.long_name, "observableFormula": formula,
                     "observableTransformation": "lin", "noiseFormula": f"noiseParameter1_obs_{name}",
                     "noiseDistribution": "normal"})
        if name in changes:
            states = sorted(str(x) for x in expr.free_symbols if str(x) not in eps.coefficients.names())
            at_baseline = L3Printer().doprint(expr.subs({x: sp.Symbol(f"baseline_{x}") for x in states}))
            formula = formula.replace(f"observableParameter1_obs_{name}", f"observableParameter1_obs_{name}_change")
            rows.append({"observableId": f"obs_{name}_change",
                         "observableName": f"change from baseline: {ep.long_name}",
                         "observableFormula": f"{formula} - ({at_baseline})", "observableTransformation": "lin",
                         "noiseFormula": f"noiseParameter1_obs_{name}_change", "noiseDistribution": "normal"})
            tracked += [x for x in states if x not in tracked]
    for resp in eps.spec.responses:
        left.append(_row("endpoint", resp, "a response category (complete, partial, none, progression) judged "
                         "against each patient's own baseline stage; its published form is a share of an arm"))
    return pd.DataFrame(rows, columns=["observableId", "observableName", "observableFormula",
                                       "observableTransformation", "noiseFormula", "noiseDistribution"]), tuple(tracked)


def _measurements(disease: str, arms: list[Arm], observables: pd.DataFrame, left: list[dict]) -> pd.DataFrame:
    """Every published arm mean or median of a continuous endpoint, or of its change from baseline, at a visit,
    beside the arm's typical patient.
    Noise: the standard error from a published 95% CI, else the endpoint's per-patient measurement error
    (noise_sd_<endpoint>, data/parameters/trial_response.yaml), as no spread of the arm is reported."""
    from ..analysis.credibility import DISEASES
    from ..model.units import convert
    from ..trials.design import load_design
    from ..trials.observe import SYMPTOMS, response_parameters

    params = response_parameters()
    obs = set(observables["observableId"])
    by_arm = {(a.design, a.name): a for a in arms}
    rows = []
    for name in DISEASES[disease].designs:
        design, _ = load_design(name)
        for p in design.published:
            item = f"{design.name}/{p.arm}/{p.endpoint}/{p.statistic}/day {p.visit_day:g}"
            arm = by_arm.get((design.name, p.arm))
            if p.statistic not in COMPARISONS:
                left.append(_row("published value", item, LEFT_OUT_STATISTICS[p.statistic]))
            elif COMPARISONS[p.statistic].format(p.endpoint) not in obs:
                left.append(_row("published value", item, "its endpoint is not exported as an observable (above)"))
            elif arm is None:
                left.append(_row("published value", item, "its arm is not expressible in the preset's SBML (above)"))
            else:
                if p.ci_low is not None and p.ci_high is not None:
                    sigma = (p.ci_high - p.ci_low) / (2 * CI_Z)
                else:
                    sigma = params[f"noise_sd_{p.endpoint}"].value
                    if p.statistic in CHANGES:  # the difference of two measurements, each with that error
                        sigma *= math.sqrt(2.0)
                relief = f"placebo_r_{arm.comparator}" if arm.comparator != "none" else 0.0
                rows.append({"observableId": COMPARISONS[p.statistic].format(p.endpoint),
                             "preequilibrationConditionId": arm.preequilibration,
                             "simulationConditionId": arm.condition, "measurement": float(p.value),
                             "time": convert(p.visit_day, "d", "h", what="visit day"),
                             "observableParameters": relief if p.endpoint in SYMPTOMS else np.nan,
                             "noiseParameters": float(sigma), "datasetId": design.name})
    return pd.DataFrame(rows, columns=["observableId", "preequilibrationConditionId", "simulationConditionId",
                                       "measurement", "time", "observableParameters", "noiseParameters",
                                       "datasetId"])


# ---------------------------------------------------------------- parameters with priors

def estimated_candidates(disease: str) -> list[str]:
    """The disease's influential uncertain parameters in the bundled sensitivity records (any recorded output)."""
    from ..analysis.credibility import bundled_sensitivity

    names: list[str] = []
    for _, table, _ in bundled_sensitivity(disease):
        hit = table[(table["influential"] == True) & table["role"].notna()]  # noqa: E712 - a column of booleans
        names += [n for n in hit["parameter"] if n not in names]
    return names


def _parameters(disease: str, setup: Setup, conditions: pd.DataFrame, observables: pd.DataFrame,
                measurements: pd.DataFrame, left: list[dict]) -> pd.DataFrame:
    """Every constant model parameter not set by a condition, the observables' coefficients and the comparator
    parameters; the influential uncertain ones estimated, with bounds, scale and prior from their uncertainty."""
    from ..endpoints import load_endpoints
    from ..model.units import convert
    from ..trials.observe import NATURAL_COURSE, response_parameters

    cm = setup.model
    in_conditions = set(conditions.columns)
    sbml_values = dict(zip(cm.param_names, map(float, setup.nominal)))
    units = dict(zip(cm.param_names, cm.param_units))
    records: dict[str, tuple] = {}  # id -> (Parameter record, value used, factor data -> used units)
    for n in cm.param_names:
        if n not in in_conditions:
            par = setup.pset[n]
            records[n] = (par, sbml_values[n], convert(1.0, par.units, units[n], what=f"parameter '{n}'"))
    formulas = " ".join(observables["observableFormula"])
    used = set(re.findall(r"[A-Za-z_]\w*", formulas))
    coeffs = load_endpoints(disease).coefficients
    for n in coeffs.names():
        if n in used:
            records[n] = (coeffs[n], coeffs[n].value, 1.0)
    trial = response_parameters()
    overrides = {str(v) for v in measurements["observableParameters"].dropna() if isinstance(v, str)}
    shared = {"placebo_tau_on", "placebo_tau_off", "placebo_persist", *NATURAL_COURSE.get(disease, ())}
    for n in sorted((shared & used) | overrides):
        records[n] = (trial[n], trial[n].value, 1.0)
    wanted = estimated_candidates(disease)
    estimate = set()
    for n in wanted:
        reason = _why_fixed(n, records, in_conditions)
        if reason:
            left.append(_row("estimated parameter", n, f"influential in the sensitivity records but fixed here: "
                             f"{reason}"))
        else:
            estimate.add(n)
    rows = []
    for n, (par, value, k) in records.items():
        row = {"parameterId": n, "parameterName": (par.readable or n)[:80], "parameterScale": "lin",
               "lowerBound": value, "upperBound": value, "nominalValue": value, "estimate": 0}
        if n in estimate:
            row.update(_prior(par, k, left))
            row["estimate"] = 1
        rows.append(row)
    return pd.DataFrame(rows)


def _why_fixed(n: str, records: dict, in_conditions: set) -> str:
    """Why an influential parameter cannot be estimated in this problem ('' if it can)."""
    if n in in_conditions:
        return "it differs between the arms' typical patients (a condition sets it)"
    if n not in records:
        return ("not a parameter of the exported model or observables: mscsim derives model values from it (such as "
                "a state's start value for the patient's grade), which the conditions carry as numbers")
    par, value, k = records[n]
    if par.uncertainty is None or par.uncertainty.is_fixed:
        return "its uncertainty is 'fixed'"
    if not math.isclose(value, par.value * k, rel_tol=1e-9, abs_tol=0.0):
        return (f"the model's value ({value:.6g}) is derived from the data file's ({par.value:.6g} {par.units}) at run "
                "time (patient, product or placement), and estimating it would bypass that derivation")
    return ""


def _prior(par, k: float, left: list[dict]) -> dict:
    """Bounds, scale and prior of an estimated parameter from its uncertainty distribution (data units times
    ``k`` = the model's units): loguniform -> parameterScaleUniform on log10; uniform -> uniform; lognormal ->
    logNormal on log10; normal -> normal; logitnormal (no PEtab prior) -> uniform over its 0.5-99.5 % range."""
    from ..uncertainty.priors import ppf

    d = par.uncertainty
    lo, hi = (float(v) * k for v in ppf(par, np.array(QUANTILES)))
    v = par.value * k
    out = {"lowerBound": lo, "upperBound": hi, "nominalValue": v}
    if d.distribution == "loguniform":
        kind, args, scale = "parameterScaleUniform", (math.log10(d.low * k), math.log10(d.high * k)), "log10"
    elif d.distribution == "uniform":
        kind, args, scale = "uniform", (d.low * k, d.high * k), "lin"
    elif d.distribution == "lognormal":
        kind, args, scale = "logNormal", (math.log(v), math.sqrt(math.log1p(d.cv ** 2))), "log10"
    elif d.distribution == "normal":
        kind, args, scale = "normal", (v, d.sd * k), "lin"
    else:
        kind, args, scale = "uniform", (lo, hi), "lin"
        left.append(_row("prior", par.name, f"{d.distribution} uncertainty has no PEtab v1 prior: exported as "
                         "uniform over its 0.5-99.5 % range"))
    if d.distribution in ("uniform", "loguniform"):
        out["lowerBound"], out["upperBound"] = d.low * k, d.high * k
    text = ";".join(f"{a:.12g}" for a in args)
    out.update({"parameterScale": scale, "objectivePriorType": kind, "objectivePriorParameters": text,
                "initializationPriorType": kind, "initializationPriorParameters": text})
    return out


def _row(what: str, item: str, reason: str) -> dict:
    return {"what": what, "item": item, "reason": reason}


def _left_out_everywhere(disease: str, left: list[dict]) -> None:
    """What no PEtab v1 problem of one typical patient per arm carries, whatever the disease."""
    left += [
        _row("virtual cohort", disease, "between-patient variability and the trial cohorts (population draws): "
             "PEtab v1 describes one model trajectory per condition; each arm is its typical patient"),
        _row("observation model", disease, "the comparator relief of each patient is drawn around "
             "placebo_r_<comparator>; "
             "here it is the nominal relief. Standard-care remissions and response upgrades, measurement noise draws, "
             "dropout and screening at baseline are left out, and endpoint values are not clipped to their scale"),
        _row("validation targets", "data/validation/*.yaml", "each runs its own scenario (another species, product, "
             "route or an in vitro co-culture), or compares two runs (a ratio of benefits): not the preset's SBML"),
        _row("between-trial heterogeneity", "data/calibration/heterogeneity.yaml", "mscsim calibrate gives each trial "
             "random effects on its common response and the cells' effect (SDs tau_trial, tau_cells); PEtab v1 has "
             "no random effects, so the exported problem treats every trial as the typical one (as "
             "'mscsim calibrate --no-heterogeneity')"),
    ]


# ---------------------------------------------------------------- writing and checking

def lint(problem_yaml: str | Path) -> list[str]:
    """PEtab's own checks (petab.v1.lint_problem) of a written problem: the error messages it logs ([] = valid)."""
    import logging

    import petab.v1 as petab

    messages: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR:
                messages.append(record.getMessage())

    logger = logging.getLogger("petab")
    handler = _Keep()
    logger.addHandler(handler)
    try:
        problem = petab.Problem.from_yaml(str(problem_yaml))
        failed = petab.lint_problem(problem)
    finally:
        logger.removeHandler(handler)
    if failed and not messages:
        messages.append("petab.lint_problem reported a problem")
    return messages


def export_petab(target: str, out: str | Path, progress=None) -> tuple[Path, PetabProblem]:
    """Write the PEtab problem (SBML, tables, problem.yaml, NOT_EXPORTED.tsv, README.md, manifest.json) into
    ``out`` atomically, after PEtab's own lint passes; returns (folder, problem)."""
    from ..io.outputs import atomic_output_dir, check_output_dir
    from .._optional import require

    require("libsbml", "sbml", "PEtab export")
    require("petab", "petab", "PEtab export")
    check_output_dir(out)  # refused before any work
    problem = petab_problem(target, progress)
    if problem.unit_warnings:
        raise MscsimError(f"PEtab export: the SBML has {len(problem.unit_warnings)} unit warning(s); first: "
                          f"{problem.unit_warnings[0]}")
    with atomic_output_dir(out) as tmp:
        (tmp / SBML_FILE).write_text(problem.sbml, encoding="utf-8")
        for name, table in problem.tables().items():
            table.to_csv(tmp / name, sep="\t", index=False)
        problem.not_exported.to_csv(tmp / NOT_EXPORTED, sep="\t", index=False)
        (tmp / PROBLEM).write_text(_problem_yaml(), encoding="utf-8")
        errors = lint(tmp / PROBLEM)
        if errors:
            raise MscsimError(f"PEtab export of {problem.disease}: petab's lint found {len(errors)} error(s); first: "
                              f"{errors[0]}")
        (tmp / README).write_text(readme(problem), encoding="utf-8")
        files = [SBML_FILE, *problem.tables(), PROBLEM, NOT_EXPORTED, README, "manifest.json"]
        (tmp / "manifest.json").write_text(json.dumps(manifest(problem, files), indent=2), encoding="utf-8")
    return Path(out), problem


def _problem_yaml() -> str:
    import yaml

    return yaml.safe_dump({"format_version": 1, "parameter_file": PARAMETERS, "problems": [
        {"sbml_files": [SBML_FILE], "condition_files": [CONDITIONS], "measurement_files": [MEASUREMENTS],
         "observable_files": [OBSERVABLES]}]}, sort_keys=False)


def manifest(problem: PetabProblem, files: list[str]) -> dict:
    p = problem.parameters
    return {"mscsim_version": __version__, "command": "export-petab", "disease": problem.disease,
            "scenario": problem.scenario, "scenario_file": problem.scenario_file, "seed": None, "patient": "the typical patient of each arm (nominal "
            "parameters, no between-patient draw; no random numbers)", "designs": problem.designs,
            "conditions": int(len(problem.conditions)), "observables": int(len(problem.observables)),
            "measurements": int(len(problem.measurements)), "parameters": int(len(p)),
            "estimated": [str(n) for n in p.loc[p["estimate"] == 1, "parameterId"]],
            "not_exported": int(len(problem.not_exported)), "sbml_unit_warnings": len(problem.unit_warnings),
            "files": files, "disclaimer": "Research tool output, not medical advice."}


def readme(problem: PetabProblem) -> str:
    """The output folder's README: what the problem is, how it maps mscsim, and what it leaves out."""
    p = problem.parameters
    est = ", ".join(p.loc[p["estimate"] == 1, "parameterId"])
    return f"""# PEtab problem: {problem.disease} (mscsim {__version__})

Exported by `mscsim export-petab` from the preset scenario `{problem.scenario}` and the trial designs
{', '.join(problem.designs)}. Research tool output, not medical advice.

Files: `{PROBLEM}` (PEtab v1), `{SBML_FILE}` (SBML L3V2, as `mscsim export-sbml`, unit-consistent), `{CONDITIONS}`,
`{OBSERVABLES}`, `{MEASUREMENTS}`, `{PARAMETERS}`, `{NOT_EXPORTED}` (what was left out and why). Check it with
`petablint -y {PROBLEM}`.

## What the problem is
- **One typical patient per trial arm**: the arm's scenario with nominal parameters and no between-patient draw.
  {len(problem.measurements)} measurements: the published arm means and medians of continuous endpoints at the
  visits (time in hours), each beside that patient's value.
- **Conditions**: per arm a preequilibration condition (`..__untreated`: every dose 0 and the held states'
  release factors `hold_release_*` 0, so structural loss and running totals stay at their start values while the
  untreated disease settles to its chronic steady state, as mscsim's burn-in does) and a simulation condition
  (the arm's cells at time 0 as the cell species' start values, any later dose as `dose_<event>_<species>`,
  release factors 1; species left empty keep the preequilibrated state). Parameters that differ between the arms' patients (age, grade, product, placement)
  are condition columns.
- **Observables**: the endpoint expressions of `data/endpoints/{problem.disease}.yaml` over SBML species. Pain,
  WOMAC and ODI carry the arm's comparator relief (hyaluronic acid, saline, sham, standard care) as
  `observableParameter1` = `placebo_r_<comparator>` (0 without one), with mscsim's time course of that relief;
  a tendinopathy's pain also its self-limiting natural course in every arm (`natural_r_tendinopathy`,
  `natural_tau_tendinopathy`).
- **Changes from baseline** (`obs_<endpoint>_change`): the value minus the same expression of the
  `baseline_<state>` species, which follow their states during the burn-in (`baseline_tracking_rate` > 0) and
  keep the chronic values while the arm runs (rate 0).
- **Noise**: normal; the standard error from a published 95% CI, else the endpoint's per-patient measurement
  error (`noise_sd_<endpoint>` in data/parameters/trial_response.yaml; times sqrt(2) for a change), since the
  papers report no spread of those values that the export could read.
- **Estimated parameters** (influential in the bundled sensitivity records, uncertain, and used as the data
  file gives them): {est or 'none'}. Bounds are the 0.5-99.5 % range the sensitivity runs sampled; priors map
  the uncertainty distributions (loguniform -> parameterScaleUniform on log10, uniform -> uniform, lognormal ->
  logNormal, normal -> normal). Every other parameter is fixed at its value (estimate = 0).

## What PEtab cannot express here
Virtual cohorts (between-patient draws), responder and remission rates, response categories, differences
between arms, the drawn comparator relief, noise, dropout and screening, and the
validation targets (other scenarios): each is listed in `{NOT_EXPORTED}` with its reason ({len(problem.not_exported)} rows).
"""

