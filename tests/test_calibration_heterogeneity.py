"""Between-trial heterogeneity in calibration (``mscsim.calibration.heterogeneity``): the likelihood with each
trial's random effects integrated out is the multivariate normal it stands for, a held-out trial is predicted as a
new trial (wider), a calibrated-against trial keeps the effect its data imply, and the priors are cited data."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from mscsim.calibration.emulator import design_points, fit_emulator
from mscsim.calibration.heterogeneity import FILE, Heterogeneity, load_prior
from mscsim.calibration.inference import predictive
from mscsim.calibration.problem import build_problem, disease_designs, with_spreads
from mscsim.errors import DataError
from mscsim.model.references import resolve
from mscsim.trials.design import bundled_designs, load_design


def _problem(disease, spread, seed=1):
    p = build_problem(disease)
    rng = np.random.default_rng(seed)
    return with_spreads(p, rng.uniform(spread / 2, spread, (5, len(p.observations)))), rng


@pytest.mark.parametrize("disease, spread", [("acute_gvhd", 0.3), ("knee_osteoarthritis", 20.0)])
def test_likelihood_integrates_each_trials_effects_out(disease, spread):
    """Woodbury per (trial, endpoint) group equals the multivariate normal whose covariance is the diagonal plus
    the group's shared effects (block-diagonal by group), with an observation left out of the fit."""
    p, rng = _problem(disease, spread)
    h = Heterogeneity.of(p.table, p.disease)
    m, n = 3, len(p.observations)
    mean = p.table["value"].to_numpy() + rng.normal(0, 0.05 if spread < 1 else 5.0, (m, n))
    var = np.nan_to_num(p.table["se"].to_numpy(), nan=spread / 4) ** 2 + rng.uniform(0, 0.01, (m, n))
    tau = h.taus(rng.random((m, 2)))
    w = h.loadings(mean, tau)
    r = p.table["value"].to_numpy() - mean
    used = np.ones(n, bool)
    used[1] = False
    ll = h.loglik(r, var, w, used)
    same = h.group[:, None] == h.group[None, :]
    for j in range(m):
        cov = (np.diag(var[j]) + (w[j] @ w[j].T) * same)[np.ix_(used, used)]
        assert ll[j] == pytest.approx(multivariate_normal(np.zeros(used.sum()), cov).logpdf(r[j][used]), rel=1e-10)


def test_effects_follow_the_design():
    """A trial's common response moves every arm's statistic but not a difference between arms; the cells' effect
    moves the cell arms and the differences, not a control arm; a partial-response rate takes neither."""
    p, _ = _problem("acute_gvhd", 0.3)
    h = Heterogeneity.of(p.table, p.disease)
    t = p.table.assign(common=h.common, cells=h.cells, group=h.group)
    control = t[t["arm"] == "control"]
    assert (control["common"] == 1).all() and (control["cells"] == 0).all()
    partial = t[t["statistic"] == "partial_rate"]
    assert (partial[["common", "cells"]].to_numpy() == 0).all()
    assert t.groupby("design")["group"].nunique().eq(1).all()  # one endpoint per GVHD trial: one group each
    k, _ = _problem("knee_osteoarthritis", 20.0)
    hk = Heterogeneity.of(k.table, k.disease)
    diff = k.table["statistic"].str.startswith("difference").to_numpy()
    assert (hk.common[diff] == 0).all() and (hk.cells[diff] == 1).all()
    assert len(set(hk.group)) == 4  # (Lamo-Espinosa, Lee 2019) x (pain, WOMAC)


def _emulated(problem, seed=3):
    """A small emulator of made-up smooth outputs around the published values (the predictive's machinery, not
    the model, is under test)."""
    k = len(problem.names)
    x = design_points(k, 64, seed)
    value = problem.table["value"].to_numpy()
    rates = problem.table["statistic"].str.contains("rate").to_numpy()
    slope = np.where(rates, 0.1, np.abs(value) * 0.1 + 1.0)
    y = value + slope * (x[:, :1] - 0.5)
    return fit_emulator(x, y, seed)


def test_a_held_out_trial_is_a_new_trial_and_a_fitted_one_keeps_its_effect():
    p, _ = _problem("perianal_fistula", 0.4)
    em = _emulated(p)
    h = Heterogeneity.of(p.table, p.disease)
    rng = np.random.default_rng(5)
    unit, tau = rng.random((3000, len(p.names))), rng.random((3000, 2))
    t = p.table.copy()
    plain = predictive(em, unit, t, 1)
    new = predictive(em, unit, t, 1, h, tau)
    assert ((new[2] - new[1]) >= (plain[2] - plain[1]) - 1e-9).all()
    assert ((new[2] - new[1]) > (plain[2] - plain[1])).any()
    # a trial whose published numbers all sit far above the prediction: calibrated against, its effects' posterior
    # moves its predictive median towards them; held out, the median stays at the model's
    far = t.assign(value=np.clip(t["value"] + 0.25, 0, 1))
    used = np.ones(len(t), bool)
    fitted = predictive(em, unit, far, 1, h, np.full_like(tau, 0.9), used)
    held = predictive(em, unit, far, 1, h, np.full_like(tau, 0.9))
    rates = t["statistic"].eq("rate").to_numpy()
    assert (fitted[0][rates] > held[0][rates]).all()


def test_priors_are_cited_data_for_every_calibrated_disease():
    diseases = {load_design(d)[0].disease for d in bundled_designs() if load_design(d)[0].published}
    for disease in diseases:
        prior = load_prior(disease)
        assert resolve(prior.source) and prior.setting
        assert disease_designs(disease)
    # Rhodes 2015 (pain, pharmacological vs placebo): median tau^2 exp(-3.16); Turner 2015 (end of condition):
    # exp(-2.06): the prior medians of tau are their square roots
    assert load_prior("knee_osteoarthritis").tau(0.5) == pytest.approx(np.exp(-3.16 / 2), rel=1e-9)
    assert load_prior("acute_gvhd").tau(0.5) == pytest.approx(np.exp(-2.06 / 2), rel=1e-9)
    assert load_prior("acute_gvhd").tau(0.975) == pytest.approx(np.exp((-2.06 + 1.959964 * 1.51) / 2), rel=1e-5)


def test_a_bad_prior_entry_names_the_file_and_field(tmp_path):
    bad = tmp_path / "heterogeneity.yaml"
    bad.write_text(FILE.read_text().replace("scale: log_odds_ratio", "scale: odds"))
    with pytest.raises(DataError, match=r"heterogeneity.yaml: priors.turner2015\S*.scale: 'odds'; allowed"):
        load_prior("acute_gvhd", bad)
    with pytest.raises(DataError, match="diseases.no_such_disease: missing"):
        load_prior("no_such_disease", bad)


def test_a_tau_far_out_in_the_prior_tail_stays_finite():
    """Rhodes 2015's log-t prior is heavy-tailed: a walker far out in it gets tau capped at TAU_MAX (no
    information at all), so the likelihood stays finite and is lower there than at the prior's median."""
    from mscsim.calibration.heterogeneity import TAU_MAX

    p, rng = _problem("tendinopathy", 20.0)
    h = Heterogeneity.of(p.table, p.disease)
    mean = np.tile(p.table["value"].to_numpy(), (2, 1))
    tau = h.taus(np.array([[0.5, 0.5], [1 - 1e-12, 1 - 1e-12]]))
    np.testing.assert_allclose(tau[1], TAU_MAX, rtol=1e-12)
    ll = h.loglik(np.zeros_like(mean), np.full_like(mean, 25.0), h.loadings(mean, tau), np.ones(len(p.table), bool))
    assert np.isfinite(ll).all() and ll[1] < ll[0]


def test_interval_score_weighs_a_miss_against_width():
    """scripts/leave_one_out.py scores each interval (Gneiting and Raftery 2007): its width in SEs when the
    published value is inside, plus 2/0.05 = 40 times the distance outside when it is not."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    path = Path(__file__).resolve().parent.parent / "scripts" / "leave_one_out.py"
    spec = importlib.util.spec_from_file_location("leave_one_out", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    t = pd.DataFrame({"posterior_2.5%": [0.0, 0.0], "posterior_97.5%": [4.0, 4.0], "published": [2.0, 5.0],
                      "se": [2.0, 2.0]})
    np.testing.assert_allclose(module.interval_score(t).to_numpy(), [2.0, (4.0 + 40.0) / 2.0])
