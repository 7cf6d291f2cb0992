"""The credibility page (mscsim credibility DISEASE) and the literature pass it reports: every influential parameter
left 'assumed' says why no measured value exists."""

from __future__ import annotations

import json

import pytest

from mscsim.analysis.credibility import DISEASES, bundled_sensitivity, grade_mix, influential
from mscsim.cli import main


@pytest.mark.parametrize("disease", sorted(DISEASES))
def test_no_influential_parameter_is_left_assumed_without_a_stated_reason(disease):
    rankings = bundled_sensitivity(disease)
    params, _ = grade_mix(disease)
    infl = params[params["parameter"].isin(influential(rankings))]
    silent = infl[(infl["grade"] == "assumed") & (infl["why_no_source"] == "")]
    assert silent.empty, f"influential and assumed without why_no_source: {silent['parameter'].tolist()}"


def test_the_credibility_page_shows_grades_rankings_fits_and_agreement(tmp_path, capsys):
    out = tmp_path / "cred"
    assert main(["credibility", "perianal_fistula", "--out", str(out)]) == 0
    page = (out / "credibility_perianal_fistula.html").read_text()
    for heading in ("Credibility factors", "Evidence grades of the parameters", "Which parameters matter",
                    "What was fitted to what", "Validation targets", "Published trials beside the simulated ones"):
        assert heading in page, heading
    assert "k_struct_rep" in page  # fitted to ADMIRE-CD
    record = json.loads((out / "credibility_perianal_fistula.json").read_text())
    assert record["grade_mix"][0]["n"] > 100 and 0 < record["grade_mix"][0]["share_assumed"] < 1
    assert "credibility_perianal_fistula.html" in capsys.readouterr().out


def test_an_unknown_disease_is_an_error_naming_the_field(tmp_path, capsys):
    assert main(["credibility", "knee_oa", "--out", str(tmp_path / "x")]) == 2
    assert "field 'DISEASE'" in capsys.readouterr().err and not (tmp_path / "x").exists()
