"""Shared helpers: bundled example scenarios as dicts, and a one-call simulate."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mscsim import scenario_from_dict, simulate
from mscsim.analysis.validation import EXAMPLES

SCENARIO_EXAMPLES = sorted(p.stem for p in EXAMPLES.glob("*.yaml") if "regimen" in (yaml.safe_load(p.read_text()) or {}))
# kinetics-only examples (no tissue model)
KINETICS_EXAMPLES = [n for n in SCENARIO_EXAMPLES
                     if "disease" not in yaml.safe_load((EXAMPLES / f"{n}.yaml").read_text())]
# the tissue (disease) model in the SBML-export and JAX-solver tests: every disease example composes the same
# mechanisms, so one (the knee-OA year) covers the model; each more would add ~30 s of CPU to each file
TISSUE_EXAMPLE = "knee_oa_ia_5e7"
EXPORT_EXAMPLES = KINETICS_EXAMPLES + [TISSUE_EXAMPLE]


def example(name: str, **changes) -> dict:
    """A bundled example as a dict, with nested changes merged in (``patient={'weight_kg': 60}``)."""
    data = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **copy.deepcopy(value)}
        else:
            data[key] = copy.deepcopy(value)
    lot = (data.get("product") or {}).get("lot")
    if lot and not Path(lot).is_absolute():  # lot paths are relative to the scenario file
        data["product"]["lot"] = str(EXAMPLES / lot)
    return data


def run(data: dict):
    return simulate(scenario_from_dict(data))


def frac(ds, states, t_h, patient=0):
    """Share of the cells administered so far that sit in ``states`` at the output time nearest ``t_h``."""
    import numpy as np

    i = int(np.argmin(abs(ds["time"].values - t_h)))
    return float(sum(ds[s].values[patient, i] for s in states) / ds["administered"].values[patient, i])


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES
