"""Steroid-refractory acute GVHD trials as they are run and reported: only patients with active disease at
enrolment (organ stage >= 1 at baseline) are enrolled, screen failures are replaced and recorded.

Small real runs of the bundled paediatric design (nothing of the model is mocked); only structural facts are
asserted, never the trial's numbers."""

from __future__ import annotations

import json

import pytest

from conftest import small_design, write_design
from mscsim.errors import InputError
from mscsim.trials import design_from_dict, load_design
from mscsim.trials.runner import meets_inclusion, screen, simulated_per_arm
from mscsim.trials.trial import run_trial

DESIGN = "sr_agvhd_msb_gvhd001"
N = 24  # per arm: enough that the paediatric cohort's grade II / low-inflammation patients include stage-0 draws


@pytest.fixture(scope="module")
def paediatric(tmp_path_factory):
    """The bundled paediatric design, 24 patients per arm, run once (with its screening reserve)."""
    design = design_from_dict(small_design(DESIGN, n=N))
    out = tmp_path_factory.mktemp("gvhd") / "out"
    run_trial(design, out)
    return design, out


def test_B15_no_enrolled_sr_agvhd_patient_has_stage_0_at_baseline(paediatric):
    import pandas as pd

    design, out = paediatric
    endpoints = pd.read_parquet(out / "endpoints.parquet")
    patients = pd.read_parquet(out / "patients.parquet")
    stage = endpoints[endpoints["endpoint"] == "organ_stage"]
    trial = set(patients.loc[patients["in_trial"], "patient"])
    assert len(trial) == 2 * N  # screen failures were replaced
    assert (stage.loc[stage["patient"].isin(trial), "baseline"] >= 1).all()
    assert (stage["baseline"] >= 1).all()  # no screen failure is followed, not even in the pool
    failures = patients[~patients["enrolled"]]
    assert len(failures) > 0 and not failures["in_trial"].any()  # the cohort does draw inactive disease
    assert set(failures["patient"]).isdisjoint(set(endpoints["patient"]))
    record = json.loads((out / "manifest.json").read_text())["screening"]
    assert {r["arm"] for r in record} == {a.name for a in design.arms}
    assert sum(r["screen_failures"] for r in record) == len(failures)
    assert all(r["in_trial"] == r["asked"] == N for r in record)


def test_B15_screening_keeps_the_first_n_enrolled_of_each_arm():
    import pandas as pd

    design = design_from_dict(small_design(DESIGN, n=2))
    patients = pd.DataFrame({"patient": range(8), "arm": ["control"] * 4 + ["msc"] * 4,
                             "enrolled": [False, True, True, True, True, False, False, True]})
    got = screen(design, patients)
    assert got["in_trial"].tolist() == [False, True, True, False, True, False, False, True]
    assert meets_inclusion(design, {"organ_stage": pd.Series([0.0, 1.0, 4.0]).to_numpy()}).tolist() == \
        [False, True, True]
    assert all(m >= 2 + 1 for m in simulated_per_arm(design).values())  # a reserve of replacements


@pytest.mark.parametrize("inclusion, where", [
    ([{"endpoint": "organ_stages", "min": 1}], "inclusion.0.endpoint"),
    ([{"endpoint": "response_day28", "min": 1}], "inclusion.0.endpoint"),
    ([{"endpoint": "organ_stage", "min": 5}], "inclusion.0"),
    ([{"endpoint": "organ_stage"}], "inclusion.0.min"),
])
def test_B15_bad_inclusion_is_refused_naming_file_field_and_value(tmp_path, inclusion, where):
    path = write_design(small_design(DESIGN, inclusion=inclusion), tmp_path / "design.yaml")
    with pytest.raises(InputError) as err:
        load_design(path)
    assert err.value.where == where and err.value.file == str(path)
    assert "organ_stage" in err.value.allowed or "min" in err.value.allowed
