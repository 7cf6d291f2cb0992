"""Every administered cell is accounted for: viable + debris + cleared = administered, to 1e-9 relative."""

import numpy as np
import pytest

from conftest import DISEASE_RUNS, SCENARIO_EXAMPLES, example, run, simulated
from mscsim import DataError, Model
from mscsim.model.core import Mechanism, Process, State


@pytest.mark.parametrize("name", SCENARIO_EXAMPLES)
def test_mass_balance_every_example(name):
    # the disease presets are checked on the runs the tissue tests make (conftest.DISEASE_RUNS: GVHD to day 35, the
    # fistula to day 175), shared with them: one simulation of each per session
    ds = simulated(example(name, **DISEASE_RUNS.get(name, {})))
    cells = [v for v in ds.data_vars if ds[v].attrs.get("kind") in ("viable", "debris", "cleared")]
    total = sum(ds[v] for v in cells)
    adm = ds["administered"]
    assert float(abs(total - adm).max() / adm.max()) < 1e-9


def test_mass_balance_with_infusion_and_engraftment():
    ds = run(example("human_iv_2e6_per_kg", regimen={"route": "intravenous", "dose": {"cells_per_kg": 2e6},
                                                     "times_days": [0, 2], "infusion_minutes": 60},
                     mechanisms={"engraftment": True}))
    cells = [v for v in ds.data_vars if ds[v].attrs.get("kind") in ("viable", "debris", "cleared")]
    total = sum(ds[v] for v in cells)
    assert float(abs(total - ds["administered"]).max() / ds["administered"].max()) < 1e-9
    t = ds["time"].values
    mid = np.argmin(abs(t - 0.5))
    assert abs(float(ds["administered"][0, mid]) / 1.4e8 - 0.5) < 1e-9  # half the infusion given at 30 min


def test_a_process_that_creates_or_destroys_cells_is_rejected():
    states = (State("a", "cell", "x", "viable"), State("b", "cell", "y", "cleared"))
    leak = Mechanism("leaky", "leaky", (), True, states, {"k": "1/h"}, {},
                     (Process("vanish", "k * a", "a", None, "leaky"),))
    with pytest.raises(DataError, match="creates or destroys cells"):
        Model((leak,), frozenset({"leaky"})).check()
