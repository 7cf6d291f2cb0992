"""The `mscsim qc` command, its report files, the bundled specs and the example lots."""

from __future__ import annotations

import json
import re

import yaml
from qc_helpers import criterion, write_lot

from mscsim.analysis.validation import EXAMPLES
from mscsim.cli import main
from mscsim.model.references import bibliography
from mscsim.qc import evaluate_lot, load_lot, load_spec, presets
from mscsim.qc.spec import check_citations


def test_qc_command_writes_a_self_contained_report_and_exits_0_when_not_released(tmp_path, capsys):
    lot = write_lot(tmp_path / "lot", fractions={"CD73": 0.90}, sterility="positive")
    out = tmp_path / "report"
    assert main(["qc", str(lot), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NOT RELEASED" in printed and "CD73 positive" in printed and "Sterility" in printed
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "qc_report.html", "qc_results.json"]
    page = (out / "qc_report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 2 + 8  # one gate figure per tube, one histogram per channel
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "NOT RELEASED" in page and "dominici2006" in page
    data = json.loads((out / "qc_results.json").read_text())
    assert data["released"] is False and data["spec"]["name"] == "clinical-release"
    assert data["lot_file"] == str(lot) and data["mscsim_version"]
    assert {c["id"] for c in data["criteria"] if c["status"] == "fail"} == {"CD73", "sterility"}
    tube = data["flow"]["tubes"][0]
    assert tube["compensation"].endswith("$SPILLOVER") and tube["gates"]["singlet"]["kind"] == "ratio"
    assert set(data["product_fields"]) == {"source", "passage", "population_doublings", "viability",
                                           "cryo_state", "lot_id"}


def test_qc_json_on_stdout_and_spec_option(tmp_path, capsys):
    lot = write_lot(tmp_path / "lot", sterility="positive")
    assert main(["qc", str(lot), "--out", str(tmp_path / "r"), "--json", "--spec", "ISCT-2006"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["released"] is True and data["spec"]["name"] == "ISCT-2006"  # identity only: no sterility test
    assert all(c["source"] == ["dominici2006"] for c in data["criteria"])


def test_every_bundled_spec_loads_and_cites_every_limit():
    assert {"ISCT-2006", "clinical-release", "clinical-release-hla-dr-informative"} <= set(presets())
    bib = bibliography()
    for name in presets():
        spec = load_spec(name)
        check_citations(spec)
        for c in spec.criteria:
            ref = bib[c.source[0]]
            assert ref.year and ref.title and (ref.doi or ref.url or ref.journal)
    assert bib["dominici2006"].doi == "10.1080/14653240600855905"


def test_clinical_release_adds_safety_to_isct():
    isct = {c.id for c in load_spec("ISCT-2006").criteria}
    clinical = {c.id: c for c in load_spec("clinical-release").criteria}
    assert isct < set(clinical)
    assert (clinical["endotoxin"].limit, clinical["endotoxin"].unit) == (5, "EU/kg")
    assert (clinical["viability"].op, clinical["viability"].limit) == (">=", 70)
    assert clinical["sterility"].accept == ("negative",) and clinical["mycoplasma"].accept == ("negative",)


def test_a_users_own_spec_file_with_a_potency_criterion(tmp_path):
    spec = tmp_path / "site_spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "site-release", "extends": "clinical-release", "criteria": [
            {"id": "potency", "label": "T-cell suppression", "measure": "t_cell_suppression", "op": ">=",
             "limit": 20, "unit": "%", "source": ["site SOP QC-017"]},
            {"id": "CD105", "limit": 90, "source": ["site SOP QC-017"]}]}))
    lot = load_lot(write_lot(tmp_path / "lot", fractions={"CD105": 0.93},
                             potency={"t_cell_suppression_pct": 15, "assay": "PHA PBMC"}))
    result = evaluate_lot(lot, str(spec))
    assert result.spec.name == "site-release"
    assert criterion(result, "CD105").status == "pass"  # the site's relaxed limit
    potency = criterion(result, "potency")
    assert potency.status == "fail" and potency.measured == 15 and potency.source == ("site SOP QC-017",)
    assert not result.released


def test_lot_names_its_own_spec(tmp_path):
    lot = load_lot(write_lot(tmp_path / "lot", spec="ISCT-2006", sterility="positive"))
    assert evaluate_lot(lot).spec_name == "ISCT-2006"


def test_example_lots():
    passing = evaluate_lot(load_lot(EXAMPLES / "lot_passing.yaml"))
    assert passing.released, passing.failed
    failing = evaluate_lot(load_lot(EXAMPLES / "lot_failing.yaml"))
    assert not failing.released
    assert {c.id for c in failing.criteria if c.status != "pass"} == {"CD105", "endotoxin"}
    for name in ("lot_passing", "lot_failing"):
        record = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        for tube in record["flow"]["tubes"]:
            assert not tube["file"].startswith("/")  # relative to the lot file
            assert (EXAMPLES / tube["file"]).stat().st_size < 120_000


def test_example_fcs_files_are_what_the_script_makes(tmp_path):
    """The committed example FCS files are reproduced byte for byte by the generator (fixed seeds)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_example_fcs", EXAMPLES / "lots" / "make_example_fcs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.make(tmp_path)
    assert len(made) == 8
    for path in made:
        assert path.read_bytes() == (EXAMPLES / "lots" / path.name).read_bytes(), path.name
