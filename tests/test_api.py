"""The public Python API as a scientist uses it in a notebook: load a preset or a file, change what they change,
run, read the endpoints with their statistic, sweep a dose, and get the same validation as the command line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

import mscsim
from mscsim.cli import main
from mscsim.errors import InputError


def test_load_a_preset_a_path_or_a_mapping(examples_dir):
    by_name = mscsim.load("human_iv_2e6_per_kg")
    by_path = mscsim.load(examples_dir / "human_iv_2e6_per_kg.yaml")
    data = yaml.safe_load((examples_dir / "human_iv_2e6_per_kg.yaml").read_text())
    assert by_name.scenario == by_path.scenario == mscsim.load(data).scenario
    assert "human_iv_2e6_per_kg" in mscsim.presets()["name"].tolist()


def test_an_unknown_preset_gets_did_you_mean():
    with pytest.raises(InputError, match="did you mean 'knee_oa_ia_5e7'"):
        mscsim.load("knee_oa_ia_5e8")


def test_a_simulation_is_immutable_and_each_change_is_validated():
    sim = mscsim.load("knee_ia_5e7_blind")
    low = sim.with_dose(cells=1e7)
    assert sim.scenario.regimen.dose.cells == 5e7 and low.scenario.regimen.dose.cells == 1e7
    with pytest.raises(dataclasses.FrozenInstanceError):
        sim.scenario = low.scenario
    with pytest.raises(InputError, match=r"regimen\.dose\.cells.*greater than or equal to 1"):
        sim.with_dose(cells=-1)
    with pytest.raises(InputError, match="regimen.guidance"):
        sim.with_guidance("sonar")
    with pytest.raises(InputError, match="did you mean 'patient.age_years'"):
        sim.set("patient.agee", 50)


def test_api_errors_are_the_cli_errors(tmp_path, capsys, examples_dir):
    """The same bad value gives the same field and the same 'allowed' text in the API and the command line."""
    data = yaml.safe_load((examples_dir / "knee_ia_5e7_blind.yaml").read_text())
    data["regimen"]["dose"] = {"cells": -1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["simulate", str(bad), "--out", str(tmp_path / "o")]) == 2
    cli = capsys.readouterr().err
    with pytest.raises(InputError) as api:
        mscsim.load("knee_ia_5e7_blind").with_dose(cells=-1)
    assert f"field '{api.value.where}'" in cli and api.value.allowed in cli
    assert not (tmp_path / "o").exists()


def test_with_route_keeps_the_scenario_valid():
    local = mscsim.load("human_iv_2e6_per_kg").with_route("intra_articular")
    assert local.scenario.regimen.guidance == "ultrasound" and local.scenario.regimen.infusion_minutes == 0
    iv = mscsim.load("knee_ia_5e7_blind").with_route("intravenous")
    assert iv.scenario.regimen.guidance is None and iv.scenario.regimen.site is None


def test_parameters_lists_value_units_bounds_distributions_grade_and_source():
    table = mscsim.load("knee_ia_5e7_blind").parameters()
    assert {"name", "value", "units", "bounds", "between_patient", "uncertainty", "grade", "source"} <= set(table)
    f_trap = table.set_index("name").loc["f_trap"]
    assert f_trap["units"] == "1" and f_trap["bounds"] and f_trap["grade"] in ("human", "animal", "in_vitro",
                                                                                  "assumed")
    assert "logit" in f_trap["between_patient"] and f_trap["source"]
    assert table["grade"].isin(["human", "animal", "in_vitro", "assumed"]).all()


@pytest.fixture(scope="module")
def knee():
    """Three knee-OA patients with between-patient variability, to day 95 (visits 28 and 90)."""
    return mscsim.load("knee_oa_ia_5e7").with_duration(95).with_population(3).run()


def test_run_returns_results_with_endpoints_untreated_and_bands(knee):
    assert isinstance(knee, mscsim.Results) and knee.n_patients == 3
    assert "pain_vas" in knee and "pain_vas_untreated" in knee
    table = knee.endpoints()
    row = table[(table["variable"] == "pain_vas") & (table["visit_day"] == 90)].iloc[0]
    values = knee["pain_vas"].values[:, int(np.argmin(abs(knee["time_days"].values - 90)))]
    assert row["median"] == pytest.approx(np.median(values)) and row["statistic"] == "median of 3 patients"
    assert row["q05"] <= row["median"] <= row["q95"] and row["median"] < row["untreated_median"]
    b = knee.bands(["pain_vas"])
    assert list(b["quantile"].values) == [0.025, 0.05, 0.5, 0.95, 0.975] and b.attrs["members"] == "3 patients"
    lines = knee.endpoint_lines()
    assert any(line.startswith("  pain VAS, day 90 (mm, median of 3 patients): ") and "untreated: " in line
               for line in lines)


def test_results_plot_and_save_write_png_svg_pdf(knee, tmp_path):
    fig = knee.plot()
    labels = {a.get_ylabel() for a in fig.axes}
    assert "pain VAS (mm)" in labels and "MSCs (cells)" in labels
    out = knee.save(tmp_path / "run")
    names = {p.name for p in out.iterdir()}
    assert {"tissue_response.png", "tissue_response.svg", "tissue_response.pdf", "cell_fate.png", "results.nc",
            "summary.csv", "manifest.json"} <= names


def test_sweep_points_equal_single_runs_bit_for_bit():
    """Every point's patients go through one batched problem; a patient's numbers do not depend on its batch."""
    sim = mscsim.load("human_iv_2e6_per_kg").with_duration(3).with_population(2)
    doses = [1e6, 2e6, 4e6]
    res = sim.sweep({"regimen.dose.cells_per_kg": doses}, ["msc_lung_day1", "viable_total_end"])
    assert res.data.sizes == {"point": 3, "patient": 2}
    for i, d in enumerate(doses):
        single = sim.with_dose(cells_per_kg=d).run().data
        k = int(np.argmin(abs(single["time_days"].values - 1)))
        assert np.array_equal(res.data["msc_lung_day1"].values[i], single["msc_lung"].values[:, k])
    med = res.table[res.table["output"] == "msc_lung_day1"]["median"].to_numpy()
    assert np.all(np.diff(med) > 0)  # more cells in, more cells held in the lung


def test_B06_guidance_sweep_puts_more_cells_at_the_lesion():
    res = mscsim.sweep("knee_ia_5e7_blind", {"regimen.guidance": ["ultrasound", "landmark"]}, ["msc_target_day1"])
    by = res.table.set_index("regimen.guidance")["median"]
    assert by["ultrasound"] > by["landmark"]


def test_timing_sweep_unites_dose_times_and_agrees_with_single_runs():
    sim = mscsim.load("human_iv_2e6_per_kg").with_duration(10)
    res = sim.sweep({"regimen.times_days": [[0], [0, 5]]}, ["viable_total_day6", "debris_total_day6"])
    for i, times in enumerate(([0.0], [0.0, 5.0])):
        single = sim.with_dose(times_days=times).run().data
        k = int(np.argmin(abs(single["time_days"].values - 6)))
        assert res.data["debris_total_day6"].values[i, 0] == pytest.approx(single["debris_total"].values[0, k],
                                                                          rel=1e-6)
    assert res.data["viable_total_day6"].values[1, 0] > res.data["viable_total_day6"].values[0, 0]


def test_B14_knee_dose_response_sweep_has_bands_and_the_untreated_course(tmp_path):
    sim = mscsim.load("knee_oa_ia_5e7").with_duration(95).with_population(3)
    res = sim.sweep({"regimen.dose.cells": [1e6, 1e8]}, ["pain_vas_day90"])
    t = res.table
    assert t["median"].iloc[1] < t["median"].iloc[0] < t["untreated_median"].iloc[0]  # more cells, less pain
    assert (t["q05"] <= t["median"]).all() and (t["median"] <= t["q95"]).all()
    out = res.save(tmp_path / "sweep")
    assert {"sweep.csv", "sweep_patients.csv", "sweep.nc", "sweep.png", "sweep.svg", "sweep.pdf",
            "manifest.json"} <= {p.name for p in out.iterdir()}


def test_sweep_refuses_unknown_fields_and_outputs_before_computing():
    sim = mscsim.load("human_iv_2e6_per_kg")
    with pytest.raises(InputError, match="did you mean 'regimen.dose.cells_per_kg'"):
        sim.sweep({"regimen.dose.cells_per_k": [1e6]}, ["msc_lung_day1"])
    with pytest.raises(InputError, match="did you mean 'msc_lung_day7'"):
        sim.sweep({"regimen.dose.cells_per_kg": [1e6]}, ["msc_lungs_day7"])
    with pytest.raises(InputError, match="a day within the run"):
        sim.sweep({"regimen.dose.cells_per_kg": [1e6]}, ["msc_lung_day400"])
    from mscsim.analysis.sweep import Vary

    assert Vary.parse("regimen.dose.cells=1e6:1e9:log:4").values == pytest.approx((1e6, 1e7, 1e8, 1e9))
    assert Vary.parse("regimen.times_days=[[0],[0,28]]").values == ([0], [0, 28])
    assert Vary.parse("regimen.guidance=ultrasound,landmark").values == ("ultrasound", "landmark")
    for bad in ("regimen.dose.cells", "regimen.dose.cells=1e6:1e9:log:1", "regimen.dose.cells=-1:1e9:log:3"):
        with pytest.raises(InputError, match="--vary"):
            Vary.parse(bad)


def test_trial_returns_its_tables(tmp_path):
    from conftest import small_design

    run = mscsim.trial(small_design(n=2), tmp_path / "t")
    assert set(run.summary["arm"]) == {a["name"] for a in small_design()["arms"]}
    assert len(run.patients) == 4 and not run.primary().empty and run.report.exists()
    assert "knee_oa_lee_2019" in repr(run)


def test_the_lower_level_functions_take_a_preset_name_too():
    """The issue's first friction: ``mscsim.simulate("knee_ia_5e7_blind")`` failed; a preset name now works."""
    assert mscsim.load_scenario("knee_ia_5e7_blind").name.startswith("Knee osteoarthritis, 5e7 MSC")
    ds = mscsim.simulate("mouse_iv_eggenhofer2012")
    assert ds.attrs["title"].endswith("(as in Eggenhofer 2012), 7 days") and ds.sizes["patient"] == 1
