"""PEtab export: petablint accepts the knee-OA problem, its SBML is unit-clean, libRoadRunner run through the PEtab
conditions (preequilibration, then the arm) reproduces mscsim's typical patient, and the priors are the data's."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import libsbml
import numpy as np
import pandas as pd
import pytest
import roadrunner
import sympy as sp

from mscsim.cli import main
from mscsim.endpoints.evaluate import endpoint_values
from mscsim.io.petab import export_petab
from mscsim.io.sbml import exported_problem, unit_warnings
from mscsim.model.units import convert
from mscsim.simulation import resolve_setup, solve
from mscsim.trials.design import arm_scenario, load_design

roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)

DISEASE = "knee_osteoarthritis"  # the smallest exported problem with measurements (3 arms, 7 published values)
DESIGN, ARM = "knee_oa_lamo_espinosa_2016", "msc_1e8"
SETTLE_DAYS = 20_000.0  # the preequilibration run: long past the chronic state (cf. the steady-state check's 20,000 d)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("petab") / "knee"
    folder, problem = export_petab(DISEASE, out)
    return folder, problem


def tsv(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, sep="\t")


def test_petablint_accepts_the_problem(exported):
    folder, _ = exported
    exe = shutil.which("petablint") or str(Path(sys.executable).with_name("petablint"))
    run = subprocess.run([exe, str(folder / "problem.yaml")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "error" not in (run.stdout + run.stderr).lower()


def test_sbml_has_no_unit_warnings_and_doses_are_condition_values(exported):
    folder, _ = exported
    doc = libsbml.readSBMLFromFile(str(folder / "model.xml"))
    assert unit_warnings(doc) == []
    model = doc.getModel()
    conditions = tsv(folder, "conditions.tsv").set_index("conditionId")
    # the one dose at time 0 is the cells' start values, not an event (no event fires at time 0)
    assert model.getNumEvents() == 0
    doses = [c for c in conditions.columns if model.getSpecies(c) is not None and c.startswith(("msc_", "debris_"))]
    assert doses and model.getSpecies("msc_target").getInitialAmount() > 0
    # a cell-free arm gets no cells; the 1e8 arm ten times the 1e7 arm's, into the same compartments
    assert (conditions.loc[f"{DESIGN}__ha", doses] == 0).all()
    assert np.allclose(conditions.loc[f"{DESIGN}__msc_1e8", doses], 10 * conditions.loc[f"{DESIGN}__msc_1e7", doses])
    # the burn-in: no doses, held states not released; after it, released
    assert (conditions.loc[f"{DESIGN}__{ARM}__untreated", doses] == 0).all()
    assert conditions.loc[f"{DESIGN}__{ARM}__untreated", "hold_release_structure"] == 0
    assert conditions.loc[f"{DESIGN}__{ARM}", "hold_release_structure"] == 1
    assert model.getSpecies("structure").getConversionFactor() == "hold_release_structure"


def test_every_published_value_is_a_measurement_or_listed_as_not_exported(exported):
    folder, problem = exported
    measured = tsv(folder, "measurements.tsv")
    left = tsv(folder, "NOT_EXPORTED.tsv")
    published = [p for name in problem.designs for p in load_design(name)[0].published]
    assert len(measured) + int((left["what"] == "published value").sum()) == len(published)
    assert set(measured["measurement"]) <= {p.value for p in published}
    assert (measured["noiseParameters"] > 0).all()
    assert {"virtual cohort", "observation model", "validation targets",
            "between-trial heterogeneity"} <= set(left["what"])


def test_estimated_parameters_carry_the_data_files_priors(exported):
    folder, _ = exported
    params = tsv(folder, "parameters.tsv").set_index("parameterId")
    setup = resolve_setup(arm_scenario(*_design_arm()))
    est = params[params["estimate"] == 1]
    assert len(est) >= 5
    for name, row in est.iterrows():
        assert row["lowerBound"] <= row["nominalValue"] <= row["upperBound"], name
        u = setup.pset[name].uncertainty
        if u.distribution == "loguniform":
            assert row["parameterScale"] == "log10" and row["objectivePriorType"] == "parameterScaleUniform"
            k = row["nominalValue"] / setup.pset[name].value  # data units -> the model's
            lo, hi = (float(v) for v in row["objectivePriorParameters"].split(";"))
            assert lo == pytest.approx(math.log10(u.low * k)) and hi == pytest.approx(math.log10(u.high * k))
        elif u.distribution == "uniform":
            assert row["objectivePriorType"] == "uniform" and row["lowerBound"] == pytest.approx(u.low)
    assert (params.loc[params["estimate"] == 0, "lowerBound"] == params.loc[params["estimate"] == 0, "nominalValue"]).all()


def _design_arm():
    design, _ = load_design(DESIGN)
    return design, next(a for a in design.arms if a.name == ARM)


def _apply(rr, row: pd.Series, model: libsbml.Model, params: pd.Series) -> None:
    """Set a condition's values as a RoadRunner's initial values (``init(...)``: they survive ``resetAll``, which
    then re-evaluates the start, events at time 0 included): parameters and species (a parameter id is read from
    the parameter table); an empty cell leaves the value as it is."""
    for column, value in row.items():
        if column in ("conditionId", "conditionName") or pd.isna(value):
            continue
        value = float(params[value]) if isinstance(value, str) else float(value)
        species = model.getSpecies(column)
        concentration = species is not None and not species.getHasOnlySubstanceUnits()
        rr.setValue(f"init([{column}])" if concentration else f"init({column})", value)


@pytest.mark.slow  # libRoadRunner's JIT of the tissue SBML and a year in CVODE, ~45 s: benchmarks/slow_checks.py
def test_roadrunner_through_the_conditions_reproduces_mscsims_typical_patient(exported):
    """The arm's preequilibration condition run to its steady state, then the arm's condition from that state,
    gives the endpoints mscsim's own typical patient of the arm has at every visit, and their changes from
    baseline, within 1e-6 (relative; they agree to about 1e-7)."""
    folder, _ = exported
    design, arm = _design_arm()
    setup = resolve_setup(arm_scenario(design, arm))
    prob = exported_problem(setup)
    ms = solve(setup, prob)[0]
    days = prob.t_eval / 24.0
    want = endpoint_values(DISEASE, {s: ms[:, k] for k, s in enumerate(setup.model.state_names)},
                           setup.model.state_names)

    doc = libsbml.readSBMLFromFile(str(folder / "model.xml"))
    model = doc.getModel()
    conditions = tsv(folder, "conditions.tsv").set_index("conditionId", drop=False)
    params = tsv(folder, "parameters.tsv").set_index("parameterId")["nominalValue"]
    names = [sp_.getId() for sp_ in model.getListOfSpecies()]  # the model's states and the baseline_* species
    assert set(setup.model.state_names) < set(names) and "baseline_sensitisation" in names
    select = [n if model.getSpecies(n).getHasOnlySubstanceUnits() else f"[{n}]" for n in names]

    pre = roadrunner.RoadRunner(str(folder / "model.xml"))
    _apply(pre, conditions.loc[f"{DESIGN}__{ARM}__untreated"], model, params)
    pre.resetAll()
    pre.integrator.relative_tolerance = 1e-10
    pre.integrator.absolute_tolerance = 1e-14
    pre.simulate(0, SETTLE_DAYS * 24.0, 3)
    settled = {n: pre[s] for n, s in zip(names, select)}

    rr = pre  # the same model from the preequilibrated state: time back to 0, the arm's condition applied
    _apply(rr, pd.Series(settled), model, params)
    _apply(rr, conditions.loc[f"{DESIGN}__{ARM}"], model, params)
    rr.resetAll()
    rr.timeCourseSelections = ["time"] + select
    visits = np.array(design.visits_days) * 24.0
    out = np.asarray(rr.simulate(times=np.concatenate([[0.0], visits])))

    observables = tsv(folder, "observables.tsv").set_index("observableId")
    coefficients = {k: float(v) for k, v in params.items()}
    for observable in ("pain_vas", "womac_total", "cartilage_index", "pain_vas_change"):
        formula = observables.loc[f"obs_{observable}", "observableFormula"]
        expr = sp.sympify(formula.replace("^", "**"), locals={n: sp.Symbol(n) for n in [*names, "time"]})
        expr = expr.subs(sp.Symbol(f"observableParameter1_obs_{observable}"), 0)  # the endpoint without relief
        f = sp.lambdify([sp.Symbol("time"), *map(sp.Symbol, names)], expr.subs(coefficients))
        endpoint = observable.removesuffix("_change")
        for i, day in enumerate(design.visits_days, start=1):
            got = float(f(out[i, 0], *out[i, 1:]))
            ref = float(want[endpoint][int(np.argmin(np.abs(days - day)))])
            if observable.endswith("_change"):
                ref -= float(want[endpoint][0])
            assert got == pytest.approx(ref, rel=1e-6), f"{observable} at day {day}: PEtab {got}, mscsim {ref}"


def test_comparator_relief_is_mscsims(exported):
    """The observables' relief term is the one trials.observe applies: at r = placebo_r_hyaluronic_acid and an
    arm patient with no between-patient spread of relief, pain = modelled * (1 - relief(t))."""
    from mscsim.trials.observe import response_parameters

    folder, _ = exported
    p = response_parameters()
    formula = tsv(folder, "observables.tsv").set_index("observableId").loc["obs_pain_vas", "observableFormula"]
    r, on, off, keep = (p[n].value for n in ("placebo_r_hyaluronic_acid", "placebo_tau_on", "placebo_tau_off",
                                             "placebo_persist"))
    expr = sp.sympify(formula.replace("^", "**")).subs({"observableParameter1_obs_pain_vas": r, "placebo_tau_on": on,
                                                        "placebo_tau_off": off, "placebo_persist": keep,
                                                        "vas_full_scale": 100.0, "sensitisation": 0.5})
    for day in (28.0, 90.0, 365.0):
        shape = (1 - math.exp(-day / on)) * (keep + (1 - keep) * math.exp(-day / off))
        got = float(expr.subs("time", convert(day, "d", "h")))
        assert got == pytest.approx(50.0 * (1 - r * shape), rel=1e-12)


def test_cli_writes_the_problem_and_refuses_bad_input_before_writing(tmp_path, capsys):
    out = tmp_path / "petab"
    assert main(["export-petab", "lumbar_disc_degeneration", "-o", str(out)]) == 0
    assert {"problem.yaml", "model.xml", "conditions.tsv", "observables.tsv", "measurements.tsv", "parameters.tsv",
            "NOT_EXPORTED.tsv", "README.md", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert "petab lint: no errors" in capsys.readouterr().out

    bad = tmp_path / "bad"
    assert main(["export-petab", "no_such_disease", "-o", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "DISEASE" in err and "knee_osteoarthritis" in err and len(err.splitlines()) == 1
    assert not bad.exists()

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["export-petab", DISEASE, "-o", str(other)]) == 2
    assert "--out" in capsys.readouterr().err and (other / "notes.txt").read_text() == "keep me"

    # a disease whose published numbers are all rates: refused, saying why, nothing written
    rates = tmp_path / "gvhd"
    assert main(["export-petab", "acute_gvhd", "-o", str(rates)]) == 2
    assert "typical patient" in capsys.readouterr().err and not rates.exists()
    assert not list(tmp_path.glob(".*partial*"))
