"""Repeats of a trial drawn from a simulated pool: the counts path (large trials) is the same random variable as
drawing the patients themselves, and its mean and median are those of the expanded sample exactly."""

from __future__ import annotations

import numpy as np
import pytest

from mscsim.trials import resample
from mscsim.trials.resample import _counted, repeated_statistic


def _pool(seed: int, m: int = 60) -> np.ndarray:
    x = np.random.default_rng(seed).normal(40.0, 15.0, m)
    x[::13] = np.nan  # missed visits
    return x


@pytest.mark.parametrize("median", [False, True])
def test_counted_statistic_is_the_expanded_samples_own(median):
    """The mean or median over counts equals np.nanmean / np.nanmedian of the pool repeated by those counts."""
    pool = _pool(1)
    rng = np.random.default_rng(2)
    counts = rng.multinomial(101, np.full(len(pool), 1 / len(pool)), size=50)
    got = _counted(pool, counts, median)
    want = [(np.nanmedian if median else np.nanmean)(np.repeat(pool, k)) for k in counts]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("statistic", ["mean_change", "median", "difference_mean_change"])
def test_large_trial_repeats_match_drawing_the_patients(statistic, monkeypatch):
    """The 2.5 %, 50 % and 97.5 % points of 4,000 repeats agree between the two paths within Monte Carlo error."""
    a, c = _pool(3), _pool(4)
    c = c if statistic.startswith("difference") else None
    args = (statistic, a, 150, c, 140 if c is not None else None, 4000)
    direct = repeated_statistic(*args, np.random.default_rng(5))
    monkeypatch.setattr(resample, "DIRECT_LIMIT", 0)
    counted = repeated_statistic(*args, np.random.default_rng(6))
    sd = np.std(direct)
    for q in (0.025, 0.5, 0.975):
        assert abs(np.quantile(counted, q) - np.quantile(direct, q)) < 0.15 * sd, q
    assert abs(np.std(counted) / sd - 1) < 0.08


def test_a_scaled_trial_resamples_without_holding_its_patients():
    """500,000 patients a repeat from a pool of 30: 20 repeats stay small (the direct path would hold 10 million
    draws) and sit at the pool's mean, as a trial that large must."""
    a = _pool(7, 30)
    reps = repeated_statistic("mean_change", a, 500_000, None, None, 20, np.random.default_rng(8))
    assert reps.shape == (20,)
    assert np.all(np.abs(reps - np.nanmean(a)) < 0.2)
