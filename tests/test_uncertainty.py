"""Parameter uncertainty: every parameter has a distribution, priors are checked, draws are keyed like patients,
a parameter set at the nominal values is the nominal run, and bands shrink when a prior is narrowed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mscsim import scenario_from_dict, simulate
from mscsim.errors import DataError, InputError
from mscsim.model.parameters import DATA_DIR, load_parameter_file
from mscsim.uncertainty.bands import simulate_bands
from mscsim.uncertainty.evaluate import run_sets, scenario_space
from mscsim.uncertainty.priors import draw_unit, ppf

from conftest import example

FILES = sorted((DATA_DIR / "parameters").glob("*.yaml")) + sorted((DATA_DIR / "endpoints").glob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{Path(p).parent.name}/{Path(p).stem}")
def test_every_parameter_has_an_uncertainty_with_its_basis(path):
    for p in load_parameter_file(path).parameters.values():
        assert p.uncertainty is not None and p.uncertainty.basis.strip(), p.name
        if not p.uncertainty.is_fixed:  # a prior's quantiles span the value
            lo, hi = ppf(p, np.array([1e-9, 1 - 1e-9]))
            tol = 1e-6 * max(abs(p.value), hi - lo)
            assert lo - tol <= p.value <= hi + tol and lo < hi, p.name


def _write(tmp_path, record: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"parameters": {"k_test": record}}))
    return path


BASE = {"value": 0.5, "units": "1/h", "bounds": [0.0, 2.0], "grade": "assumed", "source": ["mscsim_scale"],
        "note": "test"}


def test_a_parameter_without_uncertainty_is_refused_naming_file_and_parameter(tmp_path):
    path = _write(tmp_path, BASE)
    with pytest.raises(DataError, match=r"params\.yaml: parameter 'k_test' has no 'uncertainty'"):
        load_parameter_file(path)


@pytest.mark.parametrize("prior, field, words", [
    ({"distribution": "uniform", "low": 1.0, "high": 0.2, "basis": "b"}, "uncertainty", "low (1.0) must be below high"),
    ({"distribution": "loguniform", "low": 0.6, "high": 1.0, "basis": "b"}, "uncertainty", "holds the value 0.5"),
    ({"distribution": "uniform", "low": 0.1, "high": 3.0, "basis": "b"}, "uncertainty", "inside the bounds"),
    ({"distribution": "lognormal", "basis": "b"}, "uncertainty", "needs ['cv']"),
    ({"distribution": "loguniform", "low": 0.1, "high": 1.0}, "uncertainty.basis", "where the spread comes from"),
])
def test_a_bad_prior_is_an_error_naming_the_field(tmp_path, prior, field, words):
    path = _write(tmp_path, {**BASE, "uncertainty": prior})
    with pytest.raises(DataError) as err:
        load_parameter_file(path)
    assert f"parameter 'k_test', field '{field}'" in str(err.value) and words in str(err.value)


def test_a_scenario_prior_with_lower_above_upper_is_an_input_error():
    data = example("human_iv_2e6_per_kg", uncertainty={
        "draws": 5, "priors": {"f_trap": {"distribution": "uniform", "low": 0.99, "high": 0.9, "basis": "b"}}})
    with pytest.raises(InputError) as err:
        scenario_from_dict(data, file="s.yaml")
    assert "uncertainty.priors.f_trap" in str(err.value) and "must be below high" in str(err.value)


def test_a_scenario_prior_for_an_unknown_parameter_is_an_input_error():
    sc = scenario_from_dict(example("human_iv_2e6_per_kg", uncertainty={
        "draws": 5, "priors": {"f_trapp": {"distribution": "uniform", "low": 0.9, "high": 0.99, "basis": "b"}}}))
    with pytest.raises(InputError, match="uncertainty.priors.f_trapp"):
        scenario_space(sc, sc.uncertainty.priors)


def test_draws_are_keyed_per_parameter_name_and_index():
    whole = draw_unit(7, ["a", "b", "c"], 0, 10)
    assert np.array_equal(draw_unit(7, ["a", "b", "c"], 3, 4), whole[3:7])  # any chunking
    assert np.array_equal(draw_unit(7, ["c", "a"], 0, 10), whole[:, [2, 0]])  # whatever else is uncertain
    assert not np.array_equal(draw_unit(8, ["a"], 0, 10), whole[:, [0]])


def _short_iv():
    return scenario_from_dict(example("human_iv_2e6_per_kg", duration_days=3,
                                      population={"size": 3, "variability": True}))


def test_a_parameter_set_at_the_nominal_values_is_the_nominal_run():
    sc = _short_iv()
    space = scenario_space(sc)
    run = run_sets(sc, space, np.vstack([space.nominal(), space.nominal()]))
    nominal = simulate(sc)
    for r in range(2):
        rows = slice(3 * r, 3 * r + 3)
        for name in ("msc_lung", "debris_liver", "viable_total"):
            assert np.array_equal(run.dataset()[name].values[rows], nominal[name].values), name


def test_a_parameter_set_does_not_depend_on_its_batch():
    sc = _short_iv()
    space = scenario_space(sc)
    values = space.values(draw_unit(3, space.names, 0, 4))
    together = run_sets(sc, space, values).states
    alone = run_sets(sc, space, values[2:3]).states
    assert np.array_equal(together[6:9], alone)


def _knee_local(**uncertainty):
    return scenario_from_dict(example("knee_ia_5e7_ultrasound", duration_days=8, uncertainty=uncertainty))


def test_bands_shrink_when_a_prior_is_narrowed_and_do_not_depend_on_the_chunk_size():
    wide = simulate_bands(_knee_local(draws=24))
    narrow = simulate_bands(_knee_local(draws=24, priors={"k_death_target": {
        "distribution": "loguniform", "low": 0.0045, "high": 0.0052, "basis": "a narrower prior (test)"}}))

    def width(b):
        r = b.headline("viable_target_cells_7d")
        return r["high90"] - r["low90"]

    assert width(narrow) < 0.5 * width(wide)
    rechunked = simulate_bands(scenario_from_dict(example(
        "knee_ia_5e7_ultrasound", duration_days=8, uncertainty={"draws": 24}, solver={"chunk_size": 5})))
    assert rechunked.per_draw.equals(wide.per_draw)
    assert rechunked.table.equals(wide.table)


def test_simulate_writes_bands_beside_every_output(tmp_path, capsys):
    from mscsim.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(example("knee_ia_5e7_ultrasound", duration_days=8, uncertainty={"draws": 12})))
    assert main(["simulate", str(path), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    import pandas as pd

    bands = pd.read_csv(out / "bands.csv")
    assert {"quantity", "source", "median", "low90", "high90", "low95", "high95"} <= set(bands.columns)
    row = bands[(bands["quantity"] == "viable_target_cells_7d")].iloc[0]
    assert row["low95"] <= row["low90"] <= row["median"] <= row["high90"] <= row["high95"]
    summary = pd.read_csv(out / "summary.csv")
    assert {"viable_target_cells_7d_median", "viable_target_cells_7d_low90", "viable_target_cells_7d_high95"} <= \
        set(summary.columns)
    draws = pd.read_csv(out / "draws.csv")
    assert draws["draw"].nunique() == 12
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["uncertainty"]["draws"] == 12 and "k_death_target" in manifest["uncertainty"]["uncertain_parameters"]
    assert "parameter uncertainty: 12 parameter draws" in capsys.readouterr().out


def test_B16_knee_oa_draws_are_conditioned_on_the_disease_as_enrolled():
    from mscsim.endpoints import load_endpoints
    from mscsim.uncertainty.draws import baseline_endpoints, parameter_draws

    sc = scenario_from_dict(example("knee_oa_ia_5e7"))
    space = scenario_space(sc)
    draws = parameter_draws(sc, space, sc.seed, 6)
    window = load_endpoints("knee_osteoarthritis").spec.enrolled["pain_vas"]
    base = baseline_endpoints(sc, space, draws.values)["pain_vas"]
    assert np.all((base >= window.low) & (base <= window.high))
    assert np.all(np.diff(draws.index) > 0) and draws.candidates >= 6
