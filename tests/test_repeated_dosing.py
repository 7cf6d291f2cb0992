"""Repeated doses are events: integrate to the dose time, add the dose, continue."""

import numpy as np

from conftest import example, run, simulated


def test_repeated_doses_are_events_and_superpose():
    times = [0, 3.5, 7, 10.5, 14, 17.5, 21, 24.5]
    multi = simulated(example("human_iv_gvhd_twice_weekly"))  # shared with the mass-balance test
    assert float(multi["administered"][0, -1]) == 8 * 2e6 * 40
    t = multi["time"].values
    for td in times:  # the administered count steps up at each dose
        i = int(np.nonzero(t == td * 24)[0][0])
        before = float(multi["administered"][0, i - 1]) if i else 0.0
        assert abs(float(multi["administered"][0, i]) - before - 8e7) < 1e-3
    # the kinetics are linear in the cells, so 8 doses = the sum of 8 shifted single doses
    single = run(example("human_iv_gvhd_twice_weekly", regimen={"route": "intravenous",
                                                                "dose": {"cells_per_kg": 2e6}, "times_days": [0]}))
    ts = single["time"].values
    for td in (10.5, 24.5):
        probe = td * 24 + 18.0  # on the 6-hour output grid of both runs
        expected = sum(np.interp(probe - d * 24, ts, single["msc_lung"].values[0]) for d in times if d * 24 <= probe)
        got = float(np.interp(probe, t, multi["msc_lung"].values[0]))
        assert abs(got - expected) / expected < 1e-5
