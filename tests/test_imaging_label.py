"""What imaging sees (BIOLOGY.md B04): a cell label follows the cells, then the debris into phagocytes, and stays.

The label states are generated from the cell model (never hand-copied); they add up to the injected activity at
every time; a label leaves the model without one unchanged.
"""

import numpy as np
import pytest
import sympy as sp

from conftest import example, frac, simulated
from mscsim.errors import InputError
from mscsim.io.scenario import scenario_from_dict
from mscsim.model.compile import model_key
from mscsim.model.core import Model
from mscsim.model.labels import (LABEL_MECHANISM, available_labels, follow_rate, label_state, phagocyte_state,
                                 with_label)
from mscsim.simulation import KINETICS, check_conservation, resolve_setup

IMAGING = "human_iv_111in_imaging"


def _at(ds, name, t_h):
    return float(ds[name].values[0, int(np.argmin(abs(ds["time"].values - t_h)))])


def test_B04_label_stays_in_the_organ_after_the_cells_die():
    ds = simulated(example(IMAGING))
    # at day 3 the viable cells in the liver are a vanishing share of the dose, but the liver holds the label
    viable_liver = 100.0 * frac(ds, ["msc_liver"], 72.0)
    assert _at(ds, "imaging_liver", 72.0) > 10.0 * max(viable_liver, 1e-6)
    assert _at(ds, "imaging_liver", 72.0) > 20.0
    # and it is still there at day 10 (decay-corrected), though the cells' material is 'cleared' in the cell model
    assert frac(ds, ["viable_total"], 240.0) < 1e-3
    assert frac(ds, ["cleared"], 240.0) > 0.5
    assert _at(ds, "imaging_liver", 240.0) + _at(ds, "imaging_spleen", 240.0) > 50.0
    # the lung holds the label first (the viable cells trapped at first pass), then gives it up
    assert _at(ds, "imaging_lung", 2.0) > _at(ds, "imaging_liver", 2.0)
    assert _at(ds, "imaging_lung", 240.0) < 0.1 * _at(ds, "imaging_lung", 2.0)


def test_B04_lung_and_marrow_phagocytes_keep_label_for_days():
    """The lung's own phagocytes degrade a share of the lung debris and the marrow's macrophages take a share of the
    carried debris, so a human scan still sees label in the lungs and the marrow at day 10 (Gholamrezanezhad 2011:
    2.0-5.4 % in the lungs), held by phagocytes once the cells are gone."""
    ds = simulated(example(IMAGING))
    lung_phagocytes = 100.0 * float(ds[phagocyte_state("lung")].values[0, int(np.argmin(abs(ds["time"].values - 240.0)))])
    assert 1.0 < _at(ds, "imaging_lung", 240.0) < 10.0
    assert lung_phagocytes > 0.8 * _at(ds, "imaging_lung", 240.0)  # the lung's label is in its phagocytes by then
    marrow = [_at(ds, "imaging_bone_marrow_other", t) for t in (2.0, 24.0, 240.0)]
    assert marrow[0] < marrow[1] and marrow[2] > 5.0  # label reaches the marrow with the debris, and stays
    # the liver still takes most of the carried debris (normal human physiology, Forstrom 1995)
    assert _at(ds, "imaging_liver", 240.0) > _at(ds, "imaging_spleen", 240.0) > 0.0


def test_B04_label_mass_balance_every_time():
    ds = simulated(example(IMAGING))
    organs = [v for v in ds.data_vars if v.startswith("imaging_") and not v.endswith("_not_decay_corrected")]
    assert {"imaging_lung", "imaging_liver", "imaging_spleen", "imaging_bone_marrow_other", "imaging_blood",
            "imaging_lesion", "imaging_excreted"} <= set(organs)
    total = sum(ds[v].values for v in organs)  # % of injected activity, decay-corrected
    after = ds["time"].values >= 0.5  # the 30-minute infusion has ended
    np.testing.assert_allclose(total[:, after], 100.0, rtol=1e-9)
    labels = [n for n in ds.data_vars if n.startswith("label_")]
    raw = sum(ds[n].values for n in labels)
    given = ds["administered"].values / ds["dose_cells"].values[:, None]  # administrations so far
    np.testing.assert_allclose(raw, given, rtol=1e-9, atol=1e-12)


def test_B04_label_mass_balance_is_checked_after_every_solve():
    setup = resolve_setup(scenario_from_dict(example(IMAGING, duration_days=1)))
    prob = setup.problem()
    states = np.zeros((1, len(prob.t_eval), prob.model.n_states))
    cells = prob.model.cell_mask
    states[:, :, cells] = prob.administered()[:, :, None] / cells.sum()  # the cells balance
    with pytest.raises(Exception, match="label mass balance"):
        check_conservation(prob, states)  # but no label anywhere


def test_B04_decay_correction():
    ds = simulated(example(IMAGING))
    t = ds["time"].values
    half = ds.attrs["label_half_life_h"]
    assert half == pytest.approx(2.8047 * 24.0)
    for organ in ("liver", "lung", "spleen"):
        corrected, counted = ds[f"imaging_{organ}"].values[0], ds[f"imaging_{organ}_not_decay_corrected"].values[0]
        np.testing.assert_allclose(counted, corrected * np.exp(-np.log(2) * t / half), rtol=1e-12)
    # one half-life after the injection a camera counts half the (decay-corrected) activity
    run = simulated(example(IMAGING, outputs={"times_hours": [1.0, half, 240.0]}))
    assert _at(run, "imaging_liver_not_decay_corrected", half) == pytest.approx(
        0.5 * _at(run, "imaging_liver", half), rel=1e-12)
    # decay runs from the injection, also when it is not at time 0
    late = simulated(example(IMAGING, regimen={"times_days": [1.0]}, outputs={"times_hours": [24.0 + half, 240.0]}))
    assert _at(late, "imaging_liver_not_decay_corrected", 24.0 + half) == pytest.approx(
        0.5 * _at(late, "imaging_liver", 24.0 + half), rel=1e-12)


def test_B04_label_states_are_generated_from_the_cell_processes():
    model = Model.compose(list(KINETICS))
    labelled = with_label(model, "111In-oxine")
    mech = next(m for m in labelled.mechanisms if m.name == LABEL_MECHANISM)
    cell = {s.name: s for s in model.states}
    procs = {p.name: p for p in mech.processes}
    for p in model.processes:
        if p.source and p.target and cell[p.source].kind in ("viable", "debris"):
            follow = procs[f"label_{p.name}"]
            assert follow.source == label_state(p.source)
            to_cleared = cell[p.target].kind == "cleared"
            assert follow.target == (phagocyte_state(cell[p.source].compartment) if to_cleared
                                     else label_state(p.target))
    # first order: the cell state cancels when the cell rate is linear in it
    assert sp.sympify(procs["label_death_lung"].rate) == sp.sympify("k_death_lung*m_death*label_msc_lung")
    # every viable and debris state carries label; nothing labels the 'cleared' sink
    assert {label_state(n) for n, s in cell.items() if s.kind in ("viable", "debris")} <= {s.name for s in mech.states}
    assert label_state("cleared") not in {s.name for s in mech.states}


def test_B04_nonlinear_cell_rate_is_guarded_at_zero_cells():
    syms = {n: sp.Symbol(n, real=True) for n in ("A", "k", "K", "label_A")}
    A, k, K, L = (syms[n] for n in ("A", "k", "K", "label_A"))
    # saturating: the per-cell rate k/(K+A) is finite at A = 0, so the label flux is k/(K+A) * label_A
    sat = sp.sympify(follow_rate("k * A / (K + A)", "A", syms), locals=syms)
    assert sp.simplify(sat - k / (K + A) * L) == 0
    # singular per cell at A = 0 (k sqrt(A)): guarded, so an empty cell state moves no label
    root = sp.sympify(follow_rate("k * sqrt(A)", "A", syms), locals=syms)
    assert root.has(sp.Piecewise)
    assert root.subs({A: 0, L: 1.0, k: 1}) == 0
    assert float(root.subs({A: 4.0, L: 0.5, k: 1})) == pytest.approx(2.0 * 0.5 / 4.0)


def test_without_a_label_the_model_is_unchanged():
    model = Model.compose(list(KINETICS))
    before = model_key(model)
    with_label(model, "111In-oxine")
    assert model_key(Model.compose(list(KINETICS))) == before
    setup = resolve_setup(scenario_from_dict(example("human_iv_2e6_per_kg")))
    assert not any(n.startswith("label_") for n in setup.model.state_names)
    assert not setup.model.label_mask.any()
    assert setup.model.key == model_key(model)


def test_unknown_label_is_refused_naming_field_value_and_labels():
    with pytest.raises(InputError) as err:
        scenario_from_dict(example(IMAGING, label="18F-FDG-typo"), file="scan.yaml")
    text = str(err.value)
    for part in ("scan.yaml", "label", "18F-FDG-typo", "111In-oxine"):
        assert part in text
    assert set(available_labels()) >= {"111In-oxine", "99mTc-HMPAO"}


def test_label_needs_a_single_cell_dose():
    with pytest.raises(InputError, match="single administration"):
        scenario_from_dict(example(IMAGING, regimen={"times_days": [0, 7]}))


def test_cli_label_writes_the_imaging_table_and_figure(tmp_path, capsys):
    import pandas as pd

    from mscsim.cli import main

    out = tmp_path / "run"
    assert main(["simulate", "human_iv_2e6_per_kg", "--label", "111In-oxine", "--out", str(out)]) == 0
    assert "111In-oxine (% of injected activity, decay-corrected)" in capsys.readouterr().out
    table = pd.read_csv(out / "imaging.csv")
    for organ in ("lung", "liver", "spleen", "bone marrow and other tissue", "blood (cells and free label)",
                  "lesion (target site)", "excreted or elsewhere"):
        for how in ("decay-corrected", "not decay-corrected"):
            assert f"{organ} (% injected activity, {how})" in table.columns
    corrected = table[[c for c in table.columns if c.endswith(", decay-corrected)")]].sum(axis=1)
    after = table["time_h"] >= 0.5  # after the 30-minute infusion, every injected becquerel is somewhere
    assert np.allclose(corrected[after], 100.0, rtol=1e-9)
    assert (out / "imaging.png").exists() and (out / "imaging.svg").exists()
    summary = pd.read_csv(out / "summary.csv")  # key times, as parameter bands summarise them
    i24 = int(np.argmin(abs(table["time_h"].values - 24.0)))
    assert summary["imaging_liver_pct_24h"][0] == pytest.approx(
        table["liver (% injected activity, decay-corrected)"][i24], rel=1e-9)
    manifest = (out / "manifest.json").read_text()
    assert "imaging.csv" in manifest
    for key in ("gildehaus2011", "nndc_nudat"):  # the label's sources are cited with the run
        assert key in manifest


def test_cli_unknown_label_exits_2_naming_the_labels(tmp_path, capsys):
    from mscsim.cli import main

    assert main(["simulate", "human_iv_2e6_per_kg", "--label", "18F-FDG", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--label" in err and "18F-FDG" in err and "111In-oxine" in err and "human_iv_2e6_per_kg" in err


def test_B04_human_imaging_targets_pass_or_say_why_not():
    """The human 111In-oxine targets (Gholamrezanezhad 2011) are reported beside the model's label shares; a target
    the model misses names the gap ('known_gap') rather than being dropped or loosened."""
    from mscsim.analysis.validation import format_table, load_targets, run_validation

    targets = [t for t in load_targets() if t["_file"] == "imaging.yaml"]
    assert {t["measure"]["organ"] for t in targets} >= {"lung", "liver", "spleen"}
    results = run_validation(targets)
    table = format_table(results)
    for t, r in zip(targets, results):
        assert t["id"] in table
        assert isinstance(r.simulated, float) and 0.0 <= r.simulated <= 100.0
        lo, hi = t["criterion"]["between"]
        assert (t["observed"]["low"], t["observed"]["high"]) == (lo, hi)  # the paper's spread is the tolerance
        assert r.passed or t.get("known_gap"), f"{r.id} fails without a stated gap: {r.simulated} vs [{lo}, {hi}]"
    # what the model does get right: little label in the liver before the cells die
    assert next(r for r in results if r.id == "IMG1-liver-post-infusion").passed
    assert all(r.as_dict().get("known_gap") for r in results if not r.passed)


def test_B04_99mTc_HMPAO_counts_fall_with_its_six_hour_half_life():
    ds = simulated(example(IMAGING, label="99mTc-HMPAO", duration_days=2, outputs={"times_hours": [2.0, 24.0, 48.0]}))
    assert ds.attrs["label_half_life_h"] == pytest.approx(6.0067)
    organs = [v for v in ds.data_vars if v.startswith("imaging_") and not v.endswith("_not_decay_corrected")]
    for t_h in (24.0, 48.0):
        i = int(np.argmin(abs(ds["time"].values - t_h)))
        counted = sum(float(ds[f"{v}_not_decay_corrected"].values[0, i]) for v in organs)
        assert counted == pytest.approx(100.0 * 0.5 ** (t_h / 6.0067), rel=1e-8)  # 6.3 % of the activity at 1 d
    # it leaks from viable cells faster than 111In-oxine (a cited-or-assumed parameter, not a code constant)
    from mscsim.model.parameters import load_parameter_sets

    pset = load_parameter_sets(["labels"])
    assert pset["Tc99m_HMPAO_cell_efflux"].value > pset["In111_oxine_cell_efflux"].value


@pytest.mark.slow  # compiles the GVHD model with label states, ~1 min: benchmarks/slow_checks.py
def test_B04_label_with_the_tissue_model():
    """A disease run (the tissue model, started from the untreated chronic state) carries a label too: the label
    states are held at zero while the chronic state is found, balance after the dose, and get no untreated copy."""
    ds = simulated(example("acute_gvhd_iv_2e6_per_kg", label="111In-oxine", duration_days=2,
                           regimen={"times_days": [0]}))
    organs = [v for v in ds.data_vars if v.startswith("imaging_") and not v.endswith("_not_decay_corrected")]
    total = sum(ds[v].values for v in organs)
    after = ds["time"].values >= 0.5
    np.testing.assert_allclose(total[:, after], 100.0, rtol=1e-9)
    assert np.all(total[:, 0] == 0.0)  # no label before the dose, whatever the chronic disease state
    assert not [v for v in ds.data_vars if v.startswith(("label_", "imaging_")) and v.endswith("_untreated")]
    assert _at(ds, "imaging_liver", 24.0) > 100.0 * frac(ds, ["msc_liver", "debris_liver"], 24.0)
