"""Shared helpers: bundled example scenarios as dicts, and a one-call simulate."""

from __future__ import annotations

import copy
import json
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
# examples whose Radau reference takes half a minute or more (the twice-weekly GVHD infusions: eight doses; the
# closing diabetic foot ulcer: a minute); their agreement checks are marked slow (benchmarks/slow_checks.py)
SLOW_REFERENCE = {"human_iv_gvhd_twice_weekly", "dfu_topical_sheet_weekly"}


def marked_slow(names, slow) -> list:
    """Parameters for ``pytest.mark.parametrize``: the names in ``slow`` marked slow (run by
    benchmarks/slow_checks.py, not by the default test command)."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


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


_SIMULATED: dict[str, object] = {}

# The disease presets as the tissue tests run them (GVHD to day 35, past its day-28 response; the fistula to day
# 175, past its week-24 remission; knee OA its year); the mass-balance test checks these same runs, through
# ``simulated``, so each is simulated once per session (the GVHD run alone costs about a minute).
DISEASE_RUNS = {"acute_gvhd_iv_2e6_per_kg": {"duration_days": 35}, "perianal_fistula_120e6": {"duration_days": 175},
                "knee_oa_ia_5e7": {}}


def simulated(data: dict):
    """``run(data)``, once per session for each distinct scenario: tests that check the same scenario share one
    result. Read it; never modify it."""
    key = json.dumps(data, sort_keys=True, default=str)
    if key not in _SIMULATED:
        _SIMULATED[key] = run(data)
    return _SIMULATED[key]


def at(ds, name: str, day: float, patient: int = 0) -> float:
    """One patient's ``name`` at the output time nearest ``day``."""
    return float(ds[name].isel(patient=patient).sel(time=day * 24.0, method="nearest"))


def gain(ds, endpoint: str, day: float) -> float:
    """What the cells took away from an endpoint where lower is better (pain, proteinuria), against the same
    patient untreated from the same burn-in."""
    return at(ds, f"{endpoint}_untreated", day) - at(ds, endpoint, day)


def frac(ds, states, t_h, patient=0):
    """Share of the cells administered so far that sit in ``states`` at the output time nearest ``t_h``."""
    import numpy as np

    i = int(np.argmin(abs(ds["time"].values - t_h)))
    return float(sum(ds[s].values[patient, i] for s in states) / ds["administered"].values[patient, i])


@pytest.fixture(scope="session")
def validation_results():
    """Every bundled validation target, run once per session: test_validation.py checks each one,
    test_cli.py prints them through ``mscsim validate --json``."""
    from mscsim.analysis.validation import run_validation

    return run_validation()


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


# --- virtual trials: a small design run once per session, shared by the runner and Dask tests -----------------

TRIAL_DESIGN = "knee_oa_lee_2019"  # two arms, six months of knee OA: the cheapest bundled design to run


def small_design(name: str = TRIAL_DESIGN, n: int = 3, **changes) -> dict:
    """A bundled trial design as a dict, shrunk for tests: its first two arms with ``n`` patients each, no
    resampling pools (``power``, ``prediction``) and no parameter draws (``uncertainty``), the published results of
    the arms kept; ``changes`` replace top-level fields."""
    from mscsim.trials.design import DESIGN_DIR

    data = yaml.safe_load((DESIGN_DIR / f"{name}.yaml").read_text())
    data["arms"] = [{**arm, "n": n} for arm in data["arms"][:2]]
    names = {arm["name"] for arm in data["arms"]}
    data["published"] = [p for p in data.get("published", []) if p["arm"] in names]
    for key in ("power", "prediction", "uncertainty"):
        data.pop(key, None)
    data.update(copy.deepcopy(changes))
    return data


def write_design(data: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def trial_tables(out: Path):
    """A finished trial's per-patient results: (endpoints, patients) as written."""
    import pandas as pd

    return pd.read_parquet(out / "endpoints.parquet"), pd.read_parquet(out / "patients.parquet")


def assert_same_trial_results(out: Path, expected: Path) -> None:
    """endpoints.parquet and patients.parquet of two finished trials are identical, bit for bit."""
    from pandas.testing import assert_frame_equal

    for got, want in zip(trial_tables(out), trial_tables(expected)):
        assert_frame_equal(got, want, check_exact=True)


@pytest.fixture(scope="session")
def trial_reference(tmp_path_factory):
    """The small design run once through the CLI, in this process, with one worker and chunks of 2 patients:
    a namespace with the design file, the output folder and what the command printed."""
    import contextlib
    import io
    import types

    from mscsim.cli import main

    root = tmp_path_factory.mktemp("trial_reference")
    design = write_design(small_design(), root / "design.yaml")
    out = root / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["trial", str(design), "--out", str(out), "--chunk-size", "2"])
    assert rc == 0
    return types.SimpleNamespace(design=design, out=out, stdout=printed.getvalue(), chunk_size=2)
