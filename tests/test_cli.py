"""The command line as a new user runs it: presets, simulate, citations, validate."""

import json

import xarray as xr

from mscsim import __version__
from mscsim.cli import main


def test_presets_lists_the_required_examples(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("mouse_iv_eggenhofer2012", "human_iv_2e6_per_kg", "knee_ia_5e7_ultrasound", "knee_ia_5e7_blind",
                 "lumbar_disc_intradiscal_25e6", "tendinopathy_intratendinous_1e7", "dfu_topical_sheet_weekly",
                 "lupus_nephritis_iv_ucmsc_2e8"):
        assert name in out


def test_simulate_writes_results_summary_plot_and_manifest(tmp_path, capsys, examples_dir):
    out = tmp_path / "run"
    assert main(["simulate", str(examples_dir / "human_iv_2e6_per_kg.yaml"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cell_fate.pdf", "cell_fate.png", "cell_fate.svg", "manifest.json",
                                                     "results.nc", "summary.csv"]
    ds = xr.open_dataset(out / "results.nc")
    assert ds["msc_lung"].dims == ("patient", "time")
    assert ds["msc_lung"].attrs["units"] == "cell" and ds["time"].attrs["units"] == "h"
    man = json.loads((out / "manifest.json").read_text())
    assert man["mscsim_version"] == __version__ and man["seed"] == 20261122
    assert man["scenario"]["regimen"]["dose"]["cells_per_kg"] == 2e6
    assert "eggenhofer2012" in man["citations"]
    assert (out / "cell_fate.png").read_bytes()[:4] == b"\x89PNG" and (out / "cell_fate.pdf").read_bytes()[:4] == b"%PDF"
    assert "<svg" in (out / "cell_fate.svg").read_text()[:1000]
    # running again replaces the earlier output
    assert main(["simulate", "human_iv_2e6_per_kg", "--out", str(out)]) == 0


def test_citations_lists_sources_with_doi(capsys, examples_dir):
    assert main(["citations", str(examples_dir / "knee_ia_5e7_blind.yaml")]) == 0
    out = capsys.readouterr().out
    assert "[berkoff2012]" in out and "doi:10.2147/CIA.S29265" in out and "[li2016]" in out


def test_validate_json_has_the_documented_keys(capsys, monkeypatch, validation_results):
    from mscsim.analysis import validation

    # the targets are run once per session (conftest.validation_results; test_validation.py checks each one):
    # the command prints those same results, so they are not computed a second time here
    monkeypatch.setattr(validation, "run_validation", lambda targets=None, progress=None: validation_results)
    assert main(["validate", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all({"id", "observed", "simulated", "tolerance", "pass"} <= set(r) for r in rows)
    assert [r["id"] for r in rows] == [r.id for r in validation_results]


def test_a_what_if_override_is_cited_as_such(tmp_path, capsys, examples_dir):
    import yaml

    data = yaml.safe_load((examples_dir / "mouse_iv_eggenhofer2012.yaml").read_text())
    data["parameters"] = {"f_trap": 0.9}
    path = tmp_path / "whatif.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["citations", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[scenario_override]" in out
    assert main(["simulate", str(path), "--out", str(tmp_path / "o")]) == 0
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert "scenario_override" in man["citations"] and man["scenario"]["parameters"] == {"f_trap": 0.9}


def test_export_sbml_writes_a_level3_file(tmp_path, capsys):
    out = tmp_path / "model.xml"
    assert main(["export-sbml", "knee_ia_5e7_blind", "-o", str(out)]) == 0
    text = out.read_text()
    assert 'level="3"' in text and "<listOfReactions>" in text and "10.2147/CIA.S29265" in text
    from mscsim.api import scenario_path
    from mscsim.io.scenario import load_scenario
    from mscsim.simulation import resolve_setup

    processes = len(resolve_setup(load_scenario(scenario_path("knee_ia_5e7_blind"))).model.process_names)
    assert f"{processes} process reactions" in capsys.readouterr().out and text.count("<reaction ") >= processes


def test_parameters_lists_the_run_s_parameters(capsys, tmp_path):
    assert main(["parameters", "knee_ia_5e7_blind"]) == 0
    out = capsys.readouterr().out
    for column in ("name", "value", "units", "bounds", "between_patient", "uncertainty", "grade", "source"):
        assert column in out.splitlines()[1]
    assert "f_trap" in out and "logit-normal" in out and "evidence grades:" in out
    assert main(["parameters", "knee_ia_5e7_blind", "--grep", "placement", "--csv", str(tmp_path / "p.csv")]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) and table["name"].str.contains("placement").all()
    assert main(["parameters", "knee_ia_5e7_blnd"]) == 2
    assert "did you mean 'knee_ia_5e7_blind'" in capsys.readouterr().err


def test_sweep_writes_curve_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["sweep", "human_iv_2e6_per_kg", "--vary", "regimen.dose.cells_per_kg=1e5:1e7:log:3", "--output",
            "msc_lung_day1", "--patients", "3", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "viable MSCs, lung, day 1 (cells, median of 3 patients):" in printed
    assert "cells per kg per dose 100,000:" in printed and "90% of patients" in printed
    import pandas as pd

    table = pd.read_csv(out / "sweep.csv")
    assert list(table["regimen.dose.cells_per_kg"]) == [1e5, 1e6, 1e7] and (table["n"] == 3).all()
    man = json.loads((out / "manifest.json").read_text())
    assert man["seed"] == 20261122 and man["mscsim_version"] == __version__ and man["patients_per_point"] == 3
    for bad, message in ((["--vary", "regimen.dose.cells_per_kg=1e5:1e7:log"], "--vary"),
                         (["--vary", "regimen.dose.cels=1,2"], "did you mean 'regimen.dose.cells'"),
                         (["--vary", "regimen.dose.cells_per_kg=-1,2"], "greater than 0")):
        assert main(["sweep", "human_iv_2e6_per_kg", *bad, "--output", "msc_lung_day1", "--out",
                     str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
    assert main(["sweep", "human_iv_2e6_per_kg", "--vary", "regimen.dose.cells_per_kg=1e6", "--output", "lung",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--output" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_trial_prints_which_number_is_which(trial_reference):
    out = trial_reference.stdout
    assert "this one virtual trial (Saline: 3 patients, 1e8 AD-MSC: 3 patients), difference against control:" in out
    assert "primary endpoint: WOMAC total (points of 96) at day 180" in out
