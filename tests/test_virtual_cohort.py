"""BIOLOGY B18: responses vary. A virtual cohort's outcomes are a distribution over patients, and the patients'
covariates (radiographic grade, smoking, vascular disease, age, inflammation) say who responds and why."""

import numpy as np
import pandas as pd
import pytest

from conftest import example
from mscsim import scenario_from_dict
from mscsim.simulation import resolve_setup, simulate_chunk
from mscsim.trials import design_from_dict, load_design
from mscsim.trials.analysis import who_responds
from mscsim.trials.cohort import draw_cohort, load_cohort, to_model_covariates

N = 60
DAY = 180.0


@pytest.fixture(scope="module")
def cohort_effects():
    """Each virtual knee-OA patient's own treatment effect: untreated minus treated pain at day 180, the same
    patient from the same baseline, so the spread is the patients' and not measurement noise."""
    cohort = draw_cohort(load_cohort("knee_oa_adults"), 20261202, 0, N)
    cov = to_model_covariates(cohort).reset_index(drop=True)
    data = example("knee_oa_ia_5e7", duration_days=DAY, population={"size": N, "variability": True},
                   outputs={"times_hours": [90 * 24.0, DAY * 24.0]},
                   solver={"kind": "batched", "rtol": 1e-6, "chunk_size": 256})
    ds = simulate_chunk(resolve_setup(scenario_from_dict(data)), 0, N, cov)
    effect = (ds["pain_vas_untreated"] - ds["pain_vas"]).values[:, -1]
    return cov, effect


def test_B18_outcomes_are_a_distribution_not_one_number(cohort_effects):
    _, effect = cohort_effects
    assert np.isfinite(effect).all()
    assert effect.std() > 0.2 * effect.mean() > 0  # patients differ, by more than a fifth of the mean effect
    assert (effect > 0.5 * effect.mean()).mean() > 0.5  # most patients respond ...
    assert (effect < 0.25 * effect.mean()).any()  # ... and some barely do


def test_B18_covariates_say_who_responds_and_why(cohort_effects):
    cov, effect = cohort_effects
    kl = cov["kellgren_lawrence"].to_numpy()
    # who: end-stage (grade 4) knees gain far less than grade 2-3 knees (B17 within a cohort)
    assert effect[kl == 4].mean() < 0.5 * effect[kl < 4].mean()
    # why: the covariates the model reads explain most of the between-patient spread (the rest is the
    # between-patient variability of the model's own parameters, e.g. the disease's drive)
    X = np.column_stack([np.ones(N), kl == 3, kl == 4, cov["smoker"].astype(float),
                         cov["vascular_disease"].astype(float), cov["age_years"].astype(float),
                         np.log(cov["baseline_inflammation"].astype(float)), cov["nutrition"] == "poor",
                         cov["weight_kg"].astype(float)]).astype(float)
    beta, *_ = np.linalg.lstsq(X, effect, rcond=None)
    r2 = 1 - ((effect - X @ beta) ** 2).sum() / ((effect - effect.mean()) ** 2).sum()
    assert r2 > 0.5
    assert beta[3] < 0 and beta[4] < 0  # smokers and patients with vascular disease respond less (B15)


def test_B18_trial_report_table_gives_outcome_by_subgroup():
    """who_responds: the primary outcome per arm and covariate subgroup, rates with Wilson intervals and mean
    changes with t intervals; continuous covariates in thirds."""
    data = load_design("perianal_fistula_admire_cd")[0].model_dump(mode="json")
    design = design_from_dict({**data, "power": None})
    ids = np.arange(12)
    arm = np.where(ids < 6, "saline", "darvadstrocel")
    remitted = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1], dtype=float)
    endpoints = pd.DataFrame({"patient": ids, "arm": arm, "endpoint": design.primary.endpoint,
                              "visit_day": design.primary.visit_day, "value": remitted, "baseline": np.nan,
                              "change": np.nan})
    patients = pd.DataFrame({"patient": ids, "arm": arm, "smoker": ids % 2 == 0,
                             "age_years": np.linspace(20.0, 60.0, 12)})
    table = who_responds(design, endpoints, patients, {design.primary.endpoint: "binary"})
    smoke = table[(table["arm"] == "darvadstrocel") & (table["covariate"] == "smoker")].set_index("subgroup")
    assert smoke.loc["True", "n"] == 3 and smoke.loc["True", "mean"] == pytest.approx(2 / 3)  # ids 6, 8, 10
    assert smoke.loc["False", "mean"] == pytest.approx(1.0)  # ids 7, 9, 11
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    ages = table[(table["arm"] == "saline") & (table["covariate"] == "age_years")]
    assert len(ages) == 3 and ages["n"].sum() == 6 and set(table["measure"]) == {"rate"}
