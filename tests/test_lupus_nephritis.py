"""Lupus nephritis, the fifth disease (intravenous MSCs, the kidney as the lesion): behaviours on the bundled preset
(lupus_nephritis_iv_ucmsc_2e8) and the Deng 2017 design, named with their BIOLOGY ids. The untreated comparator is
the same patient from the same burn-in baseline; background immunosuppression enters only in a trial."""

import pytest

from conftest import at, example, gain, simulated

PRESET = "lupus_nephritis_iv_ucmsc_2e8"
DOSE = 2.0e8


def lupus(days: float = 100, **changes) -> dict:
    return example(PRESET, duration_days=days, **changes)


@pytest.fixture(scope="module")
def ref():
    return simulated(lupus())


def test_B04_B07_iv_cells_are_held_in_the_lungs_and_few_reach_the_kidneys(ref):
    assert float(ref["msc_lung"].isel(patient=0).max()) / DOSE > 0.6
    reached = float(ref["msc_target"].isel(patient=0).max()) / DOSE
    assert 0 < reached < 0.01
    assert at(ref, "viable_total", 14) / at(ref, "administered", 14) < 0.01  # gone within days
    calm = simulated(lupus(patient={"baseline_inflammation": 0.5}))
    assert at(calm, "msc_target", 1) < 0.8 * at(ref, "msc_target", 1)  # a less inflamed kidney holds fewer


def test_B08_B14_the_cells_add_little_to_an_untreated_nephritis_and_it_wanes(ref):
    """2e8 cells lower proteinuria by a few per cent for weeks, far from a remission (< 0.5 g/day)."""
    assert 0 < gain(ref, "proteinuria", 28) < 0.1 * at(ref, "proteinuria_untreated", 28)
    assert at(ref, "proteinuria", 28) > 2.0
    assert abs(gain(ref, "proteinuria", 100)) < 0.5 * gain(ref, "proteinuria", 28)  # the effect fades once the cells are gone


def test_B14_more_cells_do_more_but_not_in_proportion(ref):
    big = simulated(lupus(regimen={"dose": {"cells": 10 * DOSE}}))
    assert gain(ref, "proteinuria", 28) < gain(big, "proteinuria", 28) < 10 * gain(ref, "proteinuria", 28)


@pytest.mark.parametrize("changes", [{"patient": {"smoker": True}},
                                     {"patient": {"smoker": True, "vascular_disease": True}}],
                         ids=["smoker", "smoker_vascular"])
def test_B15_a_poorly_perfused_kidney_keeps_fewer_cells_and_gains_less(ref, changes):
    worse = simulated(lupus(**changes))
    assert at(worse, "msc_target", 1) < 0.99 * at(ref, "msc_target", 1)
    assert gain(worse, "proteinuria", 28) < gain(ref, "proteinuria", 28)


def test_B15_runaway_immune_complex_inflammation_weakens_the_response(ref):
    hot = simulated(lupus(patient={"baseline_inflammation": 2.0}))
    assert at(hot, "proteinuria", 0) > at(ref, "proteinuria", 0)
    assert gain(hot, "proteinuria", 28) < 0.8 * gain(ref, "proteinuria", 28)


def test_B17_chronic_glomerular_scarring_limits_what_the_cells_restore(ref):
    """A kidney with 60 % of its glomeruli scarred: more protein lost, less gained, and the scar stays."""
    scarred = simulated(lupus(parameters={"structure_0": 0.6}))
    assert at(scarred, "proteinuria", 0) > at(ref, "proteinuria", 0)
    assert gain(scarred, "proteinuria", 28) < 0.8 * gain(ref, "proteinuria", 28)
    assert at(scarred, "structure", 100) > 0.98 * 0.6  # sclerosed glomeruli are not rebuilt
    floor = 1.5 * at(scarred, "structure", 100)  # proteinuria_per_structure x scar: what no treatment removes here
    assert at(scarred, "proteinuria", 100) > floor


def test_renal_response_categories_follow_the_proteinuria_thresholds():
    """Complete below 0.5 g/day, partial when halved and below 3, progression when risen by more than half."""
    import numpy as np

    from mscsim.endpoints import RESPONSE_CODES, load_endpoints, response_codes

    resp = load_endpoints("lupus_nephritis").spec.responses["renal_response"]
    base, later = [4.0, 4.0, 8.0, 4.0, 4.0, 2.0], [0.4, 1.9, 3.5, 3.0, 6.5, 0.9]
    codes = response_codes(resp, np.array([base, later]).T, np.array([0.0, 364.0]), [364.0])
    expected = ["complete", "partial", "none", "none", "progression", "partial"]
    assert [int(c) for c in codes] == [RESPONSE_CODES[e] for e in expected]


def test_renal_response_needs_its_thresholds_and_its_endpoint(tmp_path):
    from pydantic import ValidationError

    from mscsim.endpoints.definitions import Response
    from mscsim.errors import InputError
    from mscsim.trials.design import design_from_dict

    with pytest.raises(ValidationError, match="complete_below"):
        Response(kind="reduction_response", of="proteinuria", day=364, long_name="x", source=["deng2017"])
    with pytest.raises(ValidationError, match="reduction responses"):
        Response(kind="stage_response", of="organ_stage", day=28, long_name="x", source=["x"], complete_below=0.5)
    import yaml

    from mscsim.trials.design import DESIGN_DIR

    data = yaml.safe_load((DESIGN_DIR / "lupus_nephritis_deng_2017.yaml").read_text())
    data["endpoints"] = {"renal_response": {"test": "fisher"}, "sledai_2k": {}}
    with pytest.raises(InputError, match="proteinuria"):
        design_from_dict(data)


def test_B14_B18_deng_trial_shows_no_added_benefit_and_varied_responses(tmp_path):
    """The bundled placebo-controlled design (Deng 2017) runs end to end and writes its published-vs-simulated
    table. Over 200 virtual patients per arm, both arms respond mostly through background immunosuppression, the
    cells add at most a few points of renal response, and patients differ: some remit completely, some partly,
    some not at all, in each arm."""
    import mscsim
    import pandas as pd

    run = mscsim.trial("lupus_nephritis_deng_2017", tmp_path / "trial")
    pvs = pd.read_csv(run.out / "published_vs_simulated.csv")
    assert set(pvs["endpoint"]) == {"renal_response", "proteinuria", "sledai_2k"} and pvs["simulated"].notna().all()
    e = run.endpoints
    resp = e[(e["endpoint"] == "renal_response") & (e["visit_day"] == 364.0)].groupby("arm")["value"].mean()
    assert 0.6 < resp["placebo"] < 0.95  # the standard-care response fitted to 5 of 6
    assert abs(resp["uc_msc"] - resp["placebo"]) < 0.1  # no meaningful added benefit (published: 75 % vs 83 %)
    for arm in ("placebo", "uc_msc"):
        parts = {c: e[(e["endpoint"] == f"renal_response_{c}") & (e["arm"] == arm)]["value"].mean()
                 for c in ("complete", "partial")}
        assert parts["complete"] > 0.2 and parts["partial"] > 0.1 and parts["complete"] + parts["partial"] < 0.97
    prot = e[(e["endpoint"] == "proteinuria") & (e["visit_day"] == 168.0)]
    assert prot["baseline"].std() > 0.5  # patients start from different proteinuria (B18)
    change = prot.groupby("arm")["change"].mean()
    assert change["placebo"] < -1.0  # induction therapy lowers proteinuria in both arms
    assert abs(change["uc_msc"] - change["placebo"]) < 0.3


def test_simulate_prints_the_lupus_endpoints_at_the_trial_visits_treated_against_untreated(tmp_path, capsys):
    from mscsim.cli import main

    assert main(["simulate", PRESET, "--out", str(tmp_path / "ln")]) == 0
    out = capsys.readouterr().out
    for line in ("24-h urine protein, day 28 (g/day)", "SLEDAI-2K, day 168", "renal response by 12 months"):
        assert line in out and "untreated" in out.split(line)[1].splitlines()[0], line
    assert (tmp_path / "ln" / "tissue_response.png").is_file()


def test_the_fall_on_induction_therapy_is_uncertain_in_bands_calibration_and_the_fitted_record():
    """The standard-care fall (sc_lupus_r, sc_lupus_tau) is one of the trial-level responses the Deng design's
    bands draw and its calibration may fit, and it is listed as fitted to Deng 2017 (one list for all three)."""
    from mscsim.trials.design import load_design
    from mscsim.trials.trial import fitted_parameters
    from mscsim.trials.uncertain import design_space

    design, _ = load_design("lupus_nephritis_deng_2017")
    trial = {p.name for p in design_space(design).parameters if p.role == "trial"}
    assert {"sc_lupus_r", "sc_lupus_tau"} <= trial
    fitted = {r["parameter"]: r["fitted_to"] for r in fitted_parameters(design)}
    assert fitted["sc_lupus_r"] == "deng2017"
    knee, _ = load_design("knee_oa_lee_2019")
    assert not {"sc_lupus_r", "sc_lupus_tau"} & {p.name for p in design_space(knee).parameters}
