"""Scenario files (YAML) and their schema: product, regimen, species/patient, duration, outputs.

Validation happens here, at the boundary: every error names the file, the field, the bad value and
what is allowed, and nothing runs on an invalid scenario.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .._schema import NumbersNotBooleans
from ..delivery.routes import ORGAN_ROUTES, Guidance, LesionOrgan, Route, Site, is_local, lesion_site
from ..errors import InputError
from ..model.overrides import ParameterValue
from ..model.parameters import Distribution
from ._validation import FieldProblem, exists, input_error, read_yaml

Species = Literal["human", "mouse", "rat"]


MIN_RTOL = 1e-13  # float64 carries ~16 digits: a tighter relative tolerance cannot be met, only chased
MIN_DURATION_DAYS = 1.0 / 1440.0  # one minute: the first output after a dose
# Events (doses, the ends of infusions, the end of the run) closer than a second are not separate events: the solvers
# would integrate a stretch shorter than a step can resolve (a dose at 5e-324 d made the batched solver shrink its
# step to nothing); give such doses as one time instead.
MIN_EVENT_GAP_HOURS = 1.0 / 3600.0


class _Strict(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Disease = Literal["knee_osteoarthritis", "acute_gvhd", "perianal_fistula", "lumbar_disc_degeneration", "tendinopathy",
                  "diabetic_foot_ulcer", "lupus_nephritis"]


class ProductSpec(_Strict):
    """The cell product. Give the fields directly, or ``lot: LOT.yaml`` to take them from a QC'd lot.

    ``kind: vesicles`` is a cell-free product: MSC extracellular vesicles dosed as particles (B13)."""

    kind: Literal["cells", "vesicles"] = "cells"
    source: Literal["bone_marrow", "adipose", "umbilical_cord"] = "bone_marrow"
    donor: Literal["autologous", "allogeneic"] = "autologous"
    passage: int | None = Field(default=None, ge=0, le=50)
    population_doublings: float | None = Field(default=None, ge=0, le=100)
    viability: float = Field(default=0.95, gt=0, le=1, description="fraction of viable cells, 0-1")
    cryo_state: Literal["fresh", "thawed", "recovered"] = "fresh"
    lot: str | None = None
    allow_unreleased: bool = False


class DoseSpec(_Strict):
    """One dose: a cell count, cells per kg of body weight, or (vesicle products) a particle count."""

    cells: float | None = Field(default=None, ge=1, le=1e12)
    cells_per_kg: float | None = Field(default=None, gt=0, le=1e10)
    particles: float | None = Field(default=None, ge=1, le=1e16)

    @model_validator(mode="after")
    def _one_of(self):
        if sum(x is not None for x in (self.cells, self.cells_per_kg, self.particles)) != 1:
            raise ValueError("give exactly one of 'cells', 'cells_per_kg' or 'particles'")
        return self


class RegimenSpec(_Strict):
    """Route, site, guidance, dose and dosing times (days from the first dose)."""

    route: Route
    site: Site | None = None
    guidance: Guidance | None = None
    approach: str | None = None
    dose: DoseSpec
    times_days: list[float] = Field(default_factory=lambda: [0.0])
    infusion_minutes: float = Field(default=0.0, ge=0, le=24 * 60)

    @field_validator("infusion_minutes")
    @classmethod
    def _infusion(cls, v):
        if 0 < v < MIN_EVENT_GAP_HOURS * 60:
            raise ValueError("0 (a bolus) or an infusion of at least one second")
        return v

    @field_validator("times_days")
    @classmethod
    def _times(cls, v):
        if not v:
            raise ValueError("at least one dose time is needed")
        if any(t < 0 for t in v):
            raise ValueError("dose times must be >= 0 days")
        if len(v) > 1000:
            raise ValueError("at most 1000 dose times")
        unsorted = next((i for i in range(1, len(v)) if v[i] < v[i - 1]), None)
        if unsorted is not None:
            raise ValueError(f"dose times must be in increasing order (they are not sorted for you): "
                             f"{v[unsorted - 1]:g} comes before {v[unsorted]:g}")
        return v

    @model_validator(mode="after")
    def _route_rules(self):
        if is_local(self.route) and self.infusion_minutes:
            raise ValueError(f"infusion_minutes applies to intravenous dosing, not to route '{self.route}'")
        if not is_local(self.route) and self.guidance is not None:
            raise ValueError(f"guidance applies to local injections; leave it out for route '{self.route}'")
        return self


class LesionSpec(_Strict):
    """Where the lesion is: the organ whose blood flow, capillary bed and inflammation decide how many
    intravenous cells reach it (``systemic``: skin or another organ, the systemic_lesion site). Routes
    ``intralesional`` (direct injection) and ``intra_arterial`` (the organ's artery) deliver into the organ itself
    (``ORGAN_ROUTES`` names the organs each reaches)."""

    organ: LesionOrgan = "systemic"


class PatientSpec(_Strict):
    """The patient (or animal): body weight, the target's inflammation, and the environment that listens (B15).

    Without a ``disease``, ``target_inflammation`` is the chemokine signal S_target the kinetics use. With a
    disease the tissue model makes that signal itself, and ``baseline_inflammation`` scales the disease's drive."""

    weight_kg: float | None = Field(default=None, ge=0.005, le=400, description="body weight; the species' own "
                                    "plausible range (body_weight bounds in its data file) is checked too")
    target_inflammation: float = Field(default=0.0, ge=0, le=100,
                                       description="S_target: 0 quiet, 1 the inflamed reference")
    age_years: float | None = Field(default=None, ge=0, le=120)
    smoker: bool = False
    vascular_disease: bool = False
    nutrition: Literal["adequate", "poor"] = "adequate"
    baseline_inflammation: float = Field(default=1.0, ge=0, le=10,
                                         description="multiplier of the disease's inflammatory drive (1 typical)")
    kellgren_lawrence: int | None = Field(default=None, ge=1, le=4, description="knee OA radiographic grade")
    gvhd_grade: Literal["II", "III", "IV"] | None = None


class PopulationSpec(_Strict):
    """Virtual patients: how many, and whether their parameters vary (between-patient distributions)."""

    size: int = Field(default=1, ge=1, le=10_000_000)
    variability: bool = False


class OutputSpec(_Strict):
    times_hours: list[float] | None = None
    points_per_day: int = Field(default=4, ge=1, le=96)

    @field_validator("times_hours")
    @classmethod
    def _times(cls, v):
        if v is None:
            return v
        if not v or any(t < 0 for t in v):
            raise ValueError("times_hours must be a non-empty list of times >= 0")
        if len(v) > 100_000:
            raise ValueError("at most 100,000 output times")
        if max(v) <= 0:
            raise ValueError("at least one output time after 0 h (a time course needs more than its start)")
        unsorted = next((i for i in range(1, len(v)) if v[i] <= v[i - 1]), None)
        if unsorted is not None:
            raise ValueError(f"output times must be in increasing order without repeats (they are not sorted for "
                             f"you): {v[unsorted - 1]:g} comes before {v[unsorted]:g}")
        return v


class SolverSpec(_Strict):
    """``batched``: the compiled engine (a Rosenbrock method per patient in machine code; for a linear model, the
    whole-body kinetics without a tissue, the exact solution from each patient's eigendecomposition); ``numpy``: the
    same method in NumPy;
    ``reference``: SciPy Radau, one patient at a time; ``jax``: the JAX solver (an extra). ``baseline``: how a
    disease's untreated chronic state is found (``steady_state``: solved directly, integrating only where a
    patient has no stable steady state; ``integration``: a 1,000-day untreated run). ``max_steps``: the attempted
    steps a patient may take between two events before its solve is reported as failed (the others go on).
    ``method``: the Rosenbrock method of the ``batched``, ``numpy`` and ``jax`` solvers (``rodas5p``, Steinebach
    2023, order 5: about half the steps of ``rodas4``, Hairer & Wanner 1996, order 4, the engine's method before
    2026-12-07)."""

    kind: Literal["batched", "numpy", "reference", "jax"] = "batched"
    method: Literal["rodas5p", "rodas4"] = "rodas5p"
    rtol: float = Field(default=1e-8, lt=1e-2, description=f"relative tolerance, {MIN_RTOL:g} to 1e-2")
    baseline: Literal["steady_state", "integration"] = "steady_state"
    max_steps: int = Field(default=200_000, ge=100, le=10_000_000)  # attempted steps per patient and segment
    chunk_size: int = Field(default=5000, ge=1, le=1_000_000)

    @field_validator("rtol")
    @classmethod
    def _rtol(cls, v):
        return check_rtol(v)


def check_rtol(v: float) -> float:
    """A relative tolerance float64 arithmetic can meet (scenarios and trial designs alike)."""
    if not v >= MIN_RTOL:
        raise ValueError(f"a relative tolerance >= {MIN_RTOL:g} (float64 arithmetic cannot meet a tighter one)")
    return v


class UncertaintySpec(_Strict):
    """Bands from parameter uncertainty: ``draws`` parameter sets from the uncertainty distributions of the data
    files (``priors`` replaces a parameter's distribution by name; ``posterior`` is a CSV/Parquet file of
    parameter sets, one row per draw, or an ``mscsim calibrate`` posterior.nc; by default the disease's bundled
    calibration posterior, ``prior`` for the priors alone). With ``condition: enrolled`` (the default for a
    disease) a draw is kept only if its untreated reference patient has the disease as trials enrol it
    (data/endpoints/<disease>.yaml, 'enrolled')."""

    draws: int = Field(ge=2, le=100_000)
    priors: dict[str, Distribution] = Field(default_factory=dict)
    posterior: str | None = None
    condition: Literal["enrolled", "none"] = "enrolled"


class Scenario(_Strict):
    """A whole run: who, what product, how delivered, for how long, what to record."""

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    species: Species = "human"
    disease: Disease | None = None
    patient: PatientSpec = PatientSpec()
    lesion: LesionSpec | None = None
    product: ProductSpec = ProductSpec()
    regimen: RegimenSpec
    duration_days: float = Field(le=3650)
    mechanisms: dict[str, bool] = Field(default_factory=dict)
    parameters: dict[str, ParameterValue] = Field(default_factory=dict, description="what-if overrides: a number "
                                                  "in the parameter's documented units, or {value, units}")
    allow_out_of_bounds: list[str] = Field(default_factory=list, description="overridden parameters that may lie "
                                           "outside their documented bounds (recorded in every output)")
    population: PopulationSpec = PopulationSpec()
    outputs: OutputSpec = OutputSpec()
    solver: SolverSpec = SolverSpec()
    seed: int = Field(default=20261122, ge=0, lt=2**63)
    label: str | None = Field(default=None, description="an imaging label on the cells (e.g. 111In-oxine): adds "
                              "what imaging sees, each organ's share of the injected activity")
    _source_file: str | None = PrivateAttr(default=None)

    @field_validator("label")
    @classmethod
    def _known_label(cls, v):
        from ..model.labels import available_labels

        if v is not None and v not in available_labels():
            raise ValueError(f"one of {available_labels()} (labels with data in data/parameters/labels.yaml)")
        return v

    @field_validator("duration_days")
    @classmethod
    def _duration(cls, v):
        if not v >= MIN_DURATION_DAYS:
            raise ValueError(f"a duration of at least one minute ({MIN_DURATION_DAYS:.6g} d)")
        return v

    @property
    def source_file(self) -> str | None:
        """The file the scenario was read from (named in errors found later, when it is resolved)."""
        return self._source_file

    def __eq__(self, other: object) -> bool:
        """Equal when every field is (where a scenario was read from is not part of what it is)."""
        if not isinstance(other, Scenario):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(self.model_dump_json())
    uncertainty: UncertaintySpec | None = None

    @model_validator(mode="after")
    def _doses_in_window(self):
        late = [t for t in self.regimen.times_days if t >= self.duration_days]
        if late:  # a dose at the very end would be given and never followed (and drew an empty figure)
            raise FieldProblem("regimen.times_days", list(self.regimen.times_days),
                               f"dose times before the end of the run (duration_days={self.duration_days:g}); "
                               f"{late[0]:g} d is not")
        end = self.duration_days * 24.0
        cuts = {0.0, end}
        for t in self.regimen.times_days:
            cuts.add(t * 24.0)
            if self.regimen.infusion_minutes:
                cuts.add(min(end, t * 24.0 + self.regimen.infusion_minutes / 60.0))
        cuts = sorted(cuts)
        close = next(((a, b) for a, b in zip(cuts, cuts[1:]) if b - a < MIN_EVENT_GAP_HOURS), None)
        if close is not None:
            raise FieldProblem("regimen.times_days", list(self.regimen.times_days),
                           f"doses, infusion ends and the end of the run at least one second apart (events at "
                           f"{close[0]:.9g} h and {close[1]:.9g} h are closer; give near-simultaneous doses as "
                           "one time)")
        times = self.outputs.times_hours
        if times is not None and times[-1] > self.duration_days * 24.0:
            raise ValueError(f"outputs.times_hours reach {times[-1]:g} h, after the end of the run "
                             f"(duration_days={self.duration_days:g}, {self.duration_days * 24.0:g} h)")
        return self

    @model_validator(mode="after")
    def _lesion_rules(self):
        reg = self.regimen
        organ = self.lesion.organ if self.lesion is not None else None
        if reg.route in ORGAN_ROUTES:
            allowed = ORGAN_ROUTES[reg.route]
            if organ is None:
                raise FieldProblem("lesion", None, f"route '{reg.route}' delivers into an organ lesion: give "
                                   f"lesion: {{organ: ...}} with one of {list(allowed)}")
            if organ not in allowed:
                raise FieldProblem("lesion.organ", organ, f"an organ route '{reg.route}' reaches: {list(allowed)} "
                                   f"(for a '{organ}' lesion: {_routes_for(organ)})")
            if self.product.kind == "vesicles":
                raise FieldProblem("regimen.route", reg.route, "a route of a cell product; dose vesicles "
                                   "intravenously or into a local site")
        organ_sites = {lesion_site(o): o for o in get_args(LesionOrgan) if o != "systemic"}
        if is_local(reg.route) and reg.route not in ORGAN_ROUTES and reg.site in organ_sites:
            o = organ_sites[reg.site]
            raise FieldProblem("regimen.site", reg.site, f"a site of route '{reg.route}' (an organ lesion is given "
                               f"as lesion: {{organ: {o}}} and reached by routes {_routes_for(o)}; a local "
                               "injection into it is route 'intralesional', with its placement and retention)")
        if organ is None:
            return self
        if is_local(reg.route) and reg.route not in ORGAN_ROUTES:
            # A local injection's site is its own lesion (regimen.site or the route's default, each with cited
            # placement accuracy); an injection into an organ lesion is route 'intralesional'.
            raise FieldProblem("regimen.route", reg.route, f"a route into a '{organ}' lesion: "
                               f"{_routes_for(organ)} (route '{reg.route}' injects into its own site, "
                               "regimen.site or the route's default, not into an organ lesion)")
        if reg.site is not None and reg.site != lesion_site(organ):
            raise FieldProblem("regimen.site", reg.site, f"'{lesion_site(organ)}' (the site of lesion.organ "
                               f"'{organ}'), or leave regimen.site out")
        return self

    @model_validator(mode="after")
    def _disease_rules(self):
        p = self.patient
        if self.disease is None:
            given = [n for n in ("age_years", "kellgren_lawrence", "gvhd_grade") if getattr(p, n) is not None]
            given += [n for n in ("smoker", "vascular_disease") if getattr(p, n)]
            if given:
                raise ValueError(f"patient fields {given} need a 'disease' (the tissue model): one of "
                                 "knee_osteoarthritis, acute_gvhd, perianal_fistula, lumbar_disc_degeneration, "
                                 "tendinopathy, diabetic_foot_ulcer, lupus_nephritis")
        else:
            if p.target_inflammation:
                raise ValueError("with a disease the tissue model makes the target's inflammation; use "
                                 "patient.baseline_inflammation (a multiplier, 1 typical) instead of target_inflammation")
            if p.kellgren_lawrence is not None and self.disease != "knee_osteoarthritis":
                raise ValueError("kellgren_lawrence applies to disease 'knee_osteoarthritis'")
            if p.gvhd_grade is not None and self.disease != "acute_gvhd":
                raise ValueError("gvhd_grade applies to disease 'acute_gvhd'")
        if self.product.kind == "vesicles":
            if self.regimen.dose.particles is None:
                raise ValueError("a vesicle product is dosed in particles: regimen.dose.particles")
            if self.disease is None:
                raise ValueError("a vesicle product acts only through the tissue model: give a 'disease'")
        elif self.regimen.dose.particles is not None:
            raise ValueError("regimen.dose.particles is for product kind 'vesicles'; dose cells with 'cells' or "
                             "'cells_per_kg'")
        if self.label is not None:
            if self.product.kind == "vesicles":
                raise FieldProblem("label", self.label, "no label for a vesicle product (a label is on cells)")
            if len(self.regimen.times_days) > 1:
                raise FieldProblem("label", self.label, "a single administration (each labelled dose is its own "
                                   "imaging study; decay correction is to that injection)")
        return self

    def resolved(self) -> dict:
        """The scenario with every default filled in, as plain JSON-able data (recorded in every output)."""
        return json.loads(self.model_dump_json())


def _routes_for(organ: str) -> list[str]:
    """The routes that reach a lesion in ``organ``."""
    return ["intravenous"] + [r for r, organs in ORGAN_ROUTES.items() if organ in organs]


def scenario_from_dict(data: dict, *, file: str | None = None, base_dir: Path | None = None) -> Scenario:
    """Validate a scenario mapping; errors name the field, the value and what is allowed."""
    if not isinstance(data, dict):
        raise InputError("(top level)", type(data).__name__, "a mapping of scenario fields", file=file)
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, file, Scenario) from None
    if sc.product.lot and base_dir is not None and not Path(sc.product.lot).is_absolute():
        sc = sc.model_copy(update={"product": sc.product.model_copy(
            update={"lot": str((base_dir / sc.product.lot).resolve())})})
    u = sc.uncertainty
    if u is not None and u.posterior and u.posterior != "prior" and base_dir is not None and not Path(u.posterior).is_absolute():
        sc = sc.model_copy(update={"uncertainty": u.model_copy(
            update={"posterior": str((base_dir / u.posterior).resolve())})})
    sc._source_file = file
    return sc


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file, or a bundled preset by name (``knee_ia_5e7_blind``)."""
    path = Path(path)
    if not exists(path) and not path.suffix and len(path.parts) == 1:
        from ..model.parameters import DATA_DIR

        bundled = DATA_DIR / "examples" / f"{path.name}.yaml"
        if exists(bundled):
            path = bundled
    if not exists(path):
        raise InputError("SCENARIO", str(path), "a path to an existing scenario YAML file "
                         "(see 'mscsim presets' for the bundled ones)")
    data = read_yaml(path)
    return scenario_from_dict(data, file=str(path), base_dir=path.parent)
