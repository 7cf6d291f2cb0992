"""The public Python API: load a scenario, change what a scientist changes, run it, read the results.

```python
import mscsim

sim = mscsim.load("knee_oa_ia_5e7")                 # a bundled preset, or the path of a scenario YAML
res = sim.with_dose(cells=1e7).with_population(20).run()
res.endpoints()                                     # each endpoint at its visits: median, 90 % of patients
res.plot()                                          # MSCs, cytokines, immune cells, endpoints vs untreated
curve = sim.sweep({"regimen.dose.cells": mscsim.logspace(1e6, 1e9, 7)}, outputs=["pain_vas_day180"])
trial = mscsim.trial("knee_oa_lee_2019", n_per_arm=20)
```

A ``Simulation`` is immutable: every ``with_...`` returns a new one, validated at once exactly as a scenario
file is (the same errors as the command line: file, field, value and what is allowed). The command line is a
thin layer over these functions.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import InputError
from .io._validation import exists
from .io.scenario import Scenario, load_scenario, scenario_from_dict
from .results import Results

ProgressArg = bool | Callable[[str], None] | None


# ---------------------------------------------------------------- presets and loading

def preset_dir() -> Path:
    """Folder of the bundled example scenarios (``mscsim presets``)."""
    from ._presets import preset_dir as folder

    return folder()


def presets() -> pd.DataFrame:
    """The bundled scenarios: name, disease (if any), description and file."""
    from ._presets import preset_rows

    return pd.DataFrame(preset_rows(), columns=["name", "disease", "description", "file"])


def scenario_path(name_or_path: str | os.PathLike) -> Path:
    """A path to a scenario file, or the name of a bundled preset; anything else is an InputError that lists
    the presets."""
    p = Path(name_or_path)
    if exists(p):
        return p
    bundled = preset_dir() / f"{name_or_path}.yaml"
    if exists(bundled):
        return bundled
    names = presets()["name"].tolist()
    from difflib import get_close_matches

    close = get_close_matches(str(name_or_path), names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise InputError("SCENARIO", str(name_or_path), f"a path to a scenario YAML file or a bundled preset{hint}: "
                     f"{names}")


def load(scenario: str | os.PathLike | Scenario | Mapping) -> "Simulation":
    """A Simulation from a bundled preset name (``"knee_oa_ia_5e7"``), a scenario YAML path, a validated
    Scenario or a plain mapping of scenario fields."""
    if isinstance(scenario, Scenario):
        return Simulation(scenario, origin=scenario.name)
    if isinstance(scenario, Mapping):
        return Simulation(scenario_from_dict(dict(scenario), file="(scenario mapping)"), origin="(scenario mapping)")
    path = scenario_path(scenario)
    origin = str(scenario) if not exists(str(scenario)) else str(path)
    return Simulation(load_scenario(path), origin=origin)


def logspace(start: float, stop: float, num: int) -> list[float]:
    """``num`` values from ``start`` to ``stop``, evenly spaced on a log axis (a dose range for a sweep)."""
    return [float(v) for v in np.geomspace(start, stop, int(num))]


# ---------------------------------------------------------------- the Simulation

def _progress(progress: ProgressArg, label: str = ""):
    """A Progress reporter on stderr (True), the caller's own callable of text, or nothing."""
    from .progress import Progress

    if progress is True:
        return Progress(label)
    if callable(progress):
        class _Call:
            def stage(self, text):
                progress(text)

            def count(self, done, total):
                progress(f"{done}/{total}")

            def close(self):
                pass
        return _Call()
    return None


def _set_path(data: dict, path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; a missing intermediate mapping is created."""
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            node[k] = nxt
        node = nxt
    node[keys[-1]] = value


def scenario_fields() -> list[str]:
    """Every settable scenario field as a dotted path (``regimen.dose.cells``, ``patient.age_years``, ...)."""
    from pydantic import BaseModel

    out: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            sub = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type)
                        and issubclass(a, BaseModel)), None)
            if sub is not None:
                walk(sub, f"{prefix}{name}.")
            else:
                out.append(f"{prefix}{name}")

    walk(Scenario, "")
    return out


@dataclass(frozen=True)
class Simulation:
    """A validated scenario ready to run, and the changes a user makes to it (each returns a new Simulation).

    ``origin`` names where it came from (a preset or a file); errors name it."""

    scenario: Scenario
    origin: str = "(scenario)"
    changes: tuple[str, ...] = field(default=(), compare=False)

    # -- changing it
    def _with(self, what: str, edit: Callable[[dict], None]) -> "Simulation":
        data = self.scenario.model_dump(mode="json", exclude_none=True)
        edit(data)
        sc = scenario_from_dict(data, file=f"{self.origin} ({what})", base_dir=Path.cwd())
        return Simulation(sc, self.origin, self.changes + (what,))

    def set(self, path: str, value: Any) -> "Simulation":
        """Set one scenario field by its dotted path (``"regimen.dose.cells"``, ``"patient.age_years"``), as a
        sweep's ``--vary`` does; ``regimen.route`` and the dose fields go through ``with_route``/``with_dose``."""
        known = scenario_fields()
        if path not in known:
            from difflib import get_close_matches

            close = get_close_matches(path, known, n=1)
            group = [k for k in known if k.split(".")[0] == path.split(".")[0]] or known
            raise InputError(path, value, (f"did you mean '{close[0]}'? " if close else "") +
                             f"a scenario field such as {', '.join(group)} (all: mscsim.scenario_fields())",
                             file=self.origin)
        if path == "regimen.route":
            return self.with_route(value)
        if path.startswith("regimen.dose."):
            return self.with_dose(**{path.rsplit(".", 1)[1]: value})
        return self._with(f"{path}={value!r}", lambda d: _set_path(d, path, copy.deepcopy(value)))

    def with_dose(self, cells: float | None = None, *, cells_per_kg: float | None = None,
                  particles: float | None = None, times_days: Sequence[float] | None = None,
                  infusion_minutes: float | None = None) -> "Simulation":
        """A new dose (one of ``cells``, ``cells_per_kg``, ``particles``), dosing days and/or infusion time."""
        dose = {k: v for k, v in (("cells", cells), ("cells_per_kg", cells_per_kg), ("particles", particles))
                if v is not None}

        def edit(d):
            if dose:
                d["regimen"]["dose"] = dose
            if times_days is not None:
                d["regimen"]["times_days"] = list(times_days)
            if infusion_minutes is not None:
                d["regimen"]["infusion_minutes"] = infusion_minutes
        shown = ", ".join(f"{k}={v!r}" for k, v in {**dose, "times_days": times_days,
                                                    "infusion_minutes": infusion_minutes}.items() if v is not None)
        return self._with(f"with_dose({shown})", edit)

    def with_route(self, route: str, *, guidance: str | None = None, site: str | None = None,
                   approach: str | None = None) -> "Simulation":
        """Another route. Going intravenous drops guidance and approach; going local keeps the guidance (or
        takes ``guidance``, else ultrasound) and drops an infusion time. The site follows the route unless given."""
        from .delivery.routes import is_local

        def edit(d):
            reg = d["regimen"]
            reg["route"] = route
            reg.pop("site", None)
            if site is not None:
                reg["site"] = site
            if is_local(str(route)):
                reg["guidance"] = guidance or reg.get("guidance") or "ultrasound"
                reg.pop("infusion_minutes", None)
                if approach is not None:
                    reg["approach"] = approach
            else:
                reg.pop("guidance", None)
                reg.pop("approach", None)
        return self._with(f"with_route({route!r})", edit)

    def with_guidance(self, guidance: str, *, approach: str | None = None) -> "Simulation":
        """Image guidance of a local injection (ultrasound, fluoroscopy, landmark, direct_vision)."""
        def edit(d):
            d["regimen"]["guidance"] = guidance
            d["regimen"].pop("approach", None)
            if approach is not None:
                d["regimen"]["approach"] = approach
        return self._with(f"with_guidance({guidance!r})", edit)

    def with_product(self, **fields: Any) -> "Simulation":
        """Change product fields: ``source``, ``donor``, ``passage``, ``population_doublings``, ``viability``,
        ``cryo_state``, ``kind``, or ``lot`` (a QC'd lot record; relative paths from the working folder)."""
        def edit(d):
            if "lot" in fields:
                d["product"] = {}
            d.setdefault("product", {}).update(fields)
        return self._with(f"with_product({', '.join(f'{k}={v!r}' for k, v in fields.items())})", edit)

    def with_patient(self, **fields: Any) -> "Simulation":
        """Change the patient: ``weight_kg``, ``age_years``, ``smoker``, ``vascular_disease``, ``nutrition``,
        ``baseline_inflammation``, ``kellgren_lawrence``, ``gvhd_grade`` (``target_inflammation`` without a
        disease)."""
        return self._with(f"with_patient({', '.join(f'{k}={v!r}' for k, v in fields.items())})",
                          lambda d: d.setdefault("patient", {}).update(fields))

    def with_parameters(self, **values: Any) -> "Simulation":
        """What-if values of model parameters by name (see ``parameters()`` for names, units and bounds); each
        is validated as the scenario's ``parameters`` field is."""
        return self._with(f"with_parameters({', '.join(values)})",
                          lambda d: d.setdefault("parameters", {}).update(copy.deepcopy(values)))

    def with_mechanisms(self, **switches: bool) -> "Simulation":
        """Switch mechanisms on or off (``engraftment=True``)."""
        return self._with(f"with_mechanisms({switches})", lambda d: d.setdefault("mechanisms", {}).update(switches))

    def with_duration(self, days: float) -> "Simulation":
        """Follow-up in days after the first dose."""
        return self._with(f"with_duration({days!r})", lambda d: d.update(duration_days=days))

    def with_population(self, size: int, *, variability: bool = True) -> "Simulation":
        """A virtual cohort of ``size`` patients whose parameters vary by their cited between-patient
        distributions (``variability=False``: identical patients)."""
        return self._with(f"with_population({size!r})",
                          lambda d: d.update(population={"size": size, "variability": variability}))

    def with_seed(self, seed: int) -> "Simulation":
        return self._with(f"with_seed({seed!r})", lambda d: d.update(seed=seed))

    # -- reading it
    @property
    def name(self) -> str:
        return self.scenario.name

    def setup(self):
        """The scenario resolved into model, parameters, product and placement (``resolve_setup``)."""
        from .simulation import resolve_setup

        return resolve_setup(self.scenario)

    def parameters(self, *, every: bool = False) -> pd.DataFrame:
        """The parameters this run uses: value, units, bounds, between-patient and uncertainty distributions,
        evidence grade, sources, what each was fitted to and its data file (``every``: all loaded)."""
        from .model.listing import parameter_table

        return parameter_table(self.setup(), every=every)

    def citations(self) -> list:
        """Every source the run rests on (parameters, endpoints, the solver), with DOIs."""
        return self.setup().citations()

    def export_sbml(self, path: str | os.PathLike) -> Path:
        """Write the scenario's model as SBML Level 3 Version 2 (needs the ``sbml`` extra)."""
        from ._optional import require

        require("libsbml", "sbml", "SBML export")
        from .io.sbml import export_sbml

        return Path(export_sbml(self.setup(), path))

    # -- running it
    def run(self, *, progress: ProgressArg = None, allow_large: bool = False) -> Results:
        """Simulate every patient and return Results (an xarray Dataset with the endpoints, plus tables,
        bands and plots). ``progress=True`` reports each step on stderr, with its time. A cohort too large to
        hold in memory is refused unless ``allow_large``."""
        from .simulation import simulate

        rep = _progress(progress)
        try:
            ds = simulate(self.scenario, progress=None if rep is None else rep.count,
                          stage=None if rep is None else rep.stage, allow_large=allow_large)
        finally:
            if rep is not None:
                rep.close()
        bands = None
        if self.scenario.uncertainty is not None:  # parameter draws: the bands of every output
            from .uncertainty.bands import simulate_bands

            draws = _progress(progress, "parameter draws")
            kept = _progress(progress, "draws kept (enrolled disease)")
            try:
                bands = simulate_bands(self.scenario, ds, progress=None if draws is None else draws.count,
                                       screening=None if kept is None else kept.count)
            finally:
                for r in (draws, kept):
                    if r is not None:
                        r.close()
        return Results(ds, bands)

    def sweep(self, vary: Mapping[str, Sequence[Any]], outputs: Sequence[str], *,
              progress: ProgressArg = None):
        """Run the scenario at every combination of the values in ``vary`` (dotted field -> values), all
        patients of all points through the batched solver together, and summarise each output per point
        (median and 90/95 % of patients; see ``mscsim.sweep``)."""
        from .analysis.sweep import Vary, run_sweep

        varies = [Vary.of(path, values) for path, values in vary.items()]
        return run_sweep(self, varies, list(outputs), progress=_progress(progress))

    def __repr__(self) -> str:
        sc = self.scenario
        dose = sc.regimen.dose
        d = next(f"{k}={v:g}" for k, v in (("cells", dose.cells), ("cells_per_kg", dose.cells_per_kg),
                                               ("particles", dose.particles)) if v is not None)
        changed = f", changed: {'; '.join(self.changes)}" if self.changes else ""
        return (f"<Simulation {sc.name}: {sc.disease or 'kinetics only'}, {sc.regimen.route} {d} x "
                f"{len(sc.regimen.times_days)}, {sc.duration_days:g} d, {sc.population.size} patient(s){changed}>")


def sweep(scenario: str | os.PathLike | Scenario | Simulation, vary: Mapping[str, Sequence[Any]],
          outputs: Sequence[str], *, patients: int | None = None, progress: ProgressArg = None):
    """A dose-response (or timing, route, guidance, product) curve: ``scenario`` run at every combination of
    ``vary`` (dotted scenario field -> values), ``patients`` virtual patients at each point (default: the
    scenario's population), every point and patient through the batched solver together. Returns a
    SweepResult: ``.table`` (one row per point and output), ``.data`` (xarray), ``.plot()``, ``.save(out)``."""
    sim = scenario if isinstance(scenario, Simulation) else load(scenario)
    if patients is not None:
        sim = sim.with_population(patients)
    return sim.sweep(vary, outputs, progress=progress)


# ---------------------------------------------------------------- virtual trials

@dataclass(frozen=True, eq=False)
class TrialRun:
    """A finished virtual trial: its tables (as written to ``out``) and where its files are. The per-patient tables
    (``endpoints``, ``patients``) are read from ``out`` when first asked for: a million-patient trial's endpoint
    table is millions of rows, which the command line's summary never needs."""

    design: Any
    out: Path
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    published: pd.DataFrame
    power: pd.DataFrame | None
    safety: pd.DataFrame
    responders: pd.DataFrame

    @cached_property
    def endpoints(self) -> pd.DataFrame:
        """Every observation (patient x endpoint x visit), from ``out/endpoints.parquet``."""
        return pd.read_parquet(self.out / "endpoints.parquet")

    @cached_property
    def patients(self) -> pd.DataFrame:
        """One row per simulated patient (covariates, enrolment, dose, adverse events), from
        ``out/patients.parquet``."""
        return pd.read_parquet(self.out / "patients.parquet")

    @property
    def report(self) -> Path:
        """The self-contained HTML report (interactive plots, tables, citations)."""
        return self.out / "report.html"

    def primary(self) -> pd.DataFrame:
        """The primary endpoint's comparisons against control."""
        p = self.design.primary
        c = self.comparisons
        return c[(c["endpoint"] == p.endpoint) & (c["visit_day"] == p.visit_day)].reset_index(drop=True)

    def __repr__(self) -> str:
        import pyarrow.parquet as pq

        simulated = pq.ParquetFile(self.out / "patients.parquet").metadata.num_rows
        lines = [f"<TrialRun {self.design.name}: {simulated} simulated patients; files in {self.out}>"]
        for _, r in self.primary().iterrows():
            lines.append(f"  {r['endpoint']} day {r['visit_day']:g}, {r['arm']} vs {r['control']}: "
                         f"{r['estimate']:.3g} (95% CI {r['ci_low']:.3g} to {r['ci_high']:.3g}), p = {r['p_value']:.3g}")
        return "\n".join(lines)


def load_trial(design: str | os.PathLike | Mapping, *, n_per_arm: int | None = None):
    """A validated trial design: a bundled name (``knee_oa_lee_2019``), a design YAML path, or a mapping;
    ``n_per_arm`` resizes every arm (and drops the resampling pools, for a quick look)."""
    from .trials.design import DesignSpec, design_from_dict, load_design

    if isinstance(design, DesignSpec):
        spec, path = design, None
    elif isinstance(design, Mapping):
        spec, path = design_from_dict(dict(design), file="(design mapping)"), None
    else:
        spec, path = load_design(design)
    if n_per_arm is not None:
        data = spec.model_dump(mode="json", exclude_none=True)
        data["arms"] = [{**a, "n": n_per_arm} for a in data["arms"]]
        data.pop("power", None)
        data.pop("prediction", None)
        spec = design_from_dict(data, file=f"{path or spec.name} (n_per_arm={n_per_arm})")
    return spec, path


def trial(design: str | os.PathLike | Mapping, out: str | os.PathLike | None = None, *,
          n_per_arm: int | None = None, workers: int = 1, chunk_size: int | None = None,
          scheduler: str | None = None, progress: ProgressArg = None,
          notice: Callable[[str], None] | None = None) -> TrialRun:
    """Run a virtual trial and return its tables. ``design``: a bundled design name, a YAML path or a mapping;
    ``out``: where the files go (default: a new temporary folder); ``n_per_arm``: resize every arm for a
    quick look; ``workers``/``scheduler``: local processes or a Dask cluster (same numbers either way);
    ``notice(text)``: told when an earlier, different run's chunks in ``out`` are replaced."""
    from .trials import run_trial

    if workers < 1:
        raise InputError("workers", workers, "an integer >= 1 (local processes)")
    if chunk_size is not None and chunk_size < 1:
        raise InputError("chunk_size", chunk_size, "an integer >= 1 (patients per chunk)")
    spec, path = load_trial(design, n_per_arm=n_per_arm)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"mscsim-{spec.name}-")) / "trial"
    rep = _progress(progress, "chunks")
    kept = _progress(progress, "parameter draws kept (enrolled disease)")
    result = run_trial(spec, out, design_path=str(path) if path else None, workers=workers, scheduler=scheduler,
                       chunk_size=chunk_size, progress=None if rep is None else rep.count, notice=notice,
                       screening=None if kept is None else kept.count)
    a = result.analysis
    return TrialRun(spec, result.out, a.summary, a.comparisons, a.published, a.power, a.safety, a.responders)


# ---------------------------------------------------------------- calibration

def calibrate(disease: str, out: str | os.PathLike | None = None, *, parameters: Sequence[str] | None = None,
              exclude: Sequence[str] = (), pool: int = 200, loo: bool = False, **settings):
    """Bayesian calibration of ``disease`` against every published number of its bundled trials (as
    ``mscsim calibrate``): returns ``(Calibration, leave_one_out table or None)`` and writes the folder if ``out``
    is given. ``settings``: points, walkers, steps, burn, seed, refine, heterogeneity
    (``mscsim.calibration.run.Settings``).

    ```python
    cal, _ = mscsim.calibrate("perianal_fistula", steps=4000, burn=1000)
    cal.parameters[["parameter", "posterior_median", "posterior_2.5%", "posterior_97.5%", "rhat"]]
    cal.predictions      # every published number beside its prior and posterior predictive interval
    ```"""
    from .calibration.problem import build_problem
    from .calibration.run import Settings, calibrate as run, write_calibration

    known = set(Settings.__dataclass_fields__)
    for key in settings:
        if key not in known:
            raise InputError(key, settings[key], f"one of the calibration settings {sorted(known)}")
    opts = Settings(**settings)
    opts.check()
    problem = build_problem(disease, parameters=list(parameters) if parameters else None, pool=pool,
                            exclude=tuple(exclude))
    cal, loo_table = run(problem, opts, loo=loo)
    if out is not None:
        write_calibration(cal, out, loo_table)
    return cal, loo_table
