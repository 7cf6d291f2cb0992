"""Calibration (``mscsim calibrate``): a synthetic trial generated from known parameters is recovered within the
posterior's intervals, the posterior is data a trial's bands can use, leave-one-trial-out predicts a held-out
design, and bad options are refused before any work."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import example

from mscsim.calibration.problem import build_problem, observations
from mscsim.calibration.run import Settings, calibrate, write_calibration
from mscsim.cli import main
from mscsim.trials.design import load_design
from mscsim.uncertainty.priors import load_posterior

DISEASE = "knee_osteoarthritis"
DESIGN = "knee_oa_lee_2019"  # two arms, two published differences: the smallest knee problem
# the synthetic data are made without between-trial effects, so the model that made them is the one without them
SMALL = Settings(points=32, walkers=16, steps=1500, burn=500, seed=7, refine=0, heterogeneity=False)
TRUE_UNIT = np.array([0.3, 0.7])  # g_trophic, placebo_r_saline in their priors' unit cube


@pytest.fixture(scope="module")
def synthetic():
    """Lee 2019's two published differences replaced by what the model gives at known parameters, with half the
    published spreads (the same trial at four times its 12 patients per arm: Lee's own trial narrows g_trophic's
    prior by only about a quarter, too little to tell from the emulator's noise in a test); calibrated with a small
    emulator on 160 virtual patients per arm (with 40, the training runs' sampling noise was as large as the MSC
    effect's range over the prior, and whether g_trophic came out constrained depended on which patients were
    drawn)."""
    problem = build_problem(DISEASE, parameters=["g_trophic", "placebo_r_saline"], pool=160, designs=[DESIGN])
    truth, _ = problem.simulate(TRUE_UNIT[None, :])
    obs = tuple(dataclasses.replace(o, value=float(v), se=o.se / 2) for o, v in zip(problem.observations, truth[0]))
    problem = dataclasses.replace(problem, observations=obs)
    cal, loo = calibrate(problem, SMALL)
    return problem, cal, truth[0]


def test_synthetic_trial_recovers_known_parameters(synthetic):
    problem, cal, _ = synthetic
    truth = problem.values(TRUE_UNIT[None, :])[0]
    p = cal.parameters.set_index("parameter")
    for name, value in zip(problem.names, truth):
        assert p.loc[name, "posterior_2.5%"] <= value <= p.loc[name, "posterior_97.5%"], name
    # the two differences inform the MSC effect (g_trophic), not the placebo relief common to both arms: at four
    # times Lee's size they narrow g_trophic's prior by about two thirds (contraction 0.69 on 2026-12-08), the
    # placebo relief's by almost nothing (0.06)
    assert p.loc["g_trophic", "constrained"]
    assert p.loc["g_trophic", "contraction"] > p.loc["placebo_r_saline", "contraction"] + 0.3
    assert not p.loc["placebo_r_saline", "constrained"]


def test_synthetic_posterior_predicts_its_data(synthetic):
    problem, cal, truth = synthetic
    t = cal.predictions
    assert t["inside_95"].all()
    # the emulator agrees with full model runs at posterior draws to within the trial's own sampling error
    assert (t["emulator_error_at_posterior"] < t["se"]).all()


def test_diagnostics_are_reported(synthetic):
    _, cal, _ = synthetic
    p = cal.parameters
    assert {"rhat", "ess_bulk", "tau_steps", "passes", "contraction"} <= set(p.columns)
    assert np.isfinite(p["rhat"]).all() and (p["rhat"] < 1.1).all()
    assert 0.05 < cal.manifest["sampler"]["acceptance"] < 0.9


def test_posterior_file_is_data_with_provenance(synthetic, tmp_path):
    problem, cal, _ = synthetic
    out = write_calibration(cal, tmp_path / "cal")
    ds = xr.open_dataset(out / "posterior.nc")
    provenance = json.loads(ds.attrs["provenance"])
    assert provenance["designs"] == [DESIGN] and provenance["seed"] == SMALL.seed
    assert provenance["sampler"]["library"] == "emcee"
    assert set(ds.data_vars) == set(problem.names) and ds.sizes["draw"] == len(cal.posterior_unit)
    manifest = json.loads((out / "manifest.json").read_text())
    assert all((out / f).exists() for f in manifest["files"])
    # a trial's bands read it like any posterior file (draw d takes row d), in the data files' units
    design, _ = load_design(DESIGN)
    from mscsim.trials.uncertain import design_space

    space = design_space(design)
    post = load_posterior(str(out / "posterior.nc"), space, 10)
    assert list(post.names) == list(problem.names)
    np.testing.assert_allclose(post.rows(0, 3)["g_trophic"].to_numpy(), ds["g_trophic"].values[:3])
    # its training runs serve a rerun of the same problem (--reuse-training), and no other
    from mscsim.calibration.run import load_training
    from mscsim.errors import InputError

    again = load_training(out / "training.npz", problem, SMALL)
    np.testing.assert_array_equal(again.predictions, cal.training.predictions)
    with pytest.raises(InputError, match="--reuse-training"):
        load_training(out / "training.npz", problem, dataclasses.replace(SMALL, seed=8))


def test_leave_one_out_predicts_the_held_out_design(tmp_path):
    """With one of the two knee trials held out, its numbers are predicted, not fitted, and say so."""
    problem = build_problem(DISEASE, parameters=["g_trophic", "placebo_r_hyaluronic_acid"], pool=20,
                            exclude=("knee_oa_lamo_espinosa_2016",))
    assert set(problem.table.loc[~problem.used, "design"]) == {"knee_oa_lamo_espinosa_2016"}
    cal, loo = calibrate(problem, Settings(points=16, walkers=8, steps=400, burn=100, seed=3, refine=0), loo=True)
    held = cal.predictions[cal.predictions["design"] == "knee_oa_lamo_espinosa_2016"]
    assert (held["role"] == "held out (predicted)").all()
    assert len(held) == len(load_design("knee_oa_lamo_espinosa_2016")[0].published)  # every published number
    assert set(loo["design"]) == {"knee_oa_lee_2019", "knee_oa_lamo_espinosa_2016"}
    assert np.isfinite(loo[["posterior_2.5%", "posterior_97.5%"]].to_numpy()).all()
    # by default the between-trial SDs are sampled too: reported beside the parameters, in the manifest, and in
    # the posterior file, whose parameter readers (a run's bands) skip them
    tau = cal.parameters.set_index("parameter").loc[["tau_trial", "tau_cells"]]
    assert (tau["role"] == "heterogeneity").all() and np.isfinite(tau["rhat"]).all()
    assert cal.manifest["heterogeneity"]["prior"].startswith("rhodes2015")
    out = write_calibration(cal, tmp_path / "cal")
    ds = xr.open_dataset(out / "posterior.nc")
    assert ds["tau_cells"].attrs["role"] == "heterogeneity" and (ds["tau_cells"].values > 0).all()
    from mscsim.trials.uncertain import design_space

    post = load_posterior(str(out / "posterior.nc"), design_space(load_design("knee_oa_lamo_espinosa_2016")[0]), 10)
    assert set(post.names) == set(problem.names)


def test_observation_spreads_come_from_the_paper():
    """A reported CI gives the SE; a rate is binomial; the rest take the simulated SD over the arm's size."""
    obs = {(o.arm, o.statistic, o.endpoint): o for o in observations(load_design(DESIGN)[0])}
    o = obs[("msc_1e8", "difference_mean_change", "pain_vas")]
    assert o.spread == "ci" and o.se == pytest.approx((-3.2 + 23.28) / (2 * 1.96), rel=1e-3)
    gvhd = observations(load_design("sr_agvhd_study275")[0])
    assert all(o.spread == "binomial" for o in gvhd)
    lamo = observations(load_design("knee_oa_lamo_espinosa_2016")[0])
    assert all(o.spread == "simulated sd" and np.isnan(o.se) for o in lamo)


@pytest.mark.parametrize("argv, field", [
    (["--points", "100"], "--points"),
    (["--exclude", "no_such_trial"], "--exclude"),
    (["--parameters", "no_such_parameter"], "--parameters"),
    (["--pool", "3"], "--pool"),
    (["--targets", "sr_agvhd_study275"], "--targets"),
    (["--targets", "tendinopathy_nct03449082"], "--targets"),
    (["--exclude", "knee_oa_lee_2019", "knee_oa_lamo_espinosa_2016"], "--exclude"),
])
def test_bad_options_are_refused_before_work(tmp_path, capsys, argv, field):
    out = tmp_path / "cal"
    assert main(["calibrate", DISEASE, "--out", str(out), *argv]) == 2
    assert field in capsys.readouterr().err
    assert not out.exists()


def test_unknown_disease_is_refused(tmp_path, capsys):
    assert main(["calibrate", "no_such_disease", "--out", str(tmp_path / "x")]) == 2
    assert "disease" in capsys.readouterr().err


def test_bands_use_the_bundled_posterior_by_default_and_priors_on_request():
    """A knee scenario's draws take the calibrated parameters from the bundled posterior (row d for draw d), and
    from their priors with ``posterior: prior``; the draws record which."""
    from mscsim.io.scenario import scenario_from_dict
    from mscsim.uncertainty.draws import parameter_draws
    from mscsim.uncertainty.evaluate import scenario_space
    from mscsim.uncertainty.priors import bundled_posterior, run_posterior

    path = bundled_posterior(DISEASE)
    assert path is not None, "the knee-OA posterior (mscsim calibrate) is bundled in data/posteriors"
    table = xr.open_dataset(path).to_dataframe()
    sc = scenario_from_dict(example("knee_oa_ia_5e7"))
    space = scenario_space(sc)
    posterior = run_posterior(None, DISEASE, space, 4)
    assert posterior is not None and "g_trophic" in posterior.names
    assert not any(n.startswith("placebo_") for n in posterior.names)  # trial-level: not a scenario's parameter
    d = parameter_draws(sc, space, sc.seed, 4, posterior=posterior, condition="none")
    j = space.names.index("g_trophic")
    np.testing.assert_allclose(d.values[:, j], table["g_trophic"].to_numpy()[:4])
    assert d.posterior == str(path)
    assert run_posterior("prior", DISEASE, space, 4) is None


def test_emulator_prediction_is_scikit_learns():
    """The emulator's fast prediction path gives what GaussianProcessRegressor.predict gives."""
    from mscsim.calibration.emulator import design_points, fit_emulator

    x = design_points(3, 32, 1)
    y = np.column_stack([np.sin(3 * x[:, 0]) + x[:, 1] ** 2, x[:, 2] * 10 + 0.01 * x[:, 0]])
    em = fit_emulator(x, y, seed=1)
    u = np.random.default_rng(2).random((20, 3))
    mean, sd = em.predict(u)
    for i, gp in enumerate(em.gps):
        m, s = gp.predict(u, return_std=True)  # scikit-learn's SD includes the white noise; the emulator's does not
        noise = gp.kernel_.k2.noise_level * float(np.ravel(gp._y_train_std)[0]) ** 2
        np.testing.assert_allclose(mean[:, i], m, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(sd[:, i], np.sqrt(np.maximum(s ** 2 - noise, 0.0)), rtol=1e-5, atol=1e-6)


def test_each_design_point_gets_its_own_patients():
    """Calibration's independent pools: pool 0 is the trial's own patients (as without pools), another pool is
    other patients (no id shared with any arm), and the same pool gives the same numbers."""
    from mscsim.trials.runner import arm_offsets
    from mscsim.trials.uncertain import arm_sets, design_space

    design, _ = load_design(DESIGN)
    design = design.model_copy(update={"arms": [a.model_copy(update={"n": 3}) for a in design.arms]})
    space = design_space(design)
    rows = np.repeat(space.nominal()[None, :], 3, axis=0)
    arm = design.arms[0]
    shared, _ = arm_sets(design, arm, space, rows[:1], np.array([0]), 3)
    pooled, failed = arm_sets(design, arm, space, rows, np.arange(3), 3, pools=np.array([0, 1, 1]))
    assert not failed.any()
    cols = ["patient", "endpoint", "visit_day", "value", "change"]
    by = {d: g[cols].reset_index(drop=True) for d, g in pooled.groupby("draw")}
    pd.testing.assert_frame_equal(by[0], shared[cols].reset_index(drop=True), check_exact=True)
    pd.testing.assert_frame_equal(by[1], by[2], check_exact=True)
    trial_ids = set(range(sum(a.n for a in design.arms)))
    assert set(by[0]["patient"]) == set(range(arm_offsets(design)[arm.name], arm_offsets(design)[arm.name] + 3))
    assert not set(by[1]["patient"]) & trial_ids
    assert not np.allclose(by[0]["value"].to_numpy(), by[1]["value"].to_numpy())


def test_a_second_wave_puts_training_points_where_the_posterior_is(synthetic):
    """``refine``: more training points drawn from the first posterior (history matching's refocusing), each on
    its own patients; the emulator is refitted on both waves, and the posterior still holds the truth."""
    problem, first, _ = synthetic
    cal, _ = calibrate(problem, dataclasses.replace(SMALL, refine=16))
    n = SMALL.points
    assert len(cal.training.unit) == n + 16
    np.testing.assert_array_equal(cal.training.unit[:n], first.training.unit)  # the first wave is unchanged
    assert cal.manifest["emulator"]["waves"] == 2 and cal.manifest["emulator"]["training_points"] == n + 16
    # the second wave's points are draws of the first posterior (the one-wave calibration's), spread along it
    picks = np.linspace(0, len(first.posterior_unit) - 1, 16).round().astype(int)
    np.testing.assert_array_equal(cal.training.unit[n:], first.posterior_unit[picks])
    g = problem.names.index("g_trophic")  # the parameter the data constrain: the new points are narrower there
    assert cal.training.unit[n:, g].std() < cal.training.unit[:n, g].std()
    truth = problem.values(TRUE_UNIT[None, :])[0]
    p = cal.parameters.set_index("parameter")
    for name, value in zip(problem.names, truth):
        assert p.loc[name, "posterior_2.5%"] <= value <= p.loc[name, "posterior_97.5%"], name
    # a reused training file with both waves runs no model and gives the same posterior
    again, _ = calibrate(problem, dataclasses.replace(SMALL, refine=16), training=cal.training)
    np.testing.assert_array_equal(again.posterior_unit, cal.posterior_unit)


def test_refine_is_refused_when_out_of_range(tmp_path, capsys):
    assert main(["calibrate", DISEASE, "--refine", "-3", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "--refine" in err and "-3" in err
    assert not (tmp_path / "c").exists()


def test_a_larger_pool_holds_the_smaller_pools_patients_in_every_arm(monkeypatch):
    """Item 6 of the calibration issue doubles the pool and asks the fit not to move: the larger pool must add
    patients to every arm, not swap the later arms' patients for others (their ids once depended on the pool)."""
    import mscsim.calibration.problem as cp

    seen = []
    real = cp.arm_sets

    def spy(design, arm, space, values, keys, count, pools=None, **where):
        table, failed = real(design, arm, space, values, keys, count, pools=pools, **where)
        seen.append((count, arm.name, tuple(int(p) for p in (pools if pools is not None else [-1])),
                     frozenset(table["patient"])))
        return table, failed

    monkeypatch.setattr(cp, "arm_sets", spy)
    unit = np.full((2, 2), 0.5)
    for pool in (10, 20):
        problem = build_problem(DISEASE, parameters=["g_trophic", "placebo_r_saline"], pool=pool, designs=[DESIGN])
        problem.simulate(unit[:1])
        problem.simulate(unit, pools=np.array([0, 1]))
    small = {(arm, pools): ids for count, arm, pools, ids in seen if count == 10}
    large = {(arm, pools): ids for count, arm, pools, ids in seen if count == 20}
    assert set(small) == set(large) and len({arm for arm, _ in small}) == 2
    for key, ids in small.items():
        assert len(ids) == 10 * len(key[1]) and ids < large[key], key  # every arm, shared or pooled: nested
    arms = [ids for (arm, pools), ids in large.items() if pools == (0, 1)]
    assert not arms[0] & arms[1]  # and no two arms share a patient
