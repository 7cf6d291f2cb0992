"""SBML export: libRoadRunner runs the exported model to the same numbers as mscsim; units and sources travel."""

import libsbml
import numpy as np
import pytest
import roadrunner
import sympy as sp

from conftest import KINETICS_EXAMPLES as SCENARIO_EXAMPLES, example
from mscsim import MscsimError, __version__, resolve_setup, scenario_from_dict, simulate
from mscsim.io.sbml import UNIT_DEFINITIONS, build_document, export_sbml, sources, sympy_math, validate

roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)  # CVODE's tiny-step notes at event times are noise here


def one_patient(name: str, **changes):
    """A bundled example as a one-patient scenario at nominal parameters (what the export describes)."""
    return scenario_from_dict(example(name, population={"size": 1, "variability": False}, **changes))


@pytest.fixture(scope="module", params=SCENARIO_EXAMPLES)
def exported(request, tmp_path_factory):
    scenario = one_patient(request.param)
    setup = resolve_setup(scenario)
    path = export_sbml(setup, tmp_path_factory.mktemp("sbml") / f"{request.param}.xml")
    return scenario, setup, path


def roadrunner_states(path, names: list[str], t: np.ndarray, total: float) -> np.ndarray:
    """Species amounts from libRoadRunner at times ``t``, at tight tolerances; shape (times, states)."""
    rr = roadrunner.RoadRunner(str(path))
    rr.timeCourseSelections = ["time"] + names  # a bare species id selects its amount
    rr.integrator.relative_tolerance = 1e-10
    for name in names:
        # Per species: roadrunner rescales a scalar absolute_tolerance by the state values. 1e-14 of the cells
        # given, not 1e-12: CVODE's global error runs ~10x its local tolerance and the comparison floor below is
        # 1e-12 of the cells given.
        rr.integrator.setIndividualTolerance(name, 1e-14 * total)
    out = np.asarray(rr.simulate(times=t))
    assert np.array_equal(out[:, 0], t)
    return out[:, 1:]


def assert_roadrunner_matches(scenario, path) -> None:
    """Every state at every output time: |rr - mscsim| <= 1e-6 (|mscsim| + 1e-6 x cells administered)."""
    setup = resolve_setup(scenario)
    ds = simulate(scenario)
    names = list(setup.model.state_names)
    t = setup.problem().t_eval
    total = float(ds["administered"].max())
    rr = roadrunner_states(path, names, t, total)
    ms = np.stack([ds[name].values[0] for name in names], axis=1)
    # At a dose time mscsim reports the state just after the dose (right-continuous). RoadRunner integrates to
    # the output time, fires the dose event whose trigger (time >= t_dose) turns true there, then records the
    # row, so its rows are right-continuous too. Check that convention first, via the cell mass balance
    # (a missed dose is far above 1e-8 of the total), so a change in it fails here with a clear message.
    cells = rr[:, setup.model.cell_mask].sum(axis=1)
    administered = ds["administered"].values[0]
    at_dose = np.isin(t, np.asarray(scenario.regimen.times_days) * 24.0)
    assert np.all(np.abs(cells - administered)[at_dose] <= 1e-8 * total), "roadrunner row at a dose time is pre-dose"
    worst = float(np.abs(cells - administered).max())
    assert worst <= 1e-8 * total, f"roadrunner's cells differ from those administered by up to {worst:.3g}"
    err = np.abs(rr - ms) / (np.abs(ms) + 1e-6 * total)
    i, j = np.unravel_index(np.argmax(err), err.shape)
    assert err[i, j] <= 1e-6, f"{names[j]} at {t[i]} h: roadrunner {rr[i, j]!r}, mscsim {ms[i, j]!r}"


def test_roadrunner_reproduces_mscsim(exported):
    scenario, _, path = exported
    assert_roadrunner_matches(scenario, path)


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


def test_one_reaction_per_process_and_units_on_everything(exported):
    _, setup, path = exported
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

    defined = {ud.getId() for ud in m.getListOfUnitDefinitions()} | {"litre", "dimensionless"}
    assert m.getTimeUnits() == "hour"
    hour = m.getUnitDefinition("hour").getUnit(0)
    assert (hour.getKind(), hour.getMultiplier(), hour.getExponent()) == (libsbml.UNIT_KIND_SECOND, 3600.0, 1)
    assert set(UNIT_DEFINITIONS) <= defined
    for s in m.getListOfSpecies():
        assert s.getSubstanceUnits() == "cell" and s.getHasOnlySubstanceUnits() and s.getInitialAmount() == 0
    params = {p.getId(): p for p in m.getListOfParameters()}
    assert all(p.isSetUnits() and p.getUnits() in defined for p in params.values())
    for name, value in zip(setup.model.param_names, setup.nominal):
        assert params[name].getValue() == pytest.approx(value, rel=1e-14)  # libsbml writes 15 digits
    # the rate laws are dimensionally consistent: libsbml's unit checks find nothing beyond literal numbers
    # (such as the 1 in 1 - f_trap), whose units SBML cannot know
    doc.setConsistencyChecks(libsbml.LIBSBML_CAT_UNITS_CONSISTENCY, True)
    doc.checkConsistency()
    assert {doc.getError(i).getErrorId() for i in range(doc.getNumErrors())} <= {libsbml.UndeclaredUnits}


def test_notes_name_sources_grades_scenario_and_version(exported):
    _, setup, path = exported
    doc = libsbml.readSBMLFromFile(str(path))
    m = doc.getModel()
    notes = m.getNotesString()
    refs = sources(setup)
    assert refs and all(r.doi in notes for r in refs if r.doi)
    assert setup.scenario.name in notes and f"mscsim {__version__}" in notes
    annotated = {m.getCVTerm(i).getResourceURI(k) for i in range(m.getNumCVTerms())
                 for k in range(m.getCVTerm(i).getNumResources())}
    assert annotated == {f"https://identifiers.org/doi:{r.doi}" for r in refs if r.doi}
    for name in setup.model.param_names:
        par, text = setup.pset[name], m.getParameter(name).getNotesString()
        assert all(key in text for key in par.source) and f"Evidence grade: {par.grade}" in text


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
