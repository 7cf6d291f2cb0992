"""Virtual trial populations (mscsim.trials.cohort): chunk-independent draws, marginals and latent correlations
reproduced, inclusion criteria, field-naming errors, and the bundled cohorts."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from mscsim.errors import InputError
from mscsim.io.scenario import PatientSpec
from mscsim.model.parameters import load_parameter_sets
from mscsim.simulation import COVARIATES, environment_parameters
from mscsim.trials.cohort import (STREAM, CohortSpec, _latent_draws, bundled_cohorts, cohort_from_dict, draw_cohort,
                                  load_cohort, screen_failure_fraction, to_model_covariates)

# the brief's knee-OA example: correlations, a derived weight and two inclusion criteria
EXAMPLE = yaml.safe_load("""
covariates:
  age_years: {distribution: normal, mean: 60, sd: 9, low: 40, high: 85}
  sex_female: {distribution: bernoulli, p: 0.6}
  bmi: {distribution: normal, mean: 28, sd: 4.5, low: 18, high: 45}
  height_m: {distribution: normal, mean: 1.68, sd: 0.09, low: 1.45, high: 1.95}
  smoker: {distribution: bernoulli, p: 0.18}
  vascular_disease: {distribution: bernoulli, p: 0.1}
  nutrition: {distribution: categorical, categories: {adequate: 0.92, poor: 0.08}}
  kellgren_lawrence: {distribution: categorical, categories: {2: 0.35, 3: 0.45, 4: 0.2}}
  baseline_inflammation: {distribution: lognormal, median: 1.0, cv: 0.3}
  gvhd_grade: {distribution: categorical, categories: {II: 0.2, III: 0.3, IV: 0.5}}
correlations:
  - [age_years, kellgren_lawrence, 0.3]
  - [bmi, kellgren_lawrence, 0.2]
  - [age_years, vascular_disease, 0.25]
inclusion:
  - {covariate: kellgren_lawrence, in: [2, 3]}
  - {covariate: age_years, min: 40, max: 75}
source: [lamoespinosa2016]
""")

# every marginal kind, no inclusion: for the marginal and correlation checks
RHO = {"age_bmi": 0.5, "age_kl": 0.4, "age_smoker": -0.3, "height_inflammation": 0.35}
STATS = {
    "covariates": {
        "age_years": {"distribution": "normal", "mean": 50, "sd": 10},
        "bmi": {"distribution": "lognormal", "median": 25, "cv": 0.15},
        "height_m": {"distribution": "normal", "mean": 1.7, "sd": 0.1, "low": 1.5, "high": 1.9},
        "baseline_inflammation": {"distribution": "uniform", "low": 0.5, "high": 1.5},
        "smoker": {"distribution": "bernoulli", "p": 0.3},
        "kellgren_lawrence": {"distribution": "categorical", "categories": {1: 0.1, 2: 0.3, 3: 0.4, 4: 0.2}},
        "nutrition": {"distribution": "categorical", "categories": {"adequate": 0.8, "poor": 0.2}},
    },
    "correlations": [["age_years", "bmi", RHO["age_bmi"]], ["age_years", "kellgren_lawrence", RHO["age_kl"]],
                     ["age_years", "smoker", RHO["age_smoker"]],
                     ["height_m", "baseline_inflammation", RHO["height_inflammation"]]],
    "source": ["panes2016"],
}
N = 20_000


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    return draw_cohort(cohort_from_dict(STATS), seed=11, start=0, count=N)


def _spec(**changes) -> CohortSpec:
    data = copy.deepcopy(EXAMPLE)
    data.update(copy.deepcopy(changes))
    return cohort_from_dict(data)


# --- keyed per patient ----------------------------------------------------------------------------------------------

def test_same_patients_whatever_the_chunking():
    spec = _spec()
    whole = draw_cohort(spec, seed=5, start=0, count=1000)
    chunks = pd.concat([draw_cohort(spec, seed=5, start=s, count=100) for s in range(0, 1000, 100)])
    pd.testing.assert_frame_equal(whole, chunks)
    assert list(whole.index) == list(range(1000)) and whole.index.name == "patient"
    assert (whole["screen_attempts"] > 1).any()  # re-drawn patients are keyed too
    middle = draw_cohort(spec, seed=5, start=437, count=3)
    pd.testing.assert_frame_equal(middle, whole.loc[437:439])
    assert not draw_cohort(spec, seed=6, start=0, count=50).equals(whole.iloc[:50])
    assert not draw_cohort(spec, seed=5, start=0, count=50, stream=1).equals(whole.iloc[:50])


def test_draws_come_from_the_documented_per_patient_generator():
    seed, stream, attempt = 2 ** 40 + 7, 2, 3
    patients = np.array([0, 5, 123_456])
    expected = [np.random.default_rng([seed, int(i), STREAM, stream, attempt]).standard_normal(4) for i in patients]
    np.testing.assert_array_equal(_latent_draws(seed, patients, stream, attempt, 4), np.array(expected))
    # one normal covariate, no correlations or criteria: the value is mean + sd * z of attempt 0
    spec = cohort_from_dict({"covariates": {"age_years": {"distribution": "normal", "mean": 50, "sd": 10}},
                             "source": ["panes2016"]})
    z = [np.random.default_rng([seed, i, STREAM, stream, 0]).standard_normal(1)[0] for i in (3, 4)]
    got = draw_cohort(spec, seed=seed, start=3, count=2, stream=stream)["age_years"].to_numpy()
    np.testing.assert_allclose(got, 50 + 10 * np.array(z), atol=1e-6)


def test_truncated_quantiles_of_all_covariates_at_once_are_scipys_per_covariate():
    """The normal and log-normal covariates' truncated quantiles come from one SciPy call for all of them: bit for
    bit what a call per covariate with scalar bounds gives (both halves, a one-sided bound, and none)."""
    from mscsim.trials.cohort import _truncated_normals

    z = np.random.default_rng(3).standard_normal((500, 4)) * 1.5
    bounds = [(-1.2, 2.5), (-np.inf, 0.7), (-np.inf, np.inf), (-3.0, np.inf)]
    got = _truncated_normals([(z[:, j], a, b) for j, (a, b) in enumerate(bounds)])
    for j, (a, b) in enumerate(bounds):
        col = z[:, j]
        if np.isinf(a) and np.isinf(b):
            np.testing.assert_array_equal(got[j], col)  # untruncated: z itself
            continue
        lower = col <= 0
        want = np.empty_like(col)
        want[lower] = stats.truncnorm.ppf(stats.norm.cdf(col[lower]), a, b)
        want[~lower] = stats.truncnorm.isf(stats.norm.sf(col[~lower]), a, b)
        np.testing.assert_array_equal(got[j], np.clip(want, a, b))
        assert got[j].min() >= a and got[j].max() <= b


# --- marginals and correlations ------------------------------------------------------------------------------------

def test_marginals_are_reproduced(big):
    se = 4 / np.sqrt(N)  # four standard errors, per unit SD
    age = big["age_years"]
    assert abs(age.mean() - 50) < 10 * se and abs(age.std() / 10 - 1) < 0.03
    bmi = big["bmi"]
    assert abs(np.log(bmi).median() - np.log(25)) < 0.15 * 1.3 * se  # median of a lognormal, log scale
    assert abs(np.log(bmi).std() - np.sqrt(np.log1p(0.15 ** 2))) < 0.005
    assert abs(bmi.std() / bmi.mean() - 0.15) < 0.006
    h = big["height_m"]
    a, b = (1.5 - 1.7) / 0.1, (1.9 - 1.7) / 0.1
    assert h.between(1.5, 1.9).all()
    assert abs(h.mean() - stats.truncnorm.mean(a, b, 1.7, 0.1)) < 0.1 * se
    assert abs(h.std() - stats.truncnorm.std(a, b, 1.7, 0.1)) < 0.003
    u = big["baseline_inflammation"]
    assert u.between(0.5, 1.5).all() and abs(u.mean() - 1.0) < 0.3 * se and abs(u.std() - 12 ** -0.5) < 0.005
    assert big["smoker"].dtype == bool and abs(big["smoker"].mean() - 0.3) < 0.015
    kl = big["kellgren_lawrence"]
    assert kl.dtype == np.int64
    for grade, p in {1: 0.1, 2: 0.3, 3: 0.4, 4: 0.2}.items():
        assert abs((kl == grade).mean() - p) < 0.015
    assert set(big["nutrition"]) == {"adequate", "poor"} and abs((big["nutrition"] == "poor").mean() - 0.2) < 0.015
    np.testing.assert_allclose(big["weight_kg"], big["bmi"] * big["height_m"] ** 2, rtol=1e-12)
    assert (big["screen_attempts"] == 1).all()


def _threshold_corr(probs, values) -> float:
    """corr(z, g(z)) for z ~ N(0, 1) and g the categorical step function by cumulative thresholds."""
    probs, values = np.asarray(probs, float), np.asarray(values, float)
    t = np.concatenate([[-np.inf], stats.norm.ppf(np.cumsum(probs)[:-1]), [np.inf]])
    cov = np.sum(values * (stats.norm.pdf(t[:-1]) - stats.norm.pdf(t[1:])))
    sd = np.sqrt(np.sum(probs * values ** 2) - np.sum(probs * values) ** 2)
    return cov / sd


def test_target_correlations_are_reproduced(big):
    tol = 0.03  # about four Monte Carlo standard errors at 20,000 patients
    age = big["age_years"]
    # both linear in their latent normals: Pearson on the latent scale is the target itself
    assert abs(np.corrcoef(age, np.log(big["bmi"]))[0, 1] - RHO["age_bmi"]) < tol
    # continuous vs ordinal and vs yes/no: corr(z1, g(z2)) = rho * corr(z2, g(z2))
    expected_kl = RHO["age_kl"] * _threshold_corr([0.1, 0.3, 0.4, 0.2], [1, 2, 3, 4])
    assert abs(np.corrcoef(age, big["kellgren_lawrence"])[0, 1] - expected_kl) < tol
    expected_smoker = RHO["age_smoker"] * _threshold_corr([0.7, 0.3], [0, 1])
    assert abs(np.corrcoef(age, big["smoker"])[0, 1] - expected_smoker) < tol
    # monotone transforms keep ranks: Spearman = 6/pi asin(rho/2) of the latent normals
    rank = stats.spearmanr(big["height_m"], big["baseline_inflammation"])[0]
    assert abs(rank - 6 / np.pi * np.arcsin(RHO["height_inflammation"] / 2)) < tol
    assert abs(stats.spearmanr(age, big["nutrition"] == "poor")[0]) < tol  # no correlation given


# --- inclusion ------------------------------------------------------------------------------------------------------

def test_inclusion_criteria_always_hold_and_screening_is_counted():
    spec = _spec(correlations=[])  # independent covariates: the pass rate is a product
    df = draw_cohort(spec, seed=3, start=0, count=4000)
    assert df["kellgren_lawrence"].isin([2, 3]).all()
    assert df["age_years"].between(40, 75).all()
    a, b = (40 - 60) / 9, (85 - 60) / 9
    accept = 0.8 * stats.truncnorm.cdf(75, a, b, 60, 9)
    assert df["screen_attempts"].min() == 1
    assert abs(df["screen_attempts"].mean() - 1 / accept) < 0.05
    assert abs(screen_failure_fraction(df) - (1 - accept)) < 0.03
    correlated = draw_cohort(_spec(), seed=3, start=0, count=2000)
    assert correlated["kellgren_lawrence"].isin([2, 3]).all() and correlated["age_years"].between(40, 75).all()


def test_nearly_impossible_criteria_give_up_naming_the_inclusion():
    spec = cohort_from_dict({"covariates": {"age_years": {"distribution": "normal", "mean": 60, "sd": 9}},
                             "inclusion": [{"covariate": "age_years", "min": 116}], "source": ["panes2016"]})
    with pytest.raises(InputError) as err:
        draw_cohort(spec, seed=1, start=0, count=1)
    assert err.value.where == "population.inclusion" and "10000" in str(err.value)


def test_inclusion_on_the_derived_weight_and_on_yes_no_values():
    spec = _spec(inclusion=[{"covariate": "weight_kg", "max": 80}, {"covariate": "smoker", "in": [False]}])
    df = draw_cohort(spec, seed=2, start=0, count=500)
    assert (df["weight_kg"] <= 80).all() and not df["smoker"].any()


def test_category_keys_may_be_strings_and_come_back_typed():
    data = copy.deepcopy(EXAMPLE)
    data["covariates"]["kellgren_lawrence"]["categories"] = {"2": 0.35, "3": 0.45, "4": 0.2}
    data["inclusion"][0]["in"] = ["2", 3]
    df = draw_cohort(cohort_from_dict(data), seed=5, start=0, count=300)
    pd.testing.assert_series_equal(df["kellgren_lawrence"], draw_cohort(_spec(), 5, 0, 300)["kellgren_lawrence"])
    assert all(isinstance(v, str) for v in df["gvhd_grade"]) and set(df["gvhd_grade"]) <= {"II", "III", "IV"}


def test_spec_survives_a_json_round_trip():
    spec = _spec()
    again = CohortSpec.model_validate(json.loads(spec.model_dump_json()))
    pd.testing.assert_frame_equal(draw_cohort(spec, 9, 0, 100), draw_cohort(again, 9, 0, 100))


# --- errors name the field ----------------------------------------------------------------------------------------

def _set(path, value):
    def change(d):
        *head, last = path
        for p in head:
            d = d[p]
        d[last] = value
    return change


BAD = [
    (_set(["covariates", "foo"], {"distribution": "bernoulli", "p": 0.1}), "population.covariates.foo"),
    (_set(["correlations", 1], ["bmi", "weight", 0.2]), "population.correlations[1]"),
    (_set(["correlations", 0], ["age_years", "kellgren_lawrence", 1.2]), "population.correlations[0]"),
    (_set(["correlations", 2], ["kellgren_lawrence", "age_years", 0.1]), "population.correlations[2]"),
    (_set(["correlations"], [["age_years", "bmi", 0.9], ["bmi", "height_m", 0.9], ["age_years", "height_m", -0.9]]),
     "population.correlations"),
    (_set(["covariates", "nutrition", "categories"], {"adequate": 0.9, "poor": 0.2}),
     "population.covariates.nutrition"),
    (_set(["covariates", "kellgren_lawrence", "categories"], {2: 0.5, 5: 0.5}),
     "population.covariates.kellgren_lawrence.categories"),
    (_set(["covariates", "gvhd_grade", "categories"], {"I": 0.5, "II": 0.5}),
     "population.covariates.gvhd_grade.categories"),
    (_set(["covariates", "age_years"], {"distribution": "bernoulli", "p": 0.5}),
     "population.covariates.age_years.distribution"),
    (_set(["covariates", "smoker"], {"distribution": "normal", "mean": 0, "sd": 1}),
     "population.covariates.smoker.distribution"),
    (_set(["covariates", "age_years", "sd"], -1), "population.covariates.age_years.sd"),
    (_set(["covariates", "age_years", "high"], 130), "population.covariates.age_years.high"),
    (_set(["covariates", "age_years", "distribution"], "gamma"), "population.covariates.age_years"),
    (_set(["covariates", "age_years", "median"], 3), "population.covariates.age_years.median"),
    (_set(["covariates", "smoker", "p"], 1.5), "population.covariates.smoker.p"),
    (_set(["source"], []), "population.source"),
    (_set(["source"], ["no_such_key_1999"]), "population.source"),
    (_set(["foo"], 1), "population.foo"),
    (_set(["inclusion", 0, "min"], 2), "population.inclusion[0]"),
    (_set(["inclusion", 1, "covariate"], "weight"), "population.inclusion[1].covariate"),
    (_set(["inclusion", 1, "min"], 90), "population.inclusion[1]"),
    (_set(["inclusion", 0, "in"], [7]), "population.inclusion[0].in"),
    (_set(["inclusion", 0, "in"], [1]), "population.inclusion[0]"),  # a grade no patient has
]


@pytest.mark.parametrize("change, where", BAD, ids=[w + f"#{i}" for i, (_, w) in enumerate(BAD)])
def test_bad_specs_name_the_field(change, where):
    data = copy.deepcopy(EXAMPLE)
    change(data)
    with pytest.raises(InputError) as err:
        cohort_from_dict(data)
    assert err.value.where == where
    assert where in str(err.value)


def test_not_positive_definite_says_so():
    data = copy.deepcopy(EXAMPLE)
    data["correlations"] = [["age_years", "bmi", 0.9], ["bmi", "height_m", 0.9], ["age_years", "height_m", -0.9]]
    with pytest.raises(InputError, match="positive definite"):
        cohort_from_dict(data)


def test_draw_arguments_are_checked():
    with pytest.raises(InputError, match="seed"):
        draw_cohort(_spec(), seed=-1, start=0, count=3)
    with pytest.raises(InputError, match="start"):
        draw_cohort(_spec(), seed=1, start=-2, count=3)


# --- model covariates ---------------------------------------------------------------------------------------------

def test_model_covariates_keep_only_what_the_model_reads():
    df = draw_cohort(_spec(), seed=4, start=10, count=20)
    cov = to_model_covariates(df)
    assert list(cov.columns) == [c for c in COVARIATES if c in df.columns]
    assert "weight_kg" in cov and "sex_female" not in cov and "screen_attempts" not in cov
    assert list(cov.index) == list(range(10, 30))
    assert cov["smoker"].dtype == bool and cov["kellgren_lawrence"].dtype == np.int64
    assert cov["weight_kg"].dtype == float
    gaps = pd.DataFrame({"kellgren_lawrence": [2, np.nan], "gvhd_grade": ["II", None], "smoker": [True, None],
                         "age_years": [50.0, None]})
    filled = to_model_covariates(gaps)
    assert filled["kellgren_lawrence"].tolist() == [2, None] and filled["gvhd_grade"].tolist() == ["II", None]
    assert filled["smoker"].tolist() == [True, None] and np.isnan(filled["age_years"].iloc[1])


# --- bundled cohorts ----------------------------------------------------------------------------------------------

DISEASE = {"knee_oa_adults": "knee_osteoarthritis", "sr_agvhd_children": "acute_gvhd",
           "sr_agvhd_adults": "acute_gvhd", "crohn_perianal_adults": "perianal_fistula",
           "lumbar_ddd_adults": "lumbar_disc_degeneration", "tendinopathy_adults": "tendinopathy",
           "dfu_adults": "diabetic_foot_ulcer", "lupus_nephritis_adults": "lupus_nephritis"}


@pytest.mark.parametrize("name", sorted(DISEASE))
def test_bundled_cohorts_load_and_feed_the_model(name):
    assert name in bundled_cohorts()
    spec = load_cohort(name)
    df = draw_cohort(spec, seed=1, start=0, count=200)
    cov = to_model_covariates(df)
    for row in cov.head(50).to_dict("records"):
        PatientSpec(**row)  # every value is one a scenario's patient may hold
    pset = load_parameter_sets(["kinetics", "species_human", "tissue", f"disease_{DISEASE[name]}"])
    env = environment_parameters(cov, pset)
    assert all(np.isfinite(v).all() and len(v) == 200 for v in env.values())


def test_bundled_cohorts_match_their_trials():
    children = draw_cohort(load_cohort("sr_agvhd_children"), seed=2, start=0, count=3000)
    assert abs(children["age_years"].mean() - 9.6) < 0.4 and children["age_years"].max() < 18
    shares = children["gvhd_grade"].value_counts(normalize=True)
    assert abs(shares["II"] - 0.2) < 0.03 and abs(shares["IV"] - 0.5) < 0.03
    knee = draw_cohort(load_cohort("knee_oa_adults"), seed=2, start=0, count=1000)
    assert knee["kellgren_lawrence"].isin([2, 3, 4]).all() and 55 < knee["age_years"].mean() < 65
    disc = draw_cohort(load_cohort("lumbar_ddd_adults"), seed=2, start=0, count=1000)
    assert 37 < disc["age_years"].mean() < 43 and disc["age_years"].between(18, 75).all()  # Noriega 2017: mean 38 y
    assert abs(disc["sex_female"].mean() - 7 / 24) < 0.05 and disc["bmi"].max() <= 40  # 7 women of 24
    tendon = draw_cohort(load_cohort("tendinopathy_adults"), seed=2, start=0, count=1000)
    assert 44 < tendon["age_years"].mean() < 50 and tendon["age_years"].min() >= 19  # Smidt 2002: median 47 y
    ln = draw_cohort(load_cohort("lupus_nephritis_adults"), seed=2, start=0, count=1000)
    assert ln["age_years"].between(18, 60).all() and ln["sex_female"].mean() > 0.85  # young women, as in SLE


def test_load_cohort_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(InputError) as err:
        load_cohort("no_such_cohort")
    assert err.value.where == "COHORT" and "knee_oa_adults" in str(err.value)
    path = tmp_path / "pop.yaml"
    bad = copy.deepcopy(EXAMPLE)
    bad["correlations"][1] = ["bmi", "shoe_size", 0.2]
    path.write_text(yaml.safe_dump({"population": bad}))
    with pytest.raises(InputError) as err:
        load_cohort(path)
    assert err.value.file == str(path) and err.value.where == "population.correlations[1]"
    path.write_text(yaml.safe_dump({"covariates": EXAMPLE["covariates"]}))
    with pytest.raises(InputError) as err:
        load_cohort(str(path))
    assert err.value.where == "population" and str(path) in str(err.value)
    path.write_text(yaml.safe_dump({"population": EXAMPLE}))
    assert load_cohort(str(path)) == _spec()
