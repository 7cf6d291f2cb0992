"""Trial bands from parameter uncertainty: draws run as chunks like patients (identical with 1 and 2 workers and any
chunk size), a draw at the nominal values is the nominal trial, and every table and the report carry the bands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import small_design, write_design
from mscsim.cli import main
from mscsim.trials import design_from_dict
from mscsim.trials.uncertain import arm_sets, design_space


@pytest.fixture(scope="module")
def banded(tmp_path_factory):
    """The small knee-OA design with 4 parameter draws of 3 patients per arm, run with one worker and chunks of 2
    and with two workers and chunks of 5."""
    root = tmp_path_factory.mktemp("banded")
    design = write_design(small_design(uncertainty={"draws": 4, "pool_per_arm": 3}), root / "design.yaml")
    outs = {}
    for name, extra in (("one", ["--chunk-size", "2"]), ("two", ["--chunk-size", "5", "--workers", "2"])):
        outs[name] = root / name
        assert main(["trial", str(design), "--out", str(outs[name]), *extra]) == 0
    return design, outs


def test_trial_bands_are_identical_with_one_and_two_workers(banded):
    _, outs = banded
    for name in ("draws.parquet", "endpoints.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(outs["one"] / name), pd.read_parquet(outs["two"] / name),
                                      check_exact=True)
    for name in ("arm_summary.csv", "comparisons.csv", "published_vs_simulated.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(outs["one"] / name), pd.read_csv(outs["two"] / name),
                                      check_exact=True)


def test_every_trial_table_carries_the_three_sources_apart(banded):
    _, outs = banded
    out = outs["one"]
    summary = pd.read_csv(out / "arm_summary.csv")
    assert {"param_median", "param_low90", "param_high90", "param_low95", "param_high95", "patients_low90",
            "patients_high90", "ci_low", "ci_high"} <= set(summary.columns)
    cont = summary[summary["kind"] == "continuous"]
    assert (cont["param_low95"] <= cont["param_low90"]).all() and (cont["param_high90"] <= cont["param_high95"]).all()
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert comparisons["param_median"].notna().all()
    published = pd.read_csv(out / "published_vs_simulated.csv")
    assert {"param_median", "predictive_low95", "predictive_high95", "agrees_with_uncertainty"} <= \
        set(published.columns)
    assert (published["predictive_low95"] <= published["predictive_high95"]).all()
    # the bundled knee posterior carries between-trial SDs: each published number is also predicted as a new trial
    assert {"new_trial_low95", "new_trial_high95", "agrees_as_new_trial"} <= set(published.columns)
    width = published["new_trial_high95"] - published["new_trial_low95"]
    assert (width > 0).all() and width.mean() > (published["predictive_high95"] - published["predictive_low95"]).mean()
    draws = pd.read_parquet(out / "draws.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert draws["draw"].nunique() == manifest["uncertainty"]["draws"] == 4
    assert manifest["uncertainty"]["pool_per_arm"] == 3
    assert manifest["uncertainty"]["between_trial_sds"] is True
    assert "parameter uncertainty" in (out / "report.html").read_text()


def test_a_draw_at_the_nominal_values_is_the_nominal_trial(banded):
    design_path, outs = banded
    import yaml

    design = design_from_dict(yaml.safe_load(design_path.read_text()))
    space = design_space(design)
    nominal = pd.read_parquet(outs["one"] / "endpoints.parquet")
    for arm in design.arms:
        table, failed = arm_sets(design, arm, space, space.nominal()[None, :], np.array([0]), 3)
        assert not failed.any()
        mine = table.drop(columns="draw").reset_index(drop=True)
        theirs = nominal[nominal["arm"] == arm.name].reset_index(drop=True)
        theirs = theirs[theirs["patient"].isin(mine["patient"])].reset_index(drop=True)
        cols = ["patient", "endpoint", "visit_day", "value", "baseline", "change"]
        mine = mine.sort_values(["patient", "endpoint", "visit_day"]).reset_index(drop=True)
        theirs = theirs.sort_values(["patient", "endpoint", "visit_day"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[cols], theirs[cols], check_exact=True)


def test_a_new_trial_moves_each_statistic_as_the_calibration_does():
    """The new-trial shift (trials.bands.new_trial): a continuous statistic by effect x between-patient SD, the
    common response not in a difference, the cells' effect not in an arm without cells, a rate on the log-odds,
    a partial-response rate not at all."""
    from mscsim.calibration.heterogeneity import LOGIT_PER_SMD
    from mscsim.trials.bands import new_trial

    a = np.array([10.0, 14.0, 12.0, 8.0])  # SD 2.58
    z = np.array([[1.0, -2.0], [0.5, 1.0]])
    tau = np.array([0.4, 0.2])
    reps = np.array([12.0, 11.0])
    sd = np.std(a, ddof=1)
    got = new_trial(reps, "mean_change", True, tau, z, "knee_osteoarthritis", a, None, 4, None)
    np.testing.assert_allclose(got, reps + sd * (0.4 * z[0] + 0.2 * z[1]))
    placebo = new_trial(reps, "mean_change", False, tau, z, "knee_osteoarthritis", a, None, 4, None)
    np.testing.assert_allclose(placebo, reps + sd * 0.4 * z[0])
    diff = new_trial(reps, "difference_mean_change", True, tau, z, "knee_osteoarthritis", a, a + 1, 4, 4)
    np.testing.assert_allclose(diff, reps + sd * 0.2 * z[1])
    p = np.array([0.3, 0.6])  # acute GVHD's prior is on log odds ratios: one unit moves the log-odds by one
    rate = new_trial(p, "rate", True, tau, z, "acute_gvhd", a, None, 4, None)
    np.testing.assert_allclose(np.log(rate / (1 - rate)), np.log(p / (1 - p)) + 0.4 * z[0] + 0.2 * z[1])
    smd = new_trial(p, "rate", False, tau, z, "knee_osteoarthritis", a, None, 4, None)
    np.testing.assert_allclose(np.log(smd / (1 - smd)), np.log(p / (1 - p)) + LOGIT_PER_SMD * 0.4 * z[0])
    assert np.array_equal(new_trial(p, "partial_rate", True, tau, z, "acute_gvhd", a, None, 4, None), p)
    # a patient missing at the visit (a design's dropout: NaN) leaves the between-patient SD to the others
    missing = new_trial(reps, "mean_change", True, tau, z, "knee_osteoarthritis", np.append(a, np.nan), None, 4, None)
    np.testing.assert_allclose(missing, got)
    gap = new_trial(reps, "difference_mean_change", True, tau, z, "knee_osteoarthritis", np.append(a, np.nan),
                    np.append(a + 1, np.nan), 4, 4)
    np.testing.assert_allclose(gap, diff)


def test_a_posterior_file_carries_its_between_trial_sds(tmp_path):
    """The bundled posterior's tau draws come with it (not as model parameters); a CSV may carry them too, both
    or neither, finite and >= 0 (a bad one names the file and columns)."""
    from mscsim.errors import InputError
    from mscsim.uncertainty.priors import bundled_posterior, load_posterior

    design = small_design(uncertainty={"draws": 4, "pool_per_arm": 3})
    space = design_space(design_from_dict(design))
    post = load_posterior(str(bundled_posterior("knee_osteoarthritis")), space, 4, strict=False)
    assert post.taus is not None and post.taus.shape == (len(post.table), 2) and (post.taus > 0).all()
    assert "tau_trial" not in post.names and "tau_cells" not in post.names
    name = space.names[0]
    value = float(space.nominal()[0])
    ok = tmp_path / "ok.csv"
    pd.DataFrame({name: [value] * 4, "tau_trial": [0.1] * 4, "tau_cells": [0.2] * 4}).to_csv(ok, index=False)
    assert load_posterior(str(ok), space, 4).taus_at([2, 3]).tolist() == [[0.1, 0.2], [0.1, 0.2]]
    half = tmp_path / "half.csv"
    pd.DataFrame({name: [value] * 4, "tau_trial": [0.1] * 4}).to_csv(half, index=False)
    with pytest.raises(InputError, match="tau_cells"):
        load_posterior(str(half), space, 4)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({name: [value] * 4, "tau_trial": [0.1, -1, 0.1, 0.1], "tau_cells": [0.2] * 4}).to_csv(bad, index=False)
    with pytest.raises(InputError, match="bad.csv"):
        load_posterior(str(bad), space, 4)
