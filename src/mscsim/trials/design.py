"""Trial designs (YAML): arms, patients per arm, the virtual population, visits, endpoints, noise, the
comparator/placebo response, dropout, power, and the published results the design reproduces.

Validated at the boundary like scenarios: every error names the file, the field, the value and what is allowed.
Each arm becomes an ordinary Scenario (``arm_scenario``), so a trial runs the same model as ``mscsim simulate``.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from .._schema import NumbersNotBooleans
from ..delivery.routes import Route, is_local
from ..endpoints import load_endpoints
from ..errors import InputError
from ..io._validation import exists, input_error, read_yaml
from ..io.scenario import (Disease, LesionSpec, PatientSpec, ProductSpec, RegimenSpec, Scenario, check_rtol,
                           scenario_from_dict)
from ..model.overrides import ParameterValue
from ..model.parameters import DATA_DIR, Distribution
from .cohort import CohortSpec, load_cohort

DESIGN_DIR = DATA_DIR / "trials"
Comparator = Literal["none", "saline", "hyaluronic_acid", "standard_care", "sham", "open_label"]
Test = Literal["welch_t", "student_t", "mann_whitney", "ancova", "chi2", "fisher"]
DERIVED = {"omeract_oarsi_responder": "knee_osteoarthritis"}  # endpoints computed from others at each visit


class _FieldProblem(ValueError):
    """A cross-field check that failed, with the field it is about (reported as that field, not the top level)."""

    def __init__(self, where: str, value: object, allowed: str):
        super().__init__(f"{where}: got {value!r}; allowed: {allowed}")
        self.where, self.value, self.allowed = where, value, allowed


class _Strict(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EnrolmentCriterion(_Strict):
    """Who is enrolled, judged on a disease endpoint at baseline (the untreated chronic state before the first
    dose): its value lies within [min, max]. A patient who fails is a screen failure: not enrolled, not followed,
    and replaced by the arm's next simulated patient (e.g. ``{endpoint: organ_stage, min: 1}``: active GVHD)."""

    endpoint: str
    min: float | None = None
    max: float | None = None
    source: list[str] = Field(default_factory=list)
    note: str = ""

    @model_validator(mode="after")
    def _range(self):
        if self.min is None and self.max is None:
            raise _FieldProblem("min", None, "'min' and/or 'max': the range of the endpoint at baseline that enrols")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _FieldProblem("min", [self.min, self.max], "min <= max")
        return self

    def describe(self) -> str:
        """The criterion as a person writes it: 'organ_stage >= 1', 'organ_stage 1 to 3'."""
        if self.min is not None and self.max is not None:
            return f"{self.endpoint} {self.min:g} to {self.max:g}"
        return f"{self.endpoint} >= {self.min:g}" if self.min is not None else f"{self.endpoint} <= {self.max:g}"


class ArmSpec(_Strict):
    """One arm: a cell product and regimen, or none (a placebo, saline or active-comparator arm).

    ``comparator`` names the non-specific response every patient of the arm gets (the injection, the
    co-administered hyaluronic acid, or standard care); its size is cited data (data/parameters/trial_response.yaml)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=40)
    label: str = ""
    n: int = Field(ge=2, le=10_000_000, description="patients in the arm (at least 2: a spread needs two)")
    control: bool = False
    comparator: Comparator = "none"
    product: ProductSpec | None = None
    regimen: RegimenSpec | None = None
    route: Route | None = Field(default=None, description="route of a cell-free arm's injection (for its "
                                                          "injection-site reactions)")
    unregulated: bool = Field(default=False, description="a poorly controlled product (raises AE risk, B19)")
    inclusion: list[EnrolmentCriterion] = Field(default_factory=list, description="this arm's own enrolment on "
                                                "disease endpoints at baseline, besides the design's: e.g. the "
                                                "baseline range a published arm started in, where randomisation "
                                                "left the arms unequal")

    @model_validator(mode="after")
    def _cells_or_not(self):
        if (self.product is None) != (self.regimen is None):
            raise ValueError("an arm with cells gives both 'product' and 'regimen'; a cell-free arm gives neither")
        if self.regimen is not None and self.route is not None:
            raise ValueError("'route' is for cell-free arms; a cell arm's route is regimen.route")
        return self

    @property
    def has_cells(self) -> bool:
        return self.product is not None

    @property
    def delivery_route(self) -> str | None:
        return self.regimen.route if self.regimen is not None else self.route


class EndpointSpec(_Strict):
    """How an endpoint is measured in this trial: measurement noise and the test used against control."""

    noise_sd: float | None = Field(default=None, ge=0, description="SD of the measurement error in the endpoint's "
                                   "units (default: the cited value in data/parameters/trial_response.yaml)")
    test: Test | None = None


class PrimarySpec(_Strict):
    endpoint: str
    visit_day: float = Field(gt=0)


class DropoutSpec(_Strict):
    rate_per_year: float = Field(default=0.0, ge=0, le=10, description="constant hazard of leaving the trial")
    source: list[str] = Field(default_factory=list)


class PowerSpec(_Strict):
    """Power and sample size by repeating the trial in silico (resampling per-patient results)."""

    replicates: int = Field(default=500, ge=10, le=100_000)
    sizes: list[int] = Field(default_factory=lambda: [10, 20, 40, 80, 160], min_length=1)
    target: float = Field(default=0.8, gt=0, lt=1)
    pool_per_arm: int | None = Field(default=None, ge=2, le=1_000_000,
                                     description="virtual patients per arm to resample from (default: the trial's)")
    alpha: float = Field(default=0.05, gt=0, lt=1)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v):
        if any(s < 2 for s in v):
            raise ValueError("sample sizes per arm must be >= 2")
        return sorted(set(v))


class PredictionSpec(_Strict):
    """How a published result is compared with the model: the virtual trial is repeated ``replicates`` times at the
    published size by redrawing its patients from a pool of ``pool_per_arm`` simulated patients per arm, and the
    published value is set beside the pool's value and the 95% range of the repeated trials' results."""

    pool_per_arm: int = Field(default=300, ge=2, le=1_000_000)
    replicates: int = Field(default=2000, ge=100, le=100_000)


RATE_STATISTICS = ("rate", "complete_rate", "partial_rate")  # a share of one arm's patients


class PublishedSpec(_Strict):
    """A published result the simulated trial is put beside (per endpoint, visit and arm)."""

    endpoint: str
    visit_day: float = Field(gt=0)
    arm: str
    statistic: Literal["rate", "mean_change", "median_change", "mean", "median", "difference_rate",
                       "difference_mean_change", "complete_rate", "partial_rate"] = Field(
        description="of a response endpoint: 'rate' is the overall (complete or partial) response rate, "
                    "'complete_rate' and 'partial_rate' its complete and partial responses")
    value: float
    events: int | None = Field(default=None, ge=0, description="the count behind a published rate (13 of 14): "
                               "the rate is then the exact share of the arm's size (folded into value at load)")
    ci_low: float | None = None
    ci_high: float | None = None
    source: list[str] = Field(min_length=1)
    note: str = ""

    @model_validator(mode="after")
    def _ranges(self):
        if self.events is not None and self.statistic not in RATE_STATISTICS:
            raise _FieldProblem("events", self.events, "a count only for a rate of one arm (rate, complete_rate, "
                                f"partial_rate), not for a {self.statistic.replace('_', ' ')}")
        if self.ci_low is not None and self.ci_high is not None and self.ci_low > self.ci_high:
            raise _FieldProblem("ci_low", [self.ci_low, self.ci_high], "a confidence interval with ci_low <= ci_high")
        low, high = {"rate": (0.0, 1.0), "complete_rate": (0.0, 1.0), "partial_rate": (0.0, 1.0),
                     "difference_rate": (-1.0, 1.0)}.get(self.statistic, (None, None))
        if low is not None:
            for name in ("value", "ci_low", "ci_high"):
                v = getattr(self, name)
                if v is not None and not low <= v <= high:
                    raise _FieldProblem(name, v, f"a {self.statistic.replace('_', ' ')} within [{low:g}, {high:g}] "
                                        "(a proportion, not a percent)")
        return self

    @property
    def measured(self) -> tuple[str, str]:
        """(endpoint, statistic) as the trial records it: a complete or partial response rate is the rate of the
        response's own 0/1 endpoint (``response_day28_complete``)."""
        if self.statistic in ("complete_rate", "partial_rate"):
            return f"{self.endpoint}_{self.statistic.removesuffix('_rate')}", "rate"
        return self.endpoint, self.statistic


class DesignUncertainty(_Strict):
    """Bands from parameter uncertainty: ``draws`` parameter sets (model, endpoint maps and the trial-level
    responses), each run on the first ``pool_per_arm`` patients of every arm (the same patients in every draw), so
    a draw costs draws x arms x pool_per_arm patients; ``priors`` and ``posterior`` as in a scenario; with
    ``condition: enrolled`` a draw is kept only if the design's reference patient has the disease as enrolled."""

    draws: int = Field(ge=2, le=100_000)
    pool_per_arm: int = Field(default=40, ge=2, le=100_000)
    priors: dict[str, Distribution] = Field(default_factory=dict)
    posterior: str | None = None
    condition: Literal["enrolled", "none"] = "enrolled"


class SolverOptions(_Strict):
    rtol: float = Field(default=1e-6, lt=1e-2, description="trial endpoints need far less than the 1e-8 of "
                                                            "single-patient runs")
    # patients a worker simulates at a time: 512 took 7 % less time a patient than 256 on the knee-OA trial (a
    # chunk's fixed Python cost shared by more patients; 1024 gained 2 % more), any size gives the same numbers
    chunk_size: int = Field(default=512, ge=1, le=100_000)
    method: Literal["rodas5p", "rodas4"] = "rodas5p"  # the Rosenbrock method (scenario solver.method)

    @field_validator("rtol")
    @classmethod
    def _rtol(cls, v):
        return check_rtol(v)


class DesignSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    title: str = Field(min_length=1)
    description: str = ""
    disease: Disease
    source: list[str] = Field(default_factory=list, description="the published trial(s) this design reproduces")
    seed: int = Field(default=20261201, ge=0, lt=2**63)
    species: Literal["human"] = "human"
    population: CohortSpec | str
    patient: PatientSpec = PatientSpec()
    lesion: LesionSpec | None = Field(default=None, description="the organ lesion intravenous cells are to reach "
                                      "(as a scenario's lesion, e.g. {organ: kidney} for lupus nephritis)")
    arms: list[ArmSpec] = Field(min_length=1)
    visits_days: list[float] = Field(min_length=1)
    endpoints: dict[str, EndpointSpec] = Field(min_length=1)
    inclusion: list[EnrolmentCriterion] = Field(default_factory=list, description="enrolment on disease endpoints "
                                                "at baseline (covariate criteria belong to the population)")
    screen_reserve: float = Field(default=0.5, ge=0.0, le=20.0, description="patients simulated beyond an arm's "
                                  "size to replace screen failures when the design or the arm enrols on baseline "
                                  "endpoints, as a share of the arm's size (a run that still falls short says so)")
    primary: PrimarySpec
    dropout: DropoutSpec = DropoutSpec()
    power: PowerSpec | None = None
    published: list[PublishedSpec] = Field(default_factory=list)
    prediction: PredictionSpec | None = Field(default=None, description="repeat the trial in silico for the "
                                              "published comparison (default: one trial of the published size)")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict, description="what-if overrides of model "
                                                  "parameters: a number in its documented units, or {value, units}")
    allow_out_of_bounds: list[str] = Field(default_factory=list, description="overridden parameters that may lie "
                                           "outside their documented bounds (recorded in the manifest)")
    uncertainty: DesignUncertainty | None = Field(default=None, description="bands from parameter uncertainty")
    solver: SolverOptions = SolverOptions()

    @field_validator("visits_days")
    @classmethod
    def _visits(cls, v):
        if any(d <= 0 for d in v):
            raise ValueError("visits are days after the first dose, > 0 (baseline, day 0, is always measured)")
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self):
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise _FieldProblem("arms", names, "arms with unique names")
        if sum(a.control for a in self.arms) > 1:
            raise _FieldProblem("arms", [a.name for a in self.arms if a.control], "at most one arm with control: true")
        if self.primary.endpoint not in self.endpoints:
            raise _FieldProblem("primary.endpoint", self.primary.endpoint, f"one of endpoints {list(self.endpoints)}")
        if self.primary.visit_day not in self.visits_days:
            raise _FieldProblem("primary.visit_day", self.primary.visit_day, f"one of visits_days {self.visits_days}")
        _check_citations("source", self.source)
        _check_citations("dropout.source", self.dropout.source)
        for i, c in enumerate(self.inclusion):
            _check_citations(f"inclusion.{i}.source", c.source)
        for a, arm in enumerate(self.arms):
            for i, c in enumerate(arm.inclusion):
                _check_citations(f"arms.{a}.inclusion.{i}.source", c.source)
        control = self.control
        for i, p in enumerate(self.published):
            if p.arm not in names:
                raise _FieldProblem(f"published.{i}.arm", p.arm, f"one of the arms {names}")
            _check_citations(f"published.{i}.source", p.source)
            if p.statistic.startswith("difference"):
                if control is None:
                    raise _FieldProblem(f"published.{i}.statistic", p.statistic, "a difference against the control "
                                        "arm, so one arm needs control: true (or a statistic of one arm: rate, mean, "
                                        "mean_change, median, median_change)")
                if p.arm == control.name:
                    raise _FieldProblem(f"published.{i}.arm", p.arm, f"an arm other than the control "
                                        f"({control.name}): a difference is taken against it")
            if p.endpoint not in self.endpoints:
                raise _FieldProblem(f"published.{i}.endpoint", p.endpoint, f"one of endpoints {list(self.endpoints)}")
            if p.visit_day not in self.visits_days:
                raise _FieldProblem(f"published.{i}.visit_day", p.visit_day, f"one of visits_days {self.visits_days}")
            if p.events is not None:
                n = next(a.n for a in self.arms if a.name == p.arm)
                # A rate printed as a whole percent is within 0.005 of its count's share; beyond that the two disagree.
                if p.events > n or abs(p.value - p.events / n) > 0.005 + 1e-12:
                    raise _FieldProblem(f"published.{i}.events", p.events, f"a count of the arm's {n} patients "
                                        f"whose share ({p.events}/{n}) rounds to the published value {p.value:g}")
                # Compared as the exact share: 13/14 is 0.92857, which a rounded 0.929 would put past the top of an
                # interval of 14-patient trials whose highest result is 13/14. The count is folded into the value
                # (and cleared), so a copy of the design with resized arms (calibration pools) is not rechecked.
                self.published[i] = p.model_copy(update={"value": p.events / n, "events": None})
        return self

    @property
    def control(self) -> ArmSpec | None:
        """The arm with ``control: true`` (None when no arm is one)."""
        return next((a for a in self.arms if a.control), None)

    @property
    def duration_days(self) -> float:
        last_dose = max((max(a.regimen.times_days) for a in self.arms if a.regimen), default=0.0)
        return max(max(self.visits_days), last_dose)

    @property
    def n_patients(self) -> int:
        return sum(a.n for a in self.arms)

    def arm_offsets(self) -> dict[str, int]:
        """First global patient id of each arm (arms hold consecutive ids, in the order listed)."""
        out, k = {}, 0
        for a in self.arms:
            out[a.name] = k
            k += a.n
        return out

    @cached_property
    def cohort(self) -> CohortSpec:
        return load_cohort(self.population) if isinstance(self.population, str) else self.population

    def digest(self) -> str:
        """A fingerprint of everything that changes the numbers (a resumed trial must match it); a design without an
        organ lesion keeps the fingerprint it had before designs could name one."""
        exclude = {"lesion"} if self.lesion is None else None
        return hashlib.sha256(self.model_dump_json(exclude=exclude).encode()).hexdigest()[:16]


# the image guidance of a cell-free arm's nominal (never dosed) local regimen: one with accuracy data at the site
NOMINAL_GUIDANCE = {"intradiscal": "fluoroscopy", "topical": "direct_vision"}


def arm_scenario(design: DesignSpec, arm: ArmSpec) -> Scenario:
    """The arm as an ordinary scenario: the design's patient defaults, the arm's product and regimen, output at
    baseline and the visits. A cell-free arm gets a nominal regimen that the runner never doses."""
    regimen = arm.regimen if arm.regimen is not None else RegimenSpec(
        route=arm.route or "intravenous", dose={"cells": 1.0}, times_days=[0.0],
        guidance=(NOMINAL_GUIDANCE.get(arm.route, "ultrasound") if arm.route and is_local(arm.route) else None))
    data = {
        "name": f"{design.name}:{arm.name}",
        "description": arm.label or design.title,
        "species": design.species,
        "disease": design.disease,
        "patient": design.patient.model_dump(),
        **({"lesion": design.lesion.model_dump()} if design.lesion is not None else {}),
        "product": (arm.product or ProductSpec()).model_dump(),
        "regimen": regimen.model_dump(),
        "duration_days": design.duration_days,
        "parameters": {k: v.model_dump() for k, v in design.parameters.items()},
        "allow_out_of_bounds": list(design.allow_out_of_bounds),
        "population": {"size": arm.n, "variability": True},
        "outputs": {"times_hours": [d * 24.0 for d in design.visits_days]},
        "solver": {"kind": "batched", "rtol": design.solver.rtol, "chunk_size": design.solver.chunk_size,
                   "method": design.solver.method},
        "seed": design.seed,
    }
    return scenario_from_dict(data, file=f"arm '{arm.name}'")


def _check_endpoints(design: DesignSpec, file: str | None) -> None:
    eps = load_endpoints(design.disease)
    known = set(eps.spec.endpoints) | set(eps.spec.responses) | {k for k, v in DERIVED.items()
                                                                   if v == design.disease}
    for name in design.endpoints:
        if name not in known:
            raise InputError(f"endpoints.{name}", name, f"endpoints of disease '{design.disease}': {sorted(known)}",
                             file=file)
    for i, p in enumerate(design.published):
        if p.statistic in ("complete_rate", "partial_rate") and p.endpoint not in eps.spec.responses:
            raise InputError(f"published.{i}.statistic", p.statistic, f"'rate' (or a mean, median or change) for "
                             f"{p.endpoint}; complete and partial rates are of a response: "
                             f"{sorted(eps.spec.responses)}", file=file)
    for name in design.endpoints:
        resp = eps.spec.responses.get(name)
        if resp is not None and resp.kind.endswith("reduction_response") and resp.of not in design.endpoints:
            raise InputError(f"endpoints.{name}", name, f"a design that also lists '{resp.of}' (the endpoint "
                             f"'{name}' is judged on, as the trial measures it)", file=file)
    criteria = [(f"inclusion.{i}", c) for i, c in enumerate(design.inclusion)]
    criteria += [(f"arms.{a}.inclusion.{i}", c) for a, arm in enumerate(design.arms) for i, c in enumerate(arm.inclusion)]
    for where, crit in criteria:
        if crit.endpoint not in eps.spec.endpoints:
            raise InputError(f"{where}.endpoint", crit.endpoint, f"an endpoint of disease '{design.disease}' "
                             f"measured at baseline: {sorted(eps.spec.endpoints)}", file=file)
        low, high = eps.spec.endpoints[crit.endpoint].range or (float("-inf"), float("inf"))
        lo = low if crit.min is None else crit.min
        hi = high if crit.max is None else crit.max
        if lo > high or hi < low:
            raise InputError(where, {"min": crit.min, "max": crit.max}, f"a range that meets "
                             f"{crit.endpoint}'s values [{low:g}, {high:g}]; no patient could be enrolled", file=file)


def design_from_dict(data: dict, *, file: str | None = None) -> DesignSpec:
    """Validate a trial design mapping; errors name the field, the value and what is allowed."""
    if not isinstance(data, dict):
        raise InputError("(top level)", type(data).__name__, "a mapping of design fields", file=file)
    try:
        design = DesignSpec.model_validate(data)
    except ValidationError as exc:
        found = next((e for e in exc.errors() if isinstance((e.get("ctx") or {}).get("error"), _FieldProblem)), None)
        if found is not None:  # a cross-field check: name the field, not the whole design (or the whole item)
            problem = found["ctx"]["error"]
            where = ".".join([*(str(x) for x in found["loc"]), problem.where])
            raise InputError(where, problem.value, problem.allowed, file=file) from None
        raise input_error(exc, file, DesignSpec) from None
    _check_endpoints(design, file)
    try:
        design.cohort
    except InputError as exc:
        if exc.file and exc.file != file:  # a problem inside the cohort's own file: name that file and field
            raise InputError(exc.where, exc.value, f"{exc.allowed} (the cohort named by 'population' in "
                             f"{file or 'the design'})", file=exc.file) from None
        raise InputError(f"population ({exc.where})", exc.value, exc.allowed, file=file) from None
    from ..simulation import check_scenario

    for i, arm in enumerate(design.arms):
        try:
            scenario = arm_scenario(design, arm)
        except InputError as exc:
            raise InputError(f"arms.{i} ({arm.name}: {exc.where})", exc.value, exc.allowed, file=file) from None
        try:  # every name resolved against the model's data (overrides, guidance, ...) before anything runs
            check_scenario(scenario, file=file)
        except InputError as exc:
            where = exc.where if exc.where.split(".")[0] in ("parameters", "allow_out_of_bounds") else \
                f"arms.{i} ({arm.name}: {exc.where})"
            raise InputError(where, exc.value, exc.allowed, file=file) from None
    return design


def load_design(path_or_name: str | Path) -> tuple[DesignSpec, Path]:
    """A design file, or the name of a bundled design (data/trials/<name>.yaml)."""
    path = Path(path_or_name)
    if not exists(path):
        bundled = DESIGN_DIR / f"{path_or_name}.yaml"
        if not exists(bundled):
            names = sorted(p.stem for p in DESIGN_DIR.glob("*.yaml"))
            raise InputError("DESIGN", str(path_or_name), f"a path to a trial design YAML file or a bundled "
                             f"design: {names}")
        path = bundled
    data = read_yaml(path)
    pop = data.get("population") if isinstance(data, dict) else None
    if isinstance(pop, str) and pop.endswith((".yaml", ".yml")) and not Path(pop).is_absolute() \
            and exists(path.parent / pop):  # a cohort file beside the design, as a lot's FCS files are
        data = {**data, "population": str((path.parent / pop).resolve())}
    design = design_from_dict(data, file=str(path))
    u = design.uncertainty
    if u is not None and u.posterior and u.posterior != "prior" and not Path(u.posterior).is_absolute():
        design = design.model_copy(update={"uncertainty": u.model_copy(
            update={"posterior": str((path.parent / u.posterior).resolve())})})
    return design, path


def bundled_designs() -> list[str]:
    return sorted(p.stem for p in DESIGN_DIR.glob("*.yaml"))


def design_record(design: DesignSpec) -> dict:
    """The design as plain JSON-able data (recorded in every output)."""
    return json.loads(design.model_dump_json())


def _check_citations(field: str, keys) -> None:
    """Every citation key of a design in the bibliography (data/references), caught when the design is loaded."""
    from difflib import get_close_matches

    from ..model.references import bibliography

    known = bibliography()
    for j, key in enumerate(keys):
        if key not in known:
            close = get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _FieldProblem(f"{field}.{j}", key, f"{hint}a citation key defined in mscsim's bibliography "
                                "(data/references/*.yaml; `mscsim citations` lists a run's)")
