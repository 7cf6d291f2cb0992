"""Bad scenarios: a clear error naming the field, the value and what is allowed; exit 2; no output left."""

import pytest
import yaml

from conftest import example
from mscsim import InputError, scenario_from_dict
from mscsim.cli import main
from mscsim.simulation import resolve_setup

BAD = [
    # (change, field named in the message, text that must appear)
    ({"regimen": {"route": "intravenus", "dose": {"cells": 1e6}}}, "regimen.route", "intravenous"),  # enum
    ({"product": {"viability": 1.5}}, "product.viability", "less than or equal to 1"),  # number range
    ({"regimen": {"route": "intravenous", "dose": {"cells": "many"}}}, "regimen.dose.cells", "valid number"),  # type
    ({"regimen": {"route": "intravenous", "dose": {"cells": 1e6, "cells_per_kg": 1e6}}}, "regimen.dose",
     "exactly one"),  # exclusive fields
    ({"regimen": {"route": "intravenous", "dose": {"cells": 1e6}, "times_days": [3, 1]}}, "regimen.times_days",
     "increasing"),  # list
    ({"duration_days": -1}, "duration_days", "at least one minute"),
    ({"species": "dog"}, "species", "'human', 'mouse' or 'rat'"),
    ({"product": {"sourse": "adipose"}}, "product.sourse", "known fields"),  # typo: unknown field
    ({"seed": 1.5}, "seed", "valid integer"),
    ({"mechanisms": {"engraftment": "sometimes"}}, "mechanisms.engraftment", "valid boolean"),
    ({"lesion": {"organ": "pancreas"}}, "lesion.organ", "'systemic', 'liver', 'kidney', 'lung', 'heart', 'gut' or "
     "'brain'"),  # an organ without a lesion site
    ({"lesion": {"organ": "liver"}, "regimen": {"route": "intravenous", "site": "systemic_lesion",
                                                  "dose": {"cells": 1e6}}}, "regimen.site", "liver_lesion"),
]


@pytest.mark.parametrize("change,field,allowed", BAD)
def test_bad_scenario_names_field_value_and_allowed(change, field, allowed):
    data = example("mouse_iv_eggenhofer2012")
    for k, v in change.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) and k != "regimen" else v
    with pytest.raises(InputError) as exc:
        scenario_from_dict(data, file="bad.yaml")
    msg = str(exc.value)
    assert f"field '{field}'" in msg and allowed in msg and "bad.yaml" in msg


def test_organ_lesion_with_a_site_route_is_refused():
    # a route with a site of its own (intra-articular: the knee) does not inject into an organ lesion: the routes
    # that reach a liver lesion are named
    data = example("knee_ia_5e7_ultrasound", lesion={"organ": "liver"})
    with pytest.raises(InputError, match="field 'regimen.route'.*'intra_articular'.*'intravenous', "
                                         "'intralesional', 'intra_arterial'"):
        scenario_from_dict(data, file="bad.yaml")


ORGAN_ROUTE_BAD = [
    # (route, lesion, field named, text that must appear): an organ route needs an organ it reaches
    ("intralesional", {"organ": "systemic"}, "lesion.organ", "['heart', 'liver', 'kidney', 'brain']"),
    ("intra_arterial", {"organ": "lung"}, "lesion.organ", "(for a 'lung' lesion: ['intravenous'])"),
    ("intra_arterial", {"organ": "gut"}, "lesion.organ", "['heart', 'liver', 'kidney', 'brain']"),
    ("intralesional", None, "lesion", "lesion: {organ: ...}"),
]


@pytest.mark.parametrize("route,lesion,field,allowed", ORGAN_ROUTE_BAD)
def test_B05_an_organ_route_into_an_organ_it_does_not_reach_is_refused(route, lesion, field, allowed):
    data = example("human_intramyocardial_heart_lesion", lesion=lesion)
    data["regimen"] = {"route": route, "dose": {"cells": 1e8},
                       **({"guidance": "fluoroscopy"} if route == "intralesional" else {})}
    with pytest.raises(InputError) as exc:
        scenario_from_dict(data, file="bad.yaml")
    msg = str(exc.value)
    assert f"field '{field}'" in msg and allowed in msg and "bad.yaml" in msg, msg
    assert route in msg


def test_B06_intralesional_injection_needs_guidance_with_accuracy_data_in_its_organ():
    data = example("human_intramyocardial_heart_lesion", regimen={"route": "intralesional", "guidance": "ultrasound",
                                                                  "dose": {"cells": 1e8}})
    with pytest.raises(InputError, match="field 'regimen.guidance'.*'ultrasound'.*heart_lesion.*'fluoroscopy', 'direct_vision'"):
        resolve_setup(scenario_from_dict(data))


def test_cli_intra_arterial_into_a_lung_lesion_exits_2_naming_file_field_value_and_choices(tmp_path, capsys):
    path = tmp_path / "lung_ia.yaml"
    data = example("human_intramyocardial_heart_lesion", lesion={"organ": "lung"})
    data["regimen"] = {"route": "intra_arterial", "dose": {"cells": 1e8}}
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "lesion.organ" in err and "'lung'" in err and "'heart'" in err
    assert not out.exists()


def test_local_injection_into_a_blood_borne_lesion_site_is_refused_naming_the_site():
    data = example("knee_ia_5e7_ultrasound", regimen={"route": "perilesional", "site": "liver_lesion",
                                                      "guidance": "ultrasound", "dose": {"cells": 1e7}})
    # an organ lesion's site is reached through lesion.organ, by the organ routes (with their retention), not by
    # a local route's own site
    with pytest.raises(InputError, match="field 'regimen.site'.*'liver_lesion'.*lesion: {organ: liver}.*"
                                         "'intravenous', 'intralesional', 'intra_arterial'"):
        resolve_setup(scenario_from_dict(data))


def test_cli_unknown_lesion_organ_exits_2_naming_file_field_value_and_choices(tmp_path, capsys):
    path = tmp_path / "organ.yaml"
    path.write_text(yaml.safe_dump(example("human_iv_liver_lesion", lesion={"organ": "pancreas"})))
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "lesion.organ" in err and "'pancreas'" in err and "'kidney'" in err
    assert not out.exists()


def test_missing_required_field():
    data = example("mouse_iv_eggenhofer2012")
    del data["regimen"]
    with pytest.raises(InputError, match="field 'regimen'.*Field required"):
        scenario_from_dict(data)


def test_guidance_without_accuracy_data_at_the_site():
    data = example("knee_ia_5e7_ultrasound", regimen={"route": "intradiscal", "guidance": "direct_vision",
                                                      "dose": {"cells": 1e7}})
    with pytest.raises(InputError, match="regimen.guidance.*fluoroscopy"):
        resolve_setup(scenario_from_dict(data))


def test_unknown_parameter_override():
    data = example("mouse_iv_eggenhofer2012", parameters={"k_death_lungs": 0.1})
    with pytest.raises(InputError, match="field 'parameters'.*k_death_lungs"):
        resolve_setup(scenario_from_dict(data))


def test_cli_bad_scenario_exits_nonzero_and_leaves_nothing(tmp_path, capsys):
    data = example("mouse_iv_eggenhofer2012", product={"viability": 0})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "product.viability" in err and "greater than 0" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


def test_cli_refuses_to_overwrite_a_folder_that_is_not_an_mscsim_output(tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["simulate", "mouse_iv_eggenhofer2012", "--out", str(out)]) == 2
    assert (out / "notes.txt").read_text() == "keep me"
    assert "refusing to overwrite" in capsys.readouterr().err
