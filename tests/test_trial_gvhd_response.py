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
from mscsim.trials.cohort import load_cohort
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
    report = (out / "report.html").read_text()
    assert "Response by arm" in report and "failed the inclusion at baseline" in report


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


# --- complete and partial responses, at day 28 and best by day 100 ---------------------------------------------

def test_B16_best_response_by_day_100_is_the_best_category_reached_at_any_visit():
    import numpy as np

    from mscsim.endpoints import RESPONSE_CODES, best_stage_response, stage_response

    days = np.array([0.0, 28.0, 56.0, 100.0])
    stage = np.array([[3, 3, 0, 2],   # none at day 28, complete at day 56, partial at day 100
                      [2, 1, 3, 3],   # partial at day 28, then progression
                      [2, 3, 3, 3],   # progression throughout
                      [4, 4, 4, 4]], dtype=float)
    codes = RESPONSE_CODES
    assert stage_response(stage, days, 28).tolist() == [codes["none"], codes["partial"], codes["progression"],
                                                        codes["none"]]
    assert best_stage_response(stage, days, [28, 56, 100]).tolist() == [codes["complete"], codes["partial"],
                                                                      codes["progression"], codes["none"]]


def test_B18_trial_reports_complete_partial_and_overall_response_per_arm(paediatric):
    import pandas as pd

    design, out = paediatric
    summary = pd.read_csv(out / "arm_summary.csv").set_index(["arm", "endpoint", "visit_day"])
    for arm in ("control", "msc"):
        for response, day in (("response_day28", 28.0), ("best_response_day100", 100.0)):
            overall = summary.loc[(arm, response, day), "mean"]
            complete = summary.loc[(arm, f"{response}_complete", day), "mean"]
            partial = summary.loc[(arm, f"{response}_partial", day), "mean"]
            assert summary.loc[(arm, response, day), "n"] == N
            assert overall == pytest.approx(complete + partial)
        # the best by day 100 is at least the day-28 response (day 28 is one of its visits)
        assert summary.loc[(arm, "best_response_day100", 100.0), "mean"] >= \
            summary.loc[(arm, "response_day28", 28.0), "mean"]
    published = pd.read_csv(out / "published_vs_simulated.csv")
    msc = published[(published["arm"] == "msc") & (published["endpoint"] == "response_day28")]
    rows = msc.set_index("quantity")
    assert {"complete response rate", "partial response rate",
            "overall response rate (complete or partial)"} <= set(rows.index)
    for quantity, part in (("complete response rate", "complete"), ("partial response rate", "partial")):
        assert rows.loc[quantity, "simulated"] == pytest.approx(summary.loc[("msc", f"response_day28_{part}", 28.0),
                                                                            "mean"])
        assert rows.loc[quantity, "published"] == next(
            p.value for p in design.published if p.statistic == f"{part}_rate")


def test_B18_complete_or_partial_rate_of_a_non_response_is_refused(tmp_path):
    data = small_design(DESIGN)
    data["published"] = [{"endpoint": "organ_stage", "visit_day": 28, "arm": "msc", "statistic": "complete_rate",
                          "value": 0.3, "source": ["kurtzberg2020b"]}]
    path = write_design(data, tmp_path / "design.yaml")
    with pytest.raises(InputError) as err:
        load_design(path)
    assert err.value.where == "published.0.statistic" and "response_day28" in err.value.allowed


# --- the adult cohort and design ------------------------------------------------------------------------------

def test_B18_adult_sr_agvhd_cohort_draws_its_cited_covariates_and_organs_act_on_nothing():
    from mscsim.trials.cohort import draw_cohort, to_model_covariates

    spec = load_cohort("sr_agvhd_adults")
    adults = draw_cohort(spec, seed=3, start=0, count=3000)
    assert adults["age_years"].between(18, 70).all()
    assert adults["age_years"].median() == pytest.approx(52, abs=1.5)  # Muroi 2013's median
    shares = adults["gvhd_grade"].value_counts(normalize=True)
    assert set(shares.index) == {"II", "III"}  # no grade IV in Muroi 2013
    assert shares["II"] == pytest.approx(0.643, abs=0.03)
    for organ, p in (("gvhd_gut", 0.714), ("gvhd_skin", 0.643), ("gvhd_liver", 0.214)):
        assert adults[organ].mean() == pytest.approx(p, abs=0.03)
    model_inputs = set(to_model_covariates(adults).columns)
    assert {"age_years", "gvhd_grade", "nutrition", "weight_kg"} <= model_inputs
    assert not {"gvhd_gut", "gvhd_skin", "gvhd_liver", "sex_female"} & model_inputs


def test_B18_adult_design_compares_complete_and_partial_response_with_muroi2013():
    design, _ = load_design("sr_agvhd_adults_muroi2013")
    assert design.cohort == load_cohort("sr_agvhd_adults")
    stats = {p.statistic: p.value for p in design.published if p.endpoint == "response_day28"}
    assert stats == {"rate": pytest.approx(13 / 14, abs=1e-3), "complete_rate": pytest.approx(8 / 14, abs=1e-3),
                     "partial_rate": pytest.approx(5 / 14, abs=1e-3)}
    assert [c.endpoint for c in design.inclusion] == ["organ_stage"] and design.inclusion[0].min == 1


def test_B18_response_table_gives_complete_partial_and_overall_per_arm(paediatric):
    import pandas as pd

    from mscsim.trials.observe import response_parts
    from mscsim.trials.report import response_table

    design, out = paediatric
    table = response_table(pd.read_csv(out / "arm_summary.csv"), response_parts(design))
    assert list(table["response"].unique()) == ["response_day28", "best_response_day100"]  # the design's order
    assert set(table["arm"]) == {"control", "msc"} and (table["n"] == N).all()
    assert (table["overall"] - table["complete"] - table["partial"]).abs().max() < 1e-12
    assert table[["complete", "partial", "overall"]].stack().between(0, 1).all()


def test_B18_cli_prints_screening_and_complete_partial_overall_per_arm(tmp_path, capsys):
    from mscsim.cli import main

    path = write_design(small_design(DESIGN, n=4), tmp_path / "design.yaml")
    assert main(["trial", str(path), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "screening:" in text and "organ_stage >= 1" in text
    lines = [ln for ln in text.splitlines() if "complete" in ln and "partial" in ln and "overall" in ln]
    assert any("day-28 response" in ln for ln in lines) and any("best response by day 100" in ln for ln in lines)
    assert "complete response rate" in text and "partial response rate" in text  # published vs simulated rows
