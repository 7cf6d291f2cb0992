"""Scalar outputs for sensitivity analysis: one number per parameter set, from a scenario, a trial design or a
validation target, evaluated for many parameter sets at once through the batched solver.

- A scenario: any numeric column of its summary.csv (``pain_vas_day180``, ``pain_vas_effect_day180`` = treated
  minus untreated, ``viable_target_cells_7d``, ``target_exposure_cell_days``, ...) or a tissue state at a visit
  (``damage_day28``, ``structure_untreated_day168``, ``structure_effect_day168``), averaged over the scenario's
  patients.
- A trial design: ``difference:ENDPOINT_dayD[:ARM]`` (an arm minus control in mean change from baseline, or in
  rate), ``change:ENDPOINT_dayD:ARM`` (mean change) and ``mean:ENDPOINT_dayD:ARM`` (mean or rate), over the first
  ``patients`` patients of each arm (the same patients for every parameter set).
- A validation target (``mscsim sensitivity validation --output TARGET_ID``): the simulated value of the target.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import xarray as xr

from ..errors import InputError
from ..io.outputs import summary_table
from ..io.scenario import Scenario
from ..uncertainty.evaluate import run_sets, scenario_space
from ..uncertainty.priors import ParameterSpace


@dataclass
class FunctionTarget:
    """Any function of a parameter set (rows of values in ``space`` order) -> one number per row; the pipeline's
    test double is a real function with known Sobol indices (Ishigami), not a stand-in for the model."""

    space: ParameterSpace
    output: str
    fn: Callable[[np.ndarray], np.ndarray]
    units: str = ""
    kind: str = "function"

    def prepare(self) -> None:
        pass

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(np.atleast_2d(values)), dtype=float)

    def record(self) -> dict:
        return {"kind": self.kind, "output": self.output,
                "parameters": {p.name: p.dist.model_dump(exclude_none=True) for p in self.space.parameters}}

    def citation_keys(self) -> list[str]:
        return []


# --- scenarios ---------------------------------------------------------------------------------------------------

_STATE_AT = re.compile(r"^(?P<state>[a-z0-9_]+?)(?P<untreated>_untreated)?_day(?P<day>\d+(?:\.\d+)?)$")


def scenario_outputs(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Every scalar output of simulated rows: numeric summary columns and tissue states at the disease's visits."""
    table = summary_table(ds)
    out = {c: table[c].to_numpy(dtype=float) for c in table.columns
           if c != "patient" and table[c].dtype.kind in "fiu"}
    visits = [float(v) for v in ds.attrs.get("endpoint_visits_days", "").split(",") if v]
    td = ds["time_days"].values
    for name, var in ds.data_vars.items():
        if var.attrs.get("kind") == "signal" and var.dims == ("patient", "time"):
            for day in visits:
                if day <= td[-1] + 1e-9:
                    out[f"{name}_day{day:g}"] = var.values[:, int(np.argmin(np.abs(td - day)))]
    for key in list(out):  # a tissue state's treatment effect: treated minus untreated, same patient, same day
        head, sep, day = key.rpartition("_day")
        if sep and f"{head}_untreated_day{day}" in out and f"{head}_effect_day{day}" not in out \
                and not head.endswith("_untreated"):
            out[f"{head}_effect_day{day}"] = out[key] - out[f"{head}_untreated_day{day}"]
    return out


@dataclass
class ScenarioTarget:
    scenario: Scenario
    output: str
    space: ParameterSpace
    units: str = ""
    kind: str = "scenario"

    def prepare(self) -> None:
        from ..simulation import resolve_setup

        resolve_setup(self.scenario)  # compile the model once, before any worker is forked

    @property
    def needs_untreated(self) -> bool:
        return "_untreated" in self.output or "_effect_day" in self.output

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        run = run_sets(self.scenario, self.space, values, with_untreated=self.needs_untreated)
        outputs = scenario_outputs(run.dataset())
        v = outputs[self.output].reshape(run.n_sets, run.n_patients)
        v = np.where(run.failed[:, None], np.nan, v)
        return v.mean(axis=1)

    def record(self) -> dict:
        return {"kind": self.kind, "output": self.output, "scenario": json.loads(self.scenario.model_dump_json()),
                "seed": self.scenario.seed}

    def citation_keys(self) -> list[str]:
        from ..simulation import resolve_setup

        return resolve_setup(self.scenario).citation_keys()


def scenario_target(scenario: Scenario, output: str) -> ScenarioTarget:
    """A scenario's output, checked against what its nominal run writes (an unknown name is an InputError)."""
    priors = scenario.uncertainty.priors if scenario.uncertainty else {}
    space = scenario_space(scenario, priors)
    target = ScenarioTarget(scenario, output, space)
    one = scenario.model_copy(update={"population": scenario.population.model_copy(update={"size": 1})})
    run = run_sets(one, space, space.nominal()[None, :], with_untreated=scenario.disease is not None)
    ds = run.dataset()
    names = scenario_outputs(ds)
    if output not in names:
        shown = sorted(names)
        raise InputError("--output", output, f"an output of scenario '{scenario.name}': {shown[:25]}"
                         + (f" ... ({len(shown)} in all)" if len(shown) > 25 else ""))
    m = _STATE_AT.match(output)
    base = m.group("state") if m and m.group("state") in ds else output.split("_day")[0].removesuffix("_effect")
    target.units = str(ds[base].attrs.get("units", "")) if base in ds else ""
    return target


# --- trial designs -----------------------------------------------------------------------------------------------

_DESIGN_OUTPUT = re.compile(r"^(?P<stat>difference|change|mean):(?P<endpoint>[a-z0-9_]+)_day(?P<day>\d+(?:\.\d+)?)"
                            r"(?::(?P<arm>[A-Za-z][A-Za-z0-9_]*))?$")


@dataclass
class DesignTarget:
    design: object  # DesignSpec
    output: str
    space: ParameterSpace
    patients: int
    statistic: str = ""
    endpoint: str = ""
    day: float = 0.0
    arm: str = ""
    units: str = ""
    kind: str = "design"

    def prepare(self) -> None:
        from ..trials.runner import _setup

        for a in self.design.arms:
            _setup(self.design, a.name)

    def arms(self) -> list:
        names = {self.arm} | ({self.design.control.name} if self.statistic == "difference" else set())
        return [a for a in self.design.arms if a.name in names]

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        from ..trials.observe import endpoint_kinds
        from ..trials.uncertain import arm_sets

        values = np.atleast_2d(values)
        keys = np.arange(len(values))
        binary = endpoint_kinds(self.design)[self.endpoint] == "binary"
        column = "value" if binary or self.statistic == "mean" else "change"
        means = {}
        for arm in self.arms():
            table, failed = arm_sets(self.design, arm, self.space, values, keys, self.patients)
            at = table[(table["endpoint"] == self.endpoint) & (table["visit_day"] == self.day)] if len(table) else table
            m = at.groupby("draw")[column].mean() if len(at) else None
            means[arm.name] = np.array([m.get(k, np.nan) if m is not None else np.nan for k in keys])
            means[arm.name][failed] = np.nan
        if self.statistic == "difference":
            return means[self.arm] - means[self.design.control.name]
        return means[self.arm]

    def record(self) -> dict:
        return {"kind": self.kind, "output": self.output, "design": json.loads(self.design.model_dump_json()),
                "patients_per_arm": self.patients, "seed": self.design.seed}

    def citation_keys(self) -> list[str]:
        from ..trials.trial import citation_keys

        return citation_keys(self.design)


def design_target(design, output: str, patients: int) -> DesignTarget:
    from ..trials.uncertain import design_space

    m = _DESIGN_OUTPUT.match(output)
    eps, days = sorted(design.endpoints), design.visits_days
    treated = [a.name for a in design.arms if not a.control]
    example = f"difference:{design.primary.endpoint}_day{design.primary.visit_day:g}"
    if m is None:
        raise InputError("--output", output, f"for a trial design: difference:ENDPOINT_dayD[:ARM], change:ENDPOINT_dayD:"
                         f"ARM or mean:ENDPOINT_dayD:ARM, e.g. {example} (endpoints {eps}, visits {days}, arms "
                         f"{[a.name for a in design.arms]})")
    stat, endpoint, day, arm = m.group("stat"), m.group("endpoint"), float(m.group("day")), m.group("arm")
    if endpoint not in design.endpoints:
        raise InputError("--output", output, f"an endpoint of design '{design.name}': {eps}")
    if day not in days:
        raise InputError("--output", output, f"a visit of design '{design.name}' (days {days})")
    if stat == "difference":
        if design.control is None:
            raise InputError("--output", output, f"change: or mean: outputs (design '{design.name}' has no control)")
        arm = arm or (treated[0] if treated else None)
        if arm not in treated:
            raise InputError("--output", output, f"an arm compared with the control: {treated}")
    elif arm not in [a.name for a in design.arms]:
        raise InputError("--output", output, f"an arm of design '{design.name}': {[a.name for a in design.arms]}")
    if patients < 2:
        raise InputError("--patients", patients, "an integer >= 2 (patients per arm for each parameter set)")
    from ..endpoints import load_endpoints

    spec = load_endpoints(design.disease).spec
    units = spec.endpoints[endpoint].units if endpoint in spec.endpoints else "1"
    return DesignTarget(design, output, design_space(design), patients, stat, endpoint, day, arm, units)


# --- validation targets ------------------------------------------------------------------------------------------

_SCALAR_MEASURES = ("fraction_of_dose", "fraction_of_viable_dose", "max_fraction_of_dose", "time_above", "placement",
                    "benefit_ratio", "ratio")


@dataclass
class ValidationTarget:
    target: dict
    output: str
    space: ParameterSpace
    scenarios: dict = field(default_factory=dict)  # role -> Scenario ("main", or "with"/"compare" for a ratio)
    units: str = ""
    kind: str = "validation"

    def prepare(self) -> None:
        from ..simulation import resolve_setup

        for sc in self.scenarios.values():
            resolve_setup(sc)

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        from .validation import _at, measure

        values = np.atleast_2d(values)
        m = self.target["measure"]
        runs = {k: run_sets(sc, self.space, values, count=1, with_untreated=sc.disease is not None)
                for k, sc in self.scenarios.items()}
        sets = {k: r.dataset() for k, r in runs.items()}
        failed = np.any([r.failed for r in runs.values()], axis=0)
        out = np.full(len(values), np.nan)
        for i in range(len(values)):
            if failed[i]:
                continue
            if m["kind"] == "ratio":
                hi = _at(sets["with"].isel(patient=[i]), m["states"], m["time_h"])[0]
                lo = _at(sets["compare"].isel(patient=[i]), m["states"], m["time_h"])[0]
                out[i] = hi / lo
            else:
                out[i] = float(measure(sets["main"].isel(patient=[i]), m))
        return out

    def record(self) -> dict:
        return {"kind": self.kind, "output": self.output, "target": {k: v for k, v in self.target.items()
                                                                    if not k.startswith("_")}}

    def citation_keys(self) -> list[str]:
        return [self.target["source"]]


def validation_target(target_id: str) -> ValidationTarget:
    from ..io.scenario import scenario_from_dict
    from .validation import _deep_merge, _scenario_dict, load_targets

    targets = {t["id"]: t for t in load_targets()}
    usable = sorted(i for i, t in targets.items() if t["measure"]["kind"] in _SCALAR_MEASURES)
    if target_id not in targets:
        raise InputError("--output", target_id, f"the id of a validation target: {usable}")
    t = targets[target_id]
    if t["measure"]["kind"] not in _SCALAR_MEASURES:
        raise InputError("--output", target_id, f"a validation target with a numeric, simulated measure (in vitro "
                         f"co-culture and categorical targets are not supported): {usable}")
    base = _scenario_dict(t["scenario"])
    if t["measure"]["kind"] == "ratio":
        dicts = {"with": _deep_merge(base, t["with"]), "compare": _deep_merge(base, t["compare"])}
    else:
        dicts = {"main": base}
    scenarios = {k: scenario_from_dict({**d, "population": {"size": 1, "variability": False}},
                                       file=f"validation target {target_id}") for k, d in dicts.items()}
    spaces = [scenario_space(sc) for sc in scenarios.values()]
    params = {p.name: p for sp in spaces for p in sp.parameters}
    space = ParameterSpace(tuple(params[n] for n in sorted(params)))
    return ValidationTarget(t, target_id, space, scenarios, str(t.get("units", "")))
