"""The in vitro co-culture preset (issue 3): MSCs with stimulated PBMC or macrophages in a well, run with the
model's own tissue mechanisms. Behaviours B09-B11 in a dish; the numbers against published assays are the
validation targets (data/validation/tissue.yaml, checked in test_validation.py)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mscsim import load_coculture, run_coculture
from mscsim.analysis.validation import EXAMPLES
from mscsim.cli import main
from mscsim.coculture import coculture_from_dict, msc_alone_readout
from mscsim.coculture.well import WELL_MECHANISMS, well_model
from mscsim.errors import InputError
from mscsim.model.references import bibliography
from mscsim.simulation import TISSUE


@pytest.fixture(scope="module")
def pbmc():
    return run_coculture(load_coculture(EXAMPLES / "coculture_pbmc.yaml"))


@pytest.fixture(scope="module")
def macrophage():
    return run_coculture(load_coculture(EXAMPLES / "coculture_macrophage.yaml"))


def preset(name="coculture_pbmc", **changes):
    data = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    data.update(changes)
    return data


def test_the_well_runs_the_patient_tissue_mechanisms():
    model = well_model()
    tissue_in_well = [m for m in WELL_MECHANISMS if m != "cell_compartments"]
    assert set(tissue_in_well) <= set(TISSUE)  # the same mechanism files as in patients, not a toy model
    assert set(model.model.enabled) == set(WELL_MECHANISMS)
    assert not np.any(model.stoichiometry[model.cell_mask])  # MSCs neither move nor die in the well


def test_B11_coculture_suppression_falls_with_ratio(pbmc):
    table = pbmc.table()
    plain = table[(~table["prelicensed"]) & (table["msc_per_well"] > 0)].sort_values("msc_per_well")
    assert np.all(np.diff(plain["inhibition_pct"].to_numpy()) > 0)  # more MSCs per T cell, more suppression
    assert np.all(np.diff(plain["kyn_umol_per_l"].to_numpy()) > 0)
    assert np.all(np.diff(plain["pge2_ng_per_ml"].to_numpy()) > 0)


def test_B11_balance_not_blanket_suppression(pbmc):
    """Few MSCs leave a healthy T-cell response nearly intact, and arrested T cells are not killed (G1 arrest)."""
    low = pbmc.value("inhibition", pbmc.condition("1:100"))
    high = pbmc.value("inhibition", pbmc.condition("1:1"))
    assert low < 0.1 * high
    p = pbmc.pset
    background = p["teff_0"].value * np.exp(-p["k_t_out"].value * pbmc.times_h[-1])
    for c in pbmc.conditions:
        assert pbmc.value("lic_local", c) >= 0.0
        assert float(pbmc.states[pbmc.conditions.index(c), -1, pbmc.model.index("teff")]) >= background


def test_B09_the_well_without_mscs_has_no_msc_mediators(pbmc):
    for readout in ("kyn", "pge2"):
        assert pbmc.value(readout, pbmc.control) == 0.0
    assert pbmc.value("inhibition", pbmc.control) == 0.0


def test_B10_prelicensing_raises_kynurenine_and_suppression(pbmc):
    for ratio in pbmc.spec.ratios:
        plain, licensed = pbmc.condition(ratio), pbmc.condition(ratio, prelicensed=True)
        assert pbmc.value("kyn", licensed) > pbmc.value("kyn", plain)
        assert pbmc.value("inhibition", licensed) > pbmc.value("inhibition", plain)


def test_B10_ido_rises_monotonically_and_saturates_with_ifng(pbmc):
    doses = np.array([0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0])
    kyn = msc_alone_readout(pbmc.spec, "kyn", 2.0e4, doses, 48.0)
    rise = kyn[-1] - kyn[0]
    assert np.all(np.diff(kyn) >= -1e-6 * rise)  # monotone
    assert np.all(np.diff(kyn[:5]) > 0.01 * rise)  # rising where IFN-gamma is near its half-effect
    assert (kyn[-1] - kyn[-2]) < 0.05 * rise  # saturated at the doses used for pre-licensing
    b_ido = pbmc.pset["b_ido"].value
    assert kyn[0] < 2 * b_ido * kyn[-1]  # IDO activity is (nearly) absent without IFN-gamma (Meisel 2004)


def test_B10_licensing_takes_time(pbmc):
    """IDO1 is near its maximum after about a day of IFN-gamma, not at once (licensing kinetics)."""
    lic = msc_alone_readout(pbmc.spec, "lic_local", 2.0e4, 50.0, [2.0, 6.0, 24.0, 48.0])
    assert lic[0] < 0.5 * lic[-1]
    assert lic[2] > 0.9 * lic[-1]


def test_B11_macrophages_shift_m1_to_m2_with_more_mscs(macrophage):
    table = macrophage.table().sort_values("msc_per_well")
    assert np.all(np.diff(table["m2_share"].to_numpy()) > 0)
    assert np.all(np.diff(table["il10_pg_per_ml"].to_numpy()) > 0)
    assert np.all(np.diff(table["tnf_pg_per_ml"].to_numpy()) < 0)


def test_cli_coculture_writes_table_plot_and_manifest(tmp_path, capsys):
    out = tmp_path / "cc"
    assert main(["coculture", "coculture_pbmc", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["coculture.csv", "coculture.png", "manifest.json"]
    table = pd.read_csv(out / "coculture.csv")
    assert {"ratio", "prelicensed", "inhibition_pct", "kyn_umol_per_l", "pge2_ng_per_ml"} <= set(table.columns)
    assert len(table) == 1 + 2 * 7  # control, 7 ratios without and with pre-licensing
    assert (out / "coculture.png").stat().st_size > 10_000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preset"]["name"] == "coculture_pbmc" and manifest["mscsim_version"]
    bib = bibliography()
    assert manifest["citations"] and all(k in bib for k in manifest["citations"])
    assert {"infant_msc2019", "scrt2023"} <= set(manifest["citations"])
    assert manifest["validation_targets_shown"]  # published points drawn on the plot
    assert "research tool" in capsys.readouterr().out


@pytest.mark.parametrize("change, field", [
    ({"well": {"volume_ml": -0.2, "responders_per_well": 1e5}}, "well.volume_ml"),
    ({"ratios": ["1:3", "one to ten"]}, "ratios"),
    ({"ratios": ["1:0"]}, "ratios"),
    ({"assay": "mlr"}, "assay"),
    ({"prelicensing": {"ifng_ng_per_ml": 50, "hour": 48}}, "prelicensing.hour"),
    ({"duration_days": 40}, "duration_days"),
])
def test_cli_bad_preset_exits_2_naming_the_field(tmp_path, capsys, change, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(preset(**change)))
    assert main(["coculture", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"field '{field}'" in err and "allowed" in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_unknown_model_parameter_in_a_preset_is_refused():
    with pytest.raises(InputError, match="K_kyn_Tx"):
        run_coculture(coculture_from_dict(preset(parameters={"K_kyn_Tx": 1.0})))
