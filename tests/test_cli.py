"""The command line as a new user runs it: presets, simulate, citations, validate."""

import json

import xarray as xr

from mscsim import __version__
from mscsim.cli import main


def test_presets_lists_the_required_examples(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("mouse_iv_eggenhofer2012", "human_iv_2e6_per_kg", "knee_ia_5e7_ultrasound", "knee_ia_5e7_blind"):
        assert name in out


def test_simulate_writes_results_summary_plot_and_manifest(tmp_path, capsys, examples_dir):
    out = tmp_path / "run"
    assert main(["simulate", str(examples_dir / "human_iv_2e6_per_kg.yaml"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cell_fate.png", "manifest.json", "results.nc", "summary.csv"]
    ds = xr.open_dataset(out / "results.nc")
    assert ds["msc_lung"].dims == ("patient", "time")
    assert ds["msc_lung"].attrs["units"] == "cell" and ds["time"].attrs["units"] == "h"
    man = json.loads((out / "manifest.json").read_text())
    assert man["mscsim_version"] == __version__ and man["seed"] == 20261122
    assert man["scenario"]["regimen"]["dose"]["cells_per_kg"] == 2e6
    assert "eggenhofer2012" in man["citations"]
    assert (out / "cell_fate.png").read_bytes()[:4] == b"\x89PNG"
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
    assert "28 process reactions" in capsys.readouterr().out
