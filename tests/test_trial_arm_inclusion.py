"""An arm's own enrolment on a baseline endpoint (``arms[].inclusion``): the published arms of Lamo-Espinosa 2016
started at different pain after randomising 3 x 10 patients, and each virtual arm enrols within its arm's
published baseline range. A small real run of the bundled design (nothing of the model is mocked)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import small_design, trial_tables, write_design
from mscsim.errors import InputError
from mscsim.trials import design_from_dict, load_design
from mscsim.trials.runner import meets_inclusion
from mscsim.trials.trial import run_trial

DESIGN = "knee_oa_lamo_espinosa_2016"


@pytest.fixture(scope="module")
def lamo(tmp_path_factory):
    design = design_from_dict(small_design(DESIGN, n=12))
    out = tmp_path_factory.mktemp("lamo") / "out"
    run_trial(design, out)
    return design, out


def test_each_arm_enrols_within_its_own_baseline_range(lamo):
    design, out = lamo
    endpoints, patients = trial_tables(out)
    pain = endpoints[(endpoints["endpoint"] == "pain_vas") & (endpoints["visit_day"] == design.visits_days[0])]
    medians = {}
    for arm in design.arms:
        (crit,) = arm.inclusion
        ids = set(patients.loc[(patients["arm"] == arm.name) & patients["in_trial"], "patient"])
        base = pain.loc[pain["patient"].isin(ids), "baseline"].to_numpy()
        assert len(base) == 12  # screen failures were replaced
        # screening reads the modelled baseline, the table the measured one (with the VAS's measurement error)
        assert crit.min - 20 <= base.min() and base.max() <= crit.max + 20
        medians[arm.name] = float(np.median(base))
    # the published baselines: HA 50 mm, HA + 1e7 cells 70 mm; the windows put the arms in that order
    assert medians["ha"] < medians["msc_1e7"]
    ha, _ = design.arms
    assert meets_inclusion(design, {"pain_vas": np.array([29.0, 30.0, 70.0, 71.0])}, ha).tolist() == \
        [False, True, True, False]
    failed = patients[(patients["arm"] == "ha") & ~patients["enrolled"]]
    assert len(failed) and not failed["in_trial"].any()  # the cohort draws patients outside the HA arm's range


def test_bad_arm_inclusion_is_refused_naming_the_arm_and_field(tmp_path):
    data = small_design(DESIGN)
    data["arms"][1]["inclusion"] = [{"endpoint": "pain", "min": 50}]
    path = write_design(data, tmp_path / "design.yaml")
    with pytest.raises(InputError) as err:
        load_design(path)
    assert err.value.where == "arms.1.inclusion.0.endpoint" and err.value.file == str(path)
    assert "pain_vas" in err.value.allowed
