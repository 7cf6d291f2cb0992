"""SBML export: libRoadRunner runs the exported model to the same numbers as mscsim; units and sources travel.

Covers every kinetics example and the tissue model (the knee-OA year, 44 states): signal species with their
units, starting from the patient's burn-in state, derived expressions as assignment rules.
"""

import libsbml
import numpy as np
import pytest
import roadrunner
import sympy as sp

from conftest import EXPORT_EXAMPLES as SCENARIO_EXAMPLES, TISSUE_EXAMPLE, example
from mscsim import MscsimError, __version__, resolve_setup, scenario_from_dict
from mscsim.errors import DataError
from mscsim.io.sbml import (build_document, derived_expressions, export_sbml, sources, sympy_math, unit_warnings,
                            validate)
from mscsim.model.core import CELL_KINDS
from mscsim.model.units import expression_units, is_concentration, registry, sbml_unit_factors
from mscsim.simulation import solve

roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)  # CVODE's tiny-step notes at event times are noise here


def one_patient(name: str, **changes):
    """A bundled example as a one-patient scenario at nominal parameters (what the export describes)."""
    return scenario_from_dict(example(name, population={"size": 1, "variability": False}, **changes))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export each example once per module, with mscsim's problem for the same patient (a disease's burn-in
    takes seconds, so it is not repeated per test): name -> (scenario, setup, path, problem)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            scenario = one_patient(name)
            setup = resolve_setup(scenario)
            path = export_sbml(setup, tmp_path_factory.mktemp("sbml") / f"{name}.xml")
            cache[name] = (scenario, setup, path, setup.problem())
        return cache[name]

    return get


@pytest.fixture(params=SCENARIO_EXAMPLES)
def exported(request, exports):
    return exports(request.param)


def selection(setup, name: str) -> str:
    """RoadRunner's selector for a state's value as mscsim has it: '[x]' (concentration) or 'x' (amount)."""
    return f"[{name}]" if is_concentration(setup.model.model.state(name).units) else name


def roadrunner_states(setup, path, prob) -> np.ndarray:
    """Species values from libRoadRunner at mscsim's output times, at tight tolerances; shape (times, states)."""
    names = list(setup.model.state_names)
    t = prob.t_eval
    rr = roadrunner.RoadRunner(str(path))
    rr.timeCourseSelections = ["time"] + [selection(setup, n) for n in names]
    rr.integrator.relative_tolerance = 1e-10
    # Per species: roadrunner rescales a scalar absolute_tolerance by the state values. A tenth of mscsim's own
    # absolute tolerance (1e-14 of the cells given; 1e-10 of a signal's typical magnitude): CVODE's global error
    # runs ~10x its local tolerance, and the comparison floors below are 1e-6 of those scales.
    for name, atol in zip(names, prob.atol(1e-13)[0]):
        rr.integrator.setIndividualTolerance(name, 0.1 * float(atol))
    out = np.asarray(rr.simulate(times=t))
    assert np.array_equal(out[:, 0], t)
    return out[:, 1:]


def assert_roadrunner_matches(scenario, path, prob=None) -> None:
    """Every state at every output time: |rr - mscsim| <= 1e-6 (|mscsim| + floor), where the floor is 1e7 times
    mscsim's absolute tolerance for the state: 1e-6 of the cells given for cell states (as in test_solvers.py),
    1e-2 of a signal's scale (its typical magnitude, or its dose if larger), which mscsim solves to 1e-9 of it.
    So a state agrees to 1e-6 relative, or to ten times the absolute error mscsim itself allows."""
    setup = resolve_setup(scenario)
    prob = setup.problem() if prob is None else prob  # the same patient as the export: one, nominal, burnt in
    ms = solve(setup, prob)[0]
    names = list(setup.model.state_names)
    t = prob.t_eval
    rr = roadrunner_states(setup, path, prob)
    administered = prob.administered()[0]
    total = max(float(administered.max()), 1.0)
    # At a dose time mscsim reports the state just after the dose (right-continuous). RoadRunner integrates to
    # the output time, fires the dose event whose trigger (time >= t_dose) turns true there, then records the
    # row, so its rows are right-continuous too. Check that convention first, via the cell mass balance
    # (a missed dose is far above 1e-8 of the total), so a change in it fails here with a clear message.
    cells = rr[:, setup.model.cell_mask].sum(axis=1)
    at_dose = np.isin(t, np.asarray(scenario.regimen.times_days) * 24.0)
    assert np.all(np.abs(cells - administered)[at_dose] <= 1e-8 * total), "roadrunner row at a dose time is pre-dose"
    worst = float(np.abs(cells - administered).max())
    assert worst <= 1e-8 * total, f"roadrunner's cells differ from those administered by up to {worst:.3g}"
    floor = 1e7 * prob.atol(1e-13)[0]
    err = np.abs(rr - ms) / (np.abs(ms) + floor)
    i, j = np.unravel_index(np.argmax(err), err.shape)
    assert err[i, j] <= 1e-6, f"{names[j]} at {t[i]} h: roadrunner {rr[i, j]!r}, mscsim {ms[i, j]!r}"


def test_roadrunner_reproduces_mscsim(exported):
    scenario, _, path, prob = exported
    assert_roadrunner_matches(scenario, path, prob)


def test_back_to_back_and_simultaneous_infusions_compose(tmp_path):
    # 12-hour infusions at 0, 0.5 (ends as the next starts) and 0.5 days again (two at once): the rate
    # parameter must net its changes at each instant, since simultaneous events read values at trigger time.
    scenario = one_patient("human_iv_2e6_per_kg", duration_days=3,
                           regimen={"times_days": [0, 0.5, 0.5], "infusion_minutes": 720})
    path = export_sbml(resolve_setup(scenario), tmp_path / "infusions.xml")
    doc = libsbml.readSBMLFromFile(str(path))  # the document must outlive every object taken from it
    names = [e.getName() for e in doc.getModel().getListOfEvents()]
    assert names == ["infusion starts at 0 h", "infusion ends and infusion starts at 12 h", "infusion ends at 24 h"]
    assert_roadrunner_matches(scenario, path)


PINT_TO_SBML_SI = {"kilogram": "kilogram", "meter": "metre", "second": "second", "mole": "mole", "cell": "item"}


def sbml_si(ud: libsbml.UnitDefinition) -> tuple[dict, float]:
    """A libsbml unit definition in SI base units (libsbml's own conversion): ({kind: exponent}, factor)."""
    si = libsbml.UnitDefinition.convertToSI(ud)
    kinds, factor = {}, 1.0
    for i in range(si.getNumUnits()):
        u = si.getUnit(i)
        kind = libsbml.UnitKind_toString(u.getKind())
        factor *= (u.getMultiplier() * 10.0 ** u.getScale()) ** u.getExponent()
        if kind != "dimensionless" and u.getExponent() != 0:
            kinds[kind] = kinds.get(kind, 0) + u.getExponent()
    return kinds, factor


def pint_si(units: str) -> tuple[dict, float]:
    """The same for one of mscsim's unit strings, by pint alone (independent of the exporter's conversion)."""
    q = registry().Quantity(1.0, "" if units == "1" else units).to_base_units()
    return {PINT_TO_SBML_SI[k]: v for k, v in q.unit_items()}, q.magnitude


def assert_same_units(ud: libsbml.UnitDefinition, units: str, what: str) -> None:
    got, want = sbml_si(ud), pint_si(units)
    assert got[0] == want[0] and got[1] == pytest.approx(want[1], rel=1e-12), f"{what}: SBML {got}, mscsim {units}"


def test_one_reaction_per_process_and_units_on_everything(exported):
    _, setup, path, prob = exported
    doc = libsbml.readSBMLFromFile(str(path))
    assert (doc.getLevel(), doc.getVersion()) == (3, 2)
    m = doc.getModel()
    processes = {p.name: p for p in setup.model.model.processes}
    reactions = list(m.getListOfReactions())
    modelled = [r for r in reactions if r.getId() in processes]
    assert [r.getId() for r in modelled] == list(setup.model.process_names)
    for r in modelled:
        p = processes[r.getId()]
        assert not r.getReversible()
        assert [s.getSpecies() for s in r.getListOfReactants()] == [p.source] * (p.source is not None)
        assert [s.getSpecies() for s in r.getListOfProducts()] == [p.target] * (p.target is not None)
        assert all(s.getStoichiometry() == 1 for s in [*r.getListOfReactants(), *r.getListOfProducts()])
    inputs = [r for r in reactions if r.getId() not in processes]  # infusion inputs, only for infusions
    assert bool(inputs) == (setup.scenario.regimen.infusion_minutes > 0)
    assert all(r.getId().startswith("infusion_into_") and r.getNumReactants() == 0 for r in inputs)

    # every species and parameter has units, and they are mscsim's (checked through SI by libsbml and pint)
    assert m.getTimeUnits() == "hour"
    hour = m.getUnitDefinition("hour").getUnit(0)
    assert (hour.getKind(), hour.getMultiplier(), hour.getExponent()) == (libsbml.UNIT_KIND_SECOND, 3600.0, 1)
    x0 = prob.initial_state()[0]  # where mscsim starts: zeros, or the disease's burn-in state
    for state, value in zip(setup.model.model.states, x0):
        s = m.getSpecies(state.name)
        assert s.isSetSubstanceUnits()
        assert_same_units(s.getDerivedUnitDefinition(), state.units, f"species {state.name}")
        conc = is_concentration(state.units)
        assert s.getHasOnlySubstanceUnits() != conc
        start = s.getInitialConcentration() if conc else s.getInitialAmount()
        assert start == pytest.approx(value, rel=1e-14, abs=0.0)  # libsbml writes 15 digits
        assert (value == 0) if state.kind in CELL_KINDS else True
    params = {p.getId(): p for p in m.getListOfParameters()}
    assert all(p.isSetUnits() for p in params.values())
    for name, units, value in zip(setup.model.param_names, setup.model.param_units, setup.nominal):
        assert params[name].getValue() == pytest.approx(value, rel=1e-14)
        assert_same_units(params[name].getDerivedUnitDefinition(), units, f"parameter {name}")
    rules = derived_expressions(setup)
    assert {r.getVariable() for r in m.getListOfRules()} == {d.name for d in rules.derived}
    for d in rules.derived:
        assert_same_units(params[d.name].getDerivedUnitDefinition(), d.units, f"rule {d.name}")

    # libsbml's unit checks follow every expression (literal numbers are declared dimensionless) and find them
    # all consistent, with no warning: SBML has one extent unit per model (cells), so a reaction that changes a
    # signal has its kinetic law in cells per hour and the signal species a conversion factor (1, in its own
    # substance units per cell) that turns the extent back into that signal's amount.
    signal_reactions = [r for r in modelled if not setup.model.cell_mask[
        setup.model.index(processes[r.getId()].source or processes[r.getId()].target)]]
    assert bool(signal_reactions) == (setup.has_tissue or bool(setup.model.label_mask.any()))  # or a label's
    per_hour = _base("second", -1, 3600.0)
    for r in modelled:
        p = processes[r.getId()]
        species = m.getSpecies(p.source or p.target)
        cell_law = libsbml.UnitDefinition.combine(m.getUnitDefinition("cell") or _base("item"), per_hour)
        got, want = sbml_si(r.getKineticLaw().getDerivedUnitDefinition()), sbml_si(cell_law)
        assert got[0] == want[0] and got[1] == pytest.approx(want[1], rel=1e-12), r.getId()
        if r in signal_reactions:
            factor = m.getParameter(species.getConversionFactor())
            assert factor is not None and factor.getValue() == 1.0 and factor.getConstant(), r.getId()
            amount_per_cell = libsbml.UnitDefinition.combine(
                m.getUnitDefinition(species.getSubstanceUnits()) or _base(species.getSubstanceUnits()),
                _base("item", -1))
            assert sbml_si(factor.getDerivedUnitDefinition())[0] == sbml_si(amount_per_cell)[0], r.getId()
        else:
            assert not species.isSetConversionFactor(), r.getId()
    # an imaging label's infusion inputs too: in extent (cells) per hour, through the label's conversion factor
    assert unit_warnings(doc) == []


def _base(kind: str, exponent: int = 1, multiplier: float = 1.0) -> libsbml.UnitDefinition:
    """A one-unit definition of an SBML base unit (for base units, which have no UnitDefinition in a model)."""
    ud = libsbml.UnitDefinition(3, 2)
    u = ud.createUnit()
    u.setKind(libsbml.UnitKind_forName(kind))
    u.setExponent(exponent)
    u.setScale(0)
    u.setMultiplier(multiplier)
    return ud


def test_notes_name_sources_grades_scenario_and_version(exported):
    _, setup, path, _ = exported
    doc = libsbml.readSBMLFromFile(str(path))
    m = doc.getModel()
    notes = m.getNotesString()
    refs = sources(setup)
    assert refs and all(r.doi in notes for r in refs if r.doi)
    assert setup.scenario.name in notes and f"mscsim {__version__}" in notes
    assert ("burn-in" in notes) == setup.has_tissue  # a disease export says it starts from the burn-in
    annotated = {m.getCVTerm(i).getResourceURI(k) for i in range(m.getNumCVTerms())
                 for k in range(m.getCVTerm(i).getNumResources())}
    assert annotated == {f"https://identifiers.org/doi:{r.doi}" for r in refs if r.doi}
    for name in setup.model.param_names:
        par, text = setup.pset[name], m.getParameter(name).getNotesString()
        assert all(key in text for key in par.source) and f"Evidence grade: {par.grade}" in text
    for state in setup.model.model.states:
        if state.kind not in CELL_KINDS:
            assert state.units in m.getSpecies(state.name).getNotesString()
    for d in derived_expressions(setup).derived:
        assert d.mechanism in m.getParameter(d.name).getNotesString()


def test_disease_export_starts_from_the_burn_in_and_couples_homing_to_the_lesion(exports):
    _, setup, path, prob = exports(TISSUE_EXAMPLE)
    doc = libsbml.readSBMLFromFile(str(path))
    m = doc.getModel()
    # the SBML starts where mscsim starts: the chronic state, not the declared start values
    m1 = m.getSpecies("m1")
    assert m1.getInitialAmount() == pytest.approx(prob.initial_state()[0, setup.model.index("m1")], rel=1e-14)
    assert abs(m1.getInitialAmount() - setup.pset["m1_0"].value) > 1e-3
    # a mechanism expression that replaces another mechanism's parameter is an assignment rule on that name
    assert libsbml.formulaToL3String(m.getAssignmentRuleByVariable("S_target").getMath()) == "m1"
    assert m.getParameter("S_target").getConstant() is False
    # a process that only makes a signal is a reaction with a product and no reactant
    make_tnf = m.getReaction("make_tnf")
    assert make_tnf.getNumReactants() == 0 and make_tnf.getProduct(0).getSpecies() == "tnf"
    assert {make_tnf.getModifier(i).getSpecies() for i in range(make_tnf.getNumModifiers())} >= {"m1", "il10"}


def test_vesicle_doses_are_events_on_a_concentration(tmp_path):
    """A vesicle product adds particles per mL of site fluid (a concentration species) at each dose."""
    scenario = one_patient(TISSUE_EXAMPLE, duration_days=2, product={"kind": "vesicles"},
                           regimen={"dose": {"particles": 1e12}, "times_days": [0, 1]})
    setup = resolve_setup(scenario)
    path = export_sbml(setup, tmp_path / "vesicles.xml")
    doc = libsbml.readSBMLFromFile(str(path))
    events = list(doc.getModel().getListOfEvents())
    assert [e.getEventAssignment(0).getVariable() for e in events] == ["ev", "ev"]
    assert_roadrunner_matches(scenario, path)


def test_units_are_converted_by_pint_and_mixed_units_refused():
    assert sbml_unit_factors("1/h") == (("second", -1, 0, 3600.0),)
    assert sbml_unit_factors("pg/mL") == (("gram", 1, -12, 1.0), ("litre", -1, -3, 1.0))
    assert sbml_unit_factors("umol/L*mL/cell/h") == (("mole", 1, -9, 1.0), ("item", -1, 0, 1.0),
                                                     ("second", -1, 0, 3600.0))
    assert sbml_unit_factors("1") == ()
    x, K, c, n, V = sp.symbols("x K c n V")
    units = {"x": "pg/mL", "K": "pg/mL", "c": "ng/mL", "n": "cell", "V": "mL"}
    assert expression_units(x**2 / (x**2 + K**2), units) == "1"
    assert registry().Quantity(1.0, expression_units(n / V, units)).to("cell/mL").magnitude == 1.0
    with pytest.raises(DataError, match="different units of the same kind"):
        expression_units(x + c, units)  # the model would add ng/mL to pg/mL without converting
    with pytest.raises(DataError, match="inconsistent units"):
        expression_units(x + n, units)


def test_rate_laws_reach_sbml_as_written():
    doc = libsbml.SBMLDocument(3, 2)  # keep the document alive while its model is used
    model = doc.createModel()
    x, k, n = sp.symbols("x k n", positive=True)
    mathml = libsbml.writeMathMLToString(sympy_math(k * x**n / (1 + sp.log(x)) + sp.Abs(x - 1), model, "law"))
    assert "<power/>" in mathml and "<ln/>" in mathml and "<abs/>" in mathml and "<log/>" not in mathml
    with pytest.raises(MscsimError, match="cannot parse"):
        sympy_math(sp.Piecewise((x, x > 1), (0, True)), model, "law")


def test_invalid_document_is_refused_naming_the_first_error():
    doc = build_document(resolve_setup(one_patient("mouse_iv_eggenhofer2012")))
    doc.getModel().getParameter(0).setUnits("furlong")
    with pytest.raises(MscsimError, match=r"invalid .*\[10313\].*'furlong'"):
        validate(doc)
