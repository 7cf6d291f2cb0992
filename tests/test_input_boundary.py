"""The input boundary (issue 19): every user file read defensively, every number finite and in range, every
parameter override checked against its own record (units, bounds, name), all before anything runs; a run whose
numbers cannot be trusted (a negative state) is a named error; nothing is left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import example
from mscsim import InputError, scenario_from_dict
from mscsim.cli import main
from mscsim.errors import PositivityError
from mscsim.io._validation import MAX_DEPTH, read_yaml
from mscsim.io.scenario import load_scenario
from mscsim.simulation import check_scenario, resolve_setup, simulate
from mscsim.sizing import estimate_cost
from mscsim.trials.cohort import COHORT_DIR as COHORTS

CHEAP = {"duration_days": 1, "outputs": {"points_per_day": 4}}  # a day of the mouse kinetics: well under a second


def _mouse(**changes) -> dict:
    return example("mouse_iv_eggenhofer2012", **{**CHEAP, **changes})


def _write(tmp_path, data, name="scenario.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _cli_error(capsys, *argv) -> str:
    assert main(list(map(str, argv))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mscsim: error: ")
    return err[-1]


# --- files --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,problem", [
    (b"name: caf\xe9\n", "not UTF-8"),
    (b"name: x\nnested: " + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"\n", "nesting deeper"),
    (b"seed: " + b"9" * 5000 + b"\n", "integers must fit in 64 bits"),
    (b"seed: 99999999999999999999\n", "does not fit in 64 bits"),
    (b"name: a\nname: b\n", "appears twice"),
    (b"a: &x [1]\n" + b"".join(f"b{i}: *x\n".encode() for i in range(150)), "aliases"),
    (b"name: [unclosed\n", "valid YAML"),
])
def test_a_broken_file_is_an_error_naming_it(tmp_path, capsys, content, problem):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as err:
        read_yaml(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    line = _cli_error(capsys, "simulate", path, "--out", tmp_path / "out")  # the same through the command line
    assert problem in line and str(path) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_utf8_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(_mouse()).encode())
    assert load_scenario(path).name == _mouse()["name"]


# --- numbers ------------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
BAD = [
    ({"regimen": {"route": "intravenous", "dose": {"cells": 5e5}, "times_days": [NAN]}}, "regimen.times_days.0",
     "finite"),
    ({"regimen": {"route": "intravenous", "dose": {"cells": 5e5}, "times_days": [0, NAN]}}, "regimen.times_days.1",
     "finite"),
    ({"outputs": {"times_hours": [0, NAN]}}, "outputs.times_hours.1", "finite"),
    ({"outputs": {"times_hours": [5, 1, 2]}}, "outputs.times_hours", "not sorted for you"),
    ({"outputs": {"times_hours": [1, 1]}}, "outputs.times_hours", "without repeats"),
    ({"outputs": {"times_hours": [1, 100]}}, "(top level)", "after the end of the run"),
    ({"outputs": {"times_hours": [-0.0]}}, "outputs.times_hours", "at least one output time after 0 h"),  # fuzz
    ({"parameters": {"m_death": NAN}}, "parameters.m_death", "finite"),
    ({"parameters": {"K_home": INF}}, "parameters.K_home", "finite"),
    ({"solver": {"rtol": 1e-30}}, "solver.rtol", ">= 1e-13"),
    ({"duration_days": 1e-9}, "duration_days", "at least one minute"),
    ({"patient": {"weight_kg": 1e-9}}, "patient.weight_kg", "greater than or equal to 0.005"),
    ({"product": {"viability": NAN}}, "product.viability", "finite"),
    ({"regimen": {"route": "intravenous", "dose": {"cells": INF}}}, "regimen.dose.cells", "finite"),
    ({"regimen": {"route": "intravenous", "dose": {"cells": 5e5}, "times_days": [5e-324]}}, "regimen.times_days",
     "at least one second apart"),  # found by the long fuzz run: the solver shrank its step to nothing
    ({"regimen": {"route": "intravenous", "dose": {"cells": 5e5}, "infusion_minutes": 1e-3}},
     "regimen.infusion_minutes", "at least one second"),
    # found by the scenario fuzz run of 2026-12-06: a YAML boolean read as the number 1 (a dose at the end of a
    # one-day run, which drew an empty figure and crashed), and a dose at the very end of the run
    ({"regimen": {"route": "intravenous", "dose": {"cells": 5e5}, "times_days": [True]}}, "regimen.times_days",
     "booleans in YAML, not numbers"),
    ({"patient": {"weight_kg": True}}, "patient.weight_kg", "booleans in YAML, not numbers"),
    ({"regimen": {"route": "intravenous", "dose": {"cells": 5e5}, "times_days": [1]}}, "regimen.times_days",
     "dose times before the end of the run"),
]


@pytest.mark.parametrize("change,field,allowed", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_numbers_are_refused_with_the_field_named(change, field, allowed):
    with pytest.raises(InputError) as err:
        scenario_from_dict(_mouse(**change), file="bad.yaml")
    msg = str(err.value)
    assert f"field '{field}" in msg and allowed in msg and msg.startswith("bad.yaml: "), msg


def test_a_weight_outside_the_species_range_names_the_range_and_its_file():
    sc = scenario_from_dict(_mouse(patient={"weight_kg": 70}), file="mouse.yaml")
    with pytest.raises(InputError, match=r"mouse body weight within \[0.005, 0.08\] kg.*species_mouse.yaml") as err:
        check_scenario(sc)
    assert str(err.value).startswith("mouse.yaml: field 'patient.weight_kg'")


def test_a_cohort_too_large_for_simulate_is_refused_with_its_cost_unless_allowed(tmp_path, capsys):
    path = _write(tmp_path, _mouse(population={"size": 10_000_000, "variability": True}))
    line = _cli_error(capsys, "simulate", path, "--out", tmp_path / "out")
    assert "population.size" in line and "GiB" in line and "--allow-large" in line and "mscsim trial" in line
    assert not (tmp_path / "out").exists()
    cost = estimate_cost(load_scenario(path))
    assert cost.patients == 10_000_000 and cost.bytes > 2 * 1024 ** 3 and cost.seconds > 0


# --- parameter overrides ------------------------------------------------------------------------------------------

def test_an_override_with_units_is_converted_with_pint():
    per_hour = resolve_setup(scenario_from_dict(_mouse(parameters={"k_death_lung": 0.05})))
    per_day = resolve_setup(scenario_from_dict(_mouse(parameters={"k_death_lung": {"value": 1.2, "units": "1/d"}})))
    assert per_day.pset["k_death_lung"].units == "1/h"  # the parameter's documented units
    assert per_day.pset["k_death_lung"].value == pytest.approx(per_hour.pset["k_death_lung"].value, rel=1e-12)
    (ov,) = per_day.overrides
    assert (ov.given, ov.given_units, ov.units, ov.out_of_bounds) == (1.2, "1/d", "1/h", False)


@pytest.mark.parametrize("units,problem", [("mL", "convertible to '1/h'"), ("1/(d", "units pint can read")])
def test_override_units_that_do_not_fit_are_named(units, problem):
    sc = scenario_from_dict(_mouse(parameters={"k_death_lung": {"value": 1, "units": units}}), file="s.yaml")
    with pytest.raises(InputError, match=problem) as err:
        resolve_setup(sc)
    assert "field 'parameters.k_death_lung.units'" in str(err.value) and "s.yaml" in str(err.value)


def test_an_unknown_parameter_gets_did_you_mean():
    with pytest.raises(InputError, match=r"did you mean 'k_death_lung'"):
        resolve_setup(scenario_from_dict(_mouse(parameters={"k_death_lungs": 0.1})))


def test_out_of_bounds_is_refused_naming_the_bounds_and_their_source(tmp_path, capsys):
    path = _write(tmp_path, _mouse(parameters={"f_trap": 2.0}))
    line = _cli_error(capsys, "simulate", path, "--out", tmp_path / "out")
    assert "parameters.f_trap" in line and "[0.3, 0.9999]" in line and "kinetics.yaml" in line
    assert "eggenhofer2012" in line and "allow_out_of_bounds" in line


def test_a_negative_rate_is_refused_even_when_out_of_bounds_is_allowed():
    sc = scenario_from_dict(_mouse(parameters={"k_death_blood": -10}, allow_out_of_bounds=["k_death_blood"]))
    with pytest.raises(InputError, match="non-negative quantity"):
        resolve_setup(sc)


def test_allow_out_of_bounds_must_name_an_override():
    sc = scenario_from_dict(_mouse(parameters={"k_death_lung": 0.1}, allow_out_of_bounds=["f_trap"]))
    with pytest.raises(InputError, match="field 'allow_out_of_bounds'"):
        resolve_setup(sc)


def test_an_allowed_out_of_bounds_value_is_recorded_in_the_manifest(tmp_path):
    path = _write(tmp_path, _mouse(parameters={"k_death_lung": {"value": 200, "units": "1/d"}},
                                   allow_out_of_bounds=["k_death_lung"]))
    assert main(["simulate", str(path), "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (record,) = manifest["parameter_overrides"]
    assert record["name"] == "k_death_lung" and record["out_of_bounds"] and record["given_units"] == "1/d"
    assert manifest["allow_out_of_bounds"] == ["k_death_lung"]


# --- a run whose numbers cannot be trusted ------------------------------------------------------------------------

def test_B04_negative_cells_from_an_allowed_unphysical_override_are_a_named_error(tmp_path, capsys):
    """More than every cell trapped at first pass (f_trap 2, out of bounds on purpose) would leave a negative
    number of cells passing the lung: the positivity check beside the mass balance stops the run."""
    data = _mouse(parameters={"f_trap": 2.0}, allow_out_of_bounds=["f_trap"])
    with pytest.raises(PositivityError, match="went negative"):
        simulate(scenario_from_dict(data))
    path = _write(tmp_path, data)
    line = _cli_error(capsys, "simulate", path, "--out", tmp_path / "out")
    assert "went negative" in line and str(path) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenario.yaml"]  # nothing half-written


def test_a_bad_cohort_file_is_named_itself_and_found_beside_the_design(tmp_path, capsys):
    """A design's cohort file is read relative to the design (as a lot's FCS files are relative to the lot), and a
    problem inside it names the cohort file and field, not only the design."""
    from conftest import small_design, write_design

    cohort = yaml.safe_load((COHORTS / "knee_oa_adults.yaml").read_text())
    cohort["population"]["covariates"]["sex_female"]["p"] = float("nan")
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(cohort))
    design = write_design(small_design(population="cohort.yaml"), tmp_path / "design.yaml")
    assert main(["trial", str(design), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{(tmp_path / 'cohort.yaml').resolve()}: field 'population.covariates.sex_female.p'" in err
    assert "design.yaml" in err and "finite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.yaml", "design.yaml"]


def test_a_design_whose_published_difference_has_no_control_arm_is_refused_at_load(tmp_path, capsys):
    """Long-fuzz finding: ``control: 0.0`` on the control arm left a published difference with nothing to be a
    difference against (an IndexError after every patient had run); now the design file and field are named."""
    from conftest import small_design, write_design

    data = small_design()
    data["arms"][0]["control"] = False
    assert any(p["statistic"].startswith("difference") for p in data["published"])
    design = write_design(data, tmp_path / "design.yaml")
    err = _cli_error(capsys, "trial", design, "--out", tmp_path / "out")
    assert "design.yaml" in err and "published." in err and "control: true" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design.yaml"]


@pytest.mark.parametrize("where", ["source", "published"])
def test_an_unknown_citation_key_in_a_design_names_the_file_and_field(tmp_path, capsys, where):
    """Long-fuzz finding: an unknown citation key surfaced only after the run, without the design's file name."""
    from conftest import small_design, write_design

    data = small_design()
    if where == "source":
        data["source"] = [*data.get("source", []), "lee2019oax"]
        field = f"source.{len(data['source']) - 1}"
    else:
        data["published"][0]["source"] = ["abc"]
        field = "published.0.source.0"
    design = write_design(data, tmp_path / "design.yaml")
    err = _cli_error(capsys, "trial", design, "--out", tmp_path / "out")
    assert "design.yaml" in err and f"field '{field}'" in err and "bibliography" in err
    if where == "source":
        assert "did you mean 'lee2019oa'" in err


def test_a_signed_running_total_may_go_negative_but_no_other_state_may():
    """``t_divisions`` (``signed: true``) counts net effector T-cell proliferation, which crowding past the tissue's
    capacity makes negative (found by the knee-OA sensitivity run: 1.3 % of its parameter sets): the positivity
    check lets it fall below zero and still refuses any other state that does."""
    from mscsim.simulation import check_positivity

    setup = resolve_setup(scenario_from_dict(example("knee_oa_ia_5e7", duration_days=1)))
    model = setup.model
    assert [model.state_names[k] for k in np.flatnonzero(model.signed_mask)] == ["t_divisions"]
    prob = setup.problem(0, 1)
    states = np.repeat(prob.initial_state()[:, None, :], len(prob.t_eval), axis=1)
    states[:, -1, model.index("t_divisions")] = -4.8
    check_positivity(prob, states)  # no error
    states[:, -1, model.index("tnf")] = -1.0
    with pytest.raises(PositivityError, match="'tnf' went negative"):
        check_positivity(prob, states)


def test_a_name_too_long_for_the_file_system_is_an_unknown_name(tmp_path, capsys):
    """Long-fuzz finding: a design's ``population`` of 300 characters made the cohort lookup raise 'File name too
    long', shown without the design file or field; such a name is now simply not found, and the error names both.
    The same holds for a scenario or design given by a name that long on the command line."""
    from conftest import small_design, write_design

    design = write_design(small_design(population="x" * 300), tmp_path / "design.yaml")
    line = _cli_error(capsys, "trial", design, "--out", tmp_path / "out")
    assert str(design) in line and "field 'population" in line and "bundled cohort" in line
    line = _cli_error(capsys, "simulate", "y" * 300, "--out", tmp_path / "out2")
    assert "File name too long" not in line and "field 'SCENARIO'" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design.yaml"]  # nothing half-written


def test_a_published_rate_with_its_count_is_compared_exactly_and_a_count_that_disagrees_is_refused(tmp_path, capsys):
    """A rate given with its count (13 of 14) is compared as 13/14, not as the paper's rounded 0.929, which lies past
    the top of an interval of 14-patient trials whose highest result is 13/14; a count whose share does not round to
    the printed rate names the design file, the field and what is allowed."""
    from mscsim.trials.design import load_design

    design, bundled = load_design("sr_agvhd_adults_muroi2013")
    overall = next(p for p in design.published if p.statistic == "rate")
    assert overall.value == 13 / 14 and overall.events is None  # folded into the exact share

    data = yaml.safe_load(bundled.read_text())
    data["published"][0]["events"] = 12
    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(data))
    err = _cli_error(capsys, "trial", path, "--out", tmp_path / "out")
    assert "design.yaml" in err and "field 'published.0.events'" in err and "12/14" in err and "0.929" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design.yaml"]
