"""What a ``simulate`` run will hold and take, estimated from the scenario alone before anything runs, and the
refusal of a run beyond what ``simulate`` is for (``mscsim trial`` streams large cohorts to disk)."""

from __future__ import annotations

from dataclasses import dataclass

from .endpoints import load_endpoints
from .errors import InputError
from .io.scenario import Scenario
from .model.core import Model
from .simulation import KINETICS, TISSUE, output_times

# What ``simulate`` is for: a cohort whose full time courses are held in memory and written to one results.nc.
# Beyond this it refuses unless asked (``allow_large``); ``mscsim trial`` streams any number of patients to disk.
MAX_RESULTS_BYTES = 2 * 1024 ** 3
# Patients per second per core, from the README's benchmarks (2-vCPU development machine: the human IV kinetics
# over 28 days, solved exactly, 4,100-9,100 by cohort size, or about 1,900 with compiled RODAS5P where a
# composition is not linear; knee OA over a year, compiled RODAS5P, 350-420, RODAS4 about 240); only for the
# cost estimate shown to a user before a large run, so the kinetics' guide sits between its two solvers (nothing
# is compiled to tell which applies)
PATIENTS_PER_S = {"kinetics": 3000.0, "tissue": 400.0}


@dataclass(frozen=True)
class Cost:
    """What a ``simulate`` run will hold and take, estimated before it starts."""

    patients: int
    times: int
    variables: int
    bytes: int
    seconds: float

    def describe(self) -> str:
        return (f"{self.patients:,} patient(s) x {self.times:,} output times x {self.variables} variables: about "
                f"{_size(self.bytes)} of results in memory and {_duration(self.seconds)} of computing "
                "(at the README's benchmark speed)")


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def _duration(s: float) -> str:
    return f"{s:.2g} s" if s < 120 else f"{s / 60:.2g} min" if s < 7200 else f"{s / 3600:.2g} h"


def estimate_cost(scenario: Scenario) -> Cost:
    """The memory and time a ``simulate`` run of ``scenario`` needs, from its size alone (nothing compiled)."""
    mechanisms = KINETICS + TISSUE if scenario.disease else KINETICS
    states = Model.compose(list(mechanisms), dict(scenario.mechanisms)).states
    signals = sum(s.kind not in ("viable", "debris", "cleared") for s in states)
    variables = len(states) + signals + 4  # each state; the untreated signals; totals and the administered
    if scenario.disease:
        variables += 2 * len(load_endpoints(scenario.disease).spec.endpoints)
    n, times = scenario.population.size, len(output_times(scenario))
    rate = PATIENTS_PER_S["tissue" if scenario.disease else "kinetics"]
    # the states array, the dataset built from it and the file written from that: about three copies
    return Cost(n, times, variables, 3 * 8 * n * times * variables, n / rate * (2 if scenario.disease else 1))


def check_size(scenario: Scenario, *, allow_large: bool = False) -> Cost:
    """Refuse a run beyond what ``simulate`` is for (MAX_RESULTS_BYTES of results in memory) unless
    ``allow_large``; returns the estimate either way."""
    cost = estimate_cost(scenario)
    if cost.bytes > MAX_RESULTS_BYTES and not allow_large:
        raise InputError("population.size", scenario.population.size,
                         f"a cohort whose results fit in {_size(MAX_RESULTS_BYTES)} of memory ({cost.describe()}): "
                         "run large cohorts as a virtual trial (mscsim trial streams patients to disk), shorten the "
                         "output grid, or pass --allow-large to run it anyway", file=scenario.source_file)
    return cost
