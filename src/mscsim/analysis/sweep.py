"""Sweeps: a scenario run at every combination of some field values (dose, timing, route, guidance, product,
patient), every point's patients solved together by the batched solver, each output summarised per point as
the median and 90/95 % of patients (and the untreated course beside it).

``--vary regimen.dose.cells=1e6:1e9:log:9`` -> points -> one batched problem (patients of all points as rows;
dose events at the union of the points' dose times, zero where a point gives none) -> per-point results ->
per-patient outputs -> table, bands, plot. The patients are the same at every point (the same seed), so a
curve shows the effect of the varied field, not a redraw of the cohort.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, fields
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from .. import __version__
from ..display import Display, display, field_display, fmt, pct
from ..errors import InputError
from ..simulation import Setup, label_chunk, resolve_setup, solve, untreated
from ..solvers.problem import Bolus, Infusion, Problem
from .bands import QUANTILES, band_frame

VARY_HELP = ("PATH=START:STOP:log:N or PATH=START:STOP:lin:N (a range), or PATH=V1,V2,... (values), e.g. "
             "regimen.dose.cells=1e6:1e9:log:9, regimen.guidance=ultrasound,landmark, "
             "regimen.times_days=[[0],[0,28]]")
_RANGE = re.compile(r"^\s*([-+0-9.eE]+)\s*:\s*([-+0-9.eE]+)\s*(?::\s*(log|lin|linear))?\s*:\s*(\d+)\s*$")
TABLE_COLUMNS = ("output", "label", "units", "statistic", "n", "median", "q05", "q95", "q025", "q975", "mean",
                 "untreated_median", "untreated_q05", "untreated_q95")
MAX_POINTS = 400


@dataclass(frozen=True)
class Vary:
    """One varied scenario field and its values; ``scale`` says how the values were spaced (for the axis)."""

    path: str
    values: tuple[Any, ...]
    scale: Literal["log", "linear", "values"] = "values"

    @classmethod
    def parse(cls, text: str) -> "Vary":
        """``PATH=START:STOP:log:N``, ``PATH=START:STOP:lin:N``, ``PATH=V1,V2,...`` or ``PATH=[...]`` (YAML)."""
        path, sep, rhs = str(text).partition("=")
        path = path.strip()
        if not sep or not path or not rhs.strip():
            raise InputError("--vary", text, VARY_HELP)
        m = _RANGE.match(rhs)
        if m:
            start, stop, kind, num = float(m[1]), float(m[2]), (m[3] or "lin"), int(m[4])
            if num < 2 or num > MAX_POINTS:
                raise InputError("--vary", text, f"a range of 2 to {MAX_POINTS} points; {VARY_HELP}")
            if kind == "log":
                if start <= 0 or stop <= 0:
                    raise InputError("--vary", text, "a log range of positive values, e.g. 1e6:1e9:log:9")
                return cls(path, tuple(float(v) for v in np.geomspace(start, stop, num)), "log")
            return cls(path, tuple(float(v) for v in np.linspace(start, stop, num)), "linear")
        if ":" in rhs and not rhs.strip().startswith("["):
            raise InputError("--vary", text, f"a range START:STOP:log|lin:N (all four parts); {VARY_HELP}")
        try:
            values = yaml.safe_load(rhs) if rhs.strip().startswith("[") else \
                [yaml.safe_load(v) for v in rhs.split(",")]
        except yaml.YAMLError as exc:
            raise InputError("--vary", text, f"{VARY_HELP} ({exc})") from None
        if not isinstance(values, list) or not values or any(v is None for v in values):
            raise InputError("--vary", text, VARY_HELP)
        return cls.of(path, values)

    @classmethod
    def of(cls, path: str, values: Sequence[Any]) -> "Vary":
        values = tuple(values)
        if not values:
            raise InputError(f"vary[{path!r}]", [], "at least one value")
        if len(values) > MAX_POINTS:
            raise InputError(f"vary[{path!r}]", len(values), f"at most {MAX_POINTS} values")
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        scale = "values"
        if numeric and len(values) > 2 and min(values) > 0:
            r = np.diff(np.log(np.asarray(values, dtype=float)))
            scale = "log" if np.allclose(r, r[0], rtol=1e-6) and abs(r[0]) > 0 else "values"
        return cls(path, values, scale)


# ---------------------------------------------------------------- outputs: one number per patient

_AT = re.compile(r"^(?P<var>.+?)_(?:day(?P<day>[0-9.]+)|(?P<base>baseline)|(?P<end>end))$")


def output_names(ds: xr.Dataset) -> list[str]:
    """Examples of valid output names for these results (every column of summary.csv, and any variable at
    ``_dayN``, ``_baseline`` or ``_end``)."""
    from ..io.outputs import summary_table

    cols = [c for c in summary_table(ds.isel(patient=[0])).columns if c != "patient"]
    return cols


def scalar_output(ds: xr.Dataset, name: str) -> tuple[np.ndarray, np.ndarray | None, Display, str]:
    """Per-patient values of an output (and of the same patients untreated, when the results hold that), its
    display record and the visit it is read at: ``pain_vas_day180``, ``msc_target_day7``, ``tnf_baseline``,
    ``viable_total_end``, a response such as ``response_day28`` (read as responded: complete or partial), or
    any column of summary.csv (``target_exposure_cell_days``, ``viable_fraction_24h``...)."""
    td = ds["time_days"].values
    m = _AT.match(name)
    if m and m["var"] in ds and "time" in ds[m["var"]].dims:
        var = m["var"]
        day = 0.0 if m["base"] else (float(td[-1]) if m["end"] else float(m["day"]))
        if day > td[-1] + 1e-9:
            raise InputError("--output", name, f"a time within the run (0 to {td[-1]:g} days)")
        i = int(np.argmin(np.abs(td - day)))
        unt = ds[f"{var}_untreated"].values[:, i] if f"{var}_untreated" in ds else None
        visit = "baseline" if day == 0 else f"day {day:g}"
        return ds[var].values[:, i].astype(float), unt, display(var, ds[var].attrs), visit
    if name in ds and ds[name].dims == ("patient",):
        da = ds[name]
        if da.attrs.get("kind") == "response":
            codes = da.values.astype(int)
            unt = ds[f"{name}_untreated"].values.astype(int) if f"{name}_untreated" in ds else None
            disp = Display(label="overall response (complete or partial)", kind="binary", better="higher")
            return (codes <= 1).astype(float), None if unt is None else (unt <= 1).astype(float), disp, \
                f"day {float(da.attrs.get('day', 0)):g}"
        return da.values.astype(float), None, display(name, da.attrs), ""
    from ..io.outputs import summary_table

    table = summary_table(ds)
    if name in table.columns and table[name].dtype.kind == "f":
        return table[name].to_numpy(dtype=float), None, Display(label=name.replace("_", " ")), ""
    names = sorted(set(output_names(ds)) | {v for v in ds.data_vars if ds[v].dims == ("patient",)})
    close = get_close_matches(name, names, n=1)
    raise InputError("--output", name, (f"did you mean '{close[0]}'? " if close else "") +
                     f"an output of this scenario: a variable at a day (e.g. pain_vas_day180, msc_target_day7, "
                     f"tnf_baseline, viable_total_end) or one of {names}")


def known_outputs(setup: Setup) -> tuple[list[str], list[str]]:
    """(variables over time, per-patient outputs) that a scenario's results will hold."""
    from ..io.outputs import SUMMARY_TIMES_H

    over_time = list(setup.model.state_names) + ["viable_total", "debris_total", "administered"]
    per_patient = ["dose_cells", "effective_potent_dose", "potent_dose_at_target", "target_exposure_cell_days",
                   "viable_fraction_end", "viable_target_cells_end"]
    end_h = setup.scenario.duration_days * 24
    for label, h in SUMMARY_TIMES_H.items():
        if h <= end_h:
            per_patient += [f"{k}_{label}" for k in ("viable_fraction", "viable_target_cells", "lung_label_fraction",
                                                    "liver_label_fraction")]
    if setup.has_tissue:
        from ..endpoints import load_endpoints

        eps = load_endpoints(setup.scenario.disease).spec
        over_time += list(eps.endpoints)
        per_patient += list(eps.responses)
    return over_time, per_patient


def check_output(setup: Setup, name: str) -> None:
    """Refuse an output the scenario's results will not hold, with a 'did you mean' and examples."""
    over_time, per_patient = known_outputs(setup)
    m = _AT.match(name)
    if m and m["var"] in over_time:
        if m["day"] is not None and float(m["day"]) > setup.scenario.duration_days:
            raise InputError("--output", name, f"a day within the run (0 to {setup.scenario.duration_days:g})")
        return
    if name in per_patient:
        return
    examples = [f"{v}_day7" for v in over_time[-3:]] + per_patient
    candidates = [f"{v}_{s}" for v in over_time for s in ("baseline", "end", "day7")] + per_patient
    close = get_close_matches(name, candidates, n=1)
    raise InputError("--output", name, (f"did you mean '{close[0]}'? " if close else "") +
                     "a variable at a day (VARIABLE_dayN, VARIABLE_baseline or VARIABLE_end; variables: "
                     f"{over_time}) or one of {per_patient}; e.g. {examples[:4]}")


# ---------------------------------------------------------------- one batched problem for every point

@dataclass(frozen=True)
class _SharedBaseline(Setup):
    """A Setup whose chronic state (``chronic_state``) is computed once per distinct patient parameter row and shared by
    every point of a sweep (a dose does not change the untreated disease)."""

    cache: dict | None = None

    def chronic_state(self, P: np.ndarray):
        if self.cache is None or not self.has_tissue:
            return super().chronic_state(P)
        keys = [row.tobytes() for row in np.ascontiguousarray(P)]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            x, method = super().chronic_state(P[todo])
            for i, row, m in zip(todo, x, method):
                self.cache[keys[i]] = (row, m)
        return (np.stack([self.cache[k][0] for k in keys]), np.array([self.cache[k][1] for k in keys]))


def _shared(setup: Setup, cache: dict) -> _SharedBaseline:
    return _SharedBaseline(**{f.name: getattr(setup, f.name) for f in fields(setup)}, cache=cache)


def merge_problems(problems: Sequence[Problem]) -> tuple[Problem, list[np.ndarray], list[np.ndarray]]:
    """Several problems of one model as one: patients stacked, output times united, dose events at the union of
    their times (zero for a patient whose point gives none then). Returns it, each problem's rows and each
    problem's output-time indices into the united grid."""
    model = problems[0].model
    t_all = np.unique(np.concatenate([np.asarray(p.t_eval, dtype=float) for p in problems]))
    sizes = [p.n_patients for p in problems]
    offsets = np.cumsum([0, *sizes])
    rows = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(problems))]
    n_total, n_states = int(offsets[-1]), model.n_states
    bolus_times = sorted({float(b.t) for p in problems for b in p.boluses})
    boluses = []
    for t in bolus_times:
        amount = np.zeros((n_total, n_states))
        for p, r in zip(problems, rows):
            for b in p.boluses:
                if float(b.t) == t:
                    amount[r] += b.amount
        boluses.append(Bolus(t, amount))
    windows = sorted({(float(i.t_start), float(i.t_end)) for p in problems for i in p.infusions})
    infusions = []
    for t0, t1 in windows:
        rate = np.zeros((n_total, n_states))
        for p, r in zip(problems, rows):
            for inf in p.infusions:
                if (float(inf.t_start), float(inf.t_end)) == (t0, t1):
                    rate[r] += inf.rate
        infusions.append(Infusion(t0, t1, rate))
    x0 = None if all(p.x0 is None for p in problems) else np.vstack([p.initial_state() for p in problems])
    merged = Problem(model, np.vstack([p.params for p in problems]), t_all, x0=x0, boluses=tuple(boluses),
                     infusions=tuple(infusions))
    index = [np.searchsorted(t_all, np.asarray(p.t_eval, dtype=float)) for p in problems]
    return merged, rows, index


def _solve_rows(setup: Setup, problem: Problem, chunk: int, tick) -> np.ndarray:
    """Solve a merged problem in chunks of rows (a patient's numbers do not depend on its batch)."""
    n = problem.n_patients
    parts = []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        parts.append(solve(setup, problem.take(rows) if len(rows) < n else problem))
        tick()
    return np.concatenate(parts, axis=0)


def simulate_points(setups: Sequence[Setup], *, progress=None) -> list[xr.Dataset]:
    """Labelled results for each resolved point, every point sharing one model solved as one batched problem
    (in chunks of the scenario's chunk size) and the untreated comparator solved once per distinct patient."""
    say = progress.stage if progress is not None else (lambda text: None)
    cache: dict = {}
    shared = [_shared(s, cache) for s in setups]
    results: list[xr.Dataset | None] = [None] * len(setups)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(setups):
        groups.setdefault(id(s.model), []).append(i)
    for members in groups.values():
        first = shared[members[0]]
        if first.has_tissue:
            say("untreated disease to its chronic state, once per distinct patient")
        problems = [shared[i].problem(0, shared[i].scenario.population.size) for i in members]
        merged, rows, index = merge_problems(problems)
        chunk = first.scenario.solver.chunk_size
        say(f"{len(members)} point(s) x {problems[0].n_patients} patient(s) in one batched problem")
        states = _solve_rows(first, merged, chunk, lambda: None)
        unt_states = None
        if first.has_tissue:
            say("untreated comparator, once per distinct patient")
            base = untreated(merged)
            keys = [np.concatenate([base.params[r], base.initial_state()[r]]).tobytes() for r in range(len(base.params))]
            unique: dict[bytes, int] = {}
            for r, k in enumerate(keys):
                unique.setdefault(k, len(unique))
            firsts = np.array([keys.index(k) for k in unique])
            solved = _solve_rows(first, base.take(firsts), chunk, lambda: None)
            unt_states = solved[[unique[k] for k in keys]]
        for i, prob, r, idx in zip(members, problems, rows, index):
            s = setups[i]
            results[i] = label_chunk(s, prob, states[r][:, idx], None if unt_states is None else
                                     unt_states[r][:, idx], doses=s.patient_doses(prob.n_patients))
    if progress is not None:
        progress.close()
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------- the sweep and its result

def _label(v: Any) -> str:
    if isinstance(v, float):
        return fmt(v)
    if isinstance(v, list):
        return "[" + ", ".join(_label(x) for x in v) + "]"
    return str(v)


@dataclass(frozen=True, eq=False)
class SweepResult:
    """A finished sweep: ``table`` (one row per point and output: median, 90/95 % of patients, mean, and the
    untreated median), ``data`` (xarray: each output per point and patient, the varied fields as coordinates of
    ``point``), and the scenario, varied fields and seed it came from."""

    scenario: Any
    varies: tuple[Vary, ...]
    outputs: tuple[str, ...]
    table: pd.DataFrame
    data: xr.Dataset

    def bands(self) -> xr.Dataset:
        """Median and 90/95 % intervals of every output over patients, per point (a ``quantile`` dimension)."""
        from .bands import bands

        return bands(self.data, dim="patient")

    def plot(self, path: str | Path | None = None):
        """One panel per output against the first varied field (further fields as separate lines): the median
        patient with bands holding 90 % and 95 % of patients, the untreated course dashed."""
        from ..report.sweep_plot import sweep_figure

        return sweep_figure(self, path)

    def save(self, out: str | Path, *, scenario_path: str | None = None) -> Path:
        """Write sweep.csv (per point and output), sweep_patients.csv (per patient), sweep.nc, the figure
        (PNG, SVG, PDF) and manifest.json into ``out``, atomically."""
        import matplotlib.pyplot as plt

        from ..io.outputs import atomic_output_dir
        from ..report.plots import save_figure

        with atomic_output_dir(out) as tmp:
            self.table.to_csv(tmp / "sweep.csv", index=False)
            self.patient_table().to_csv(tmp / "sweep_patients.csv", index=False)
            data = self.data.copy()
            for v in self.varies:  # netCDF holds numbers and strings; a list of dose days is kept as its text
                c = data[v.path]
                if c.dtype == object:
                    data = data.assign_coords({v.path: ("point", [_label(x) for x in c.values])})
            data.to_netcdf(tmp / "sweep.nc")
            fig = self.plot()
            files = ["sweep.csv", "sweep_patients.csv", "sweep.nc"] + [p.name for p in save_figure(fig, tmp / "sweep")]
            plt.close(fig)
            files.append("manifest.json")
            manifest = {"mscsim_version": __version__, "command": "sweep", "scenario_file": scenario_path,
                        "scenario": self.scenario.resolved(), "seed": self.scenario.seed,
                        "patients_per_point": int(self.data.sizes["patient"]),
                        "vary": {v.path: list(v.values) for v in self.varies}, "outputs": list(self.outputs),
                        "files": files, "disclaimer": "Research tool output, not medical advice."}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        return Path(out)

    def patient_table(self) -> pd.DataFrame:
        """One row per point and patient: the varied fields and every output (and its untreated value)."""
        df = self.data.to_dataframe().reset_index()
        return df.drop(columns=[c for c in ("point",) if c in df.columns])

    def lines(self) -> list[str]:
        """The table as terminal lines, one block per output."""
        out = []
        for name in self.outputs:
            rows = self.table[self.table["output"] == name]
            r0 = rows.iloc[0]
            what = ", ".join(x for x in (r0["units"], r0["statistic"]) if x)
            out.append(f"{r0['label']} ({what}):")
            for _, r in rows.iterrows():
                at = ", ".join(f"{field_display(v.path).label} {_label(r[v.path])}" for v in self.varies)
                shown = _value_text(r)
                unt = "" if pd.isna(r["untreated_median"]) else f"   untreated: {_value_text(r, 'untreated_')}"
                out.append(f"  {at}: {shown}{unt}")
        return out


def _value_text(r: pd.Series, prefix: str = "") -> str:
    share = r["statistic"].startswith("share")
    med = r[f"{prefix}median"]
    if share:
        return pct(med)
    text = fmt(med)
    if r["n"] > 1 and not pd.isna(r[f"{prefix}q05"]):
        text += f" (90% of patients {fmt(r[f'{prefix}q05'])} to {fmt(r[f'{prefix}q95'])})"
    return text


def run_sweep(sim, varies: Sequence[Vary], outputs: Sequence[str], *, progress=None) -> SweepResult:
    """Validate every point and output, then run all points together (see module docstring)."""
    if not varies:
        raise InputError("--vary", [], f"at least one field to vary: {VARY_HELP}")
    if not outputs:
        raise InputError("--output", [], "at least one output, e.g. pain_vas_day180 or msc_target_day7")
    paths = [v.path for v in varies]
    if len(set(paths)) != len(paths):
        raise InputError("--vary", paths, "each field varied once")
    combos = list(itertools.product(*[v.values for v in varies]))
    if len(combos) > MAX_POINTS:
        raise InputError("--vary", len(combos), f"at most {MAX_POINTS} points in all (the product of the values)")
    sims = []
    for combo in combos:  # every point validated before anything is computed
        s = sim
        for v, value in zip(varies, combo):
            s = s.set(v.path, value)
        sims.append(s)
    setups = [resolve_setup(s.scenario) for s in sims]
    for name in outputs:  # an unknown output is refused before anything is computed
        check_output(setups[0], name)
    results = simulate_points(setups, progress=progress)
    n = results[0].sizes["patient"]
    rows, data = [], {}
    for name in outputs:
        vals = np.full((len(combos), n), np.nan)
        unts = np.full((len(combos), n), np.nan)
        has_unt = False
        for p, ds in enumerate(results):
            v, u, disp, visit = scalar_output(ds, name)
            vals[p] = v
            if u is not None:
                unts[p], has_unt = u, True
            stats = _stats(v, disp)
            ustats = _stats(u, disp) if u is not None else {}
            label = disp.label + (f", {visit}" if visit else "")
            rows.append({**{vv.path: combo_v for vv, combo_v in zip(varies, combos[p])}, "output": name,
                         "label": label, "units": disp.units if disp.kind != "binary" else "",
                         "statistic": (f"share of {n} patients" if disp.kind == "binary" else
                                       (f"median of {n} patients" if n > 1 else "one patient")),
                         "n": n, **stats, **{f"untreated_{k}": ustats.get(k, np.nan)
                                             for k in ("median", "q05", "q95")}})
        attrs = {"long_name": label.split(",")[0], "units": disp.units, "kind": disp.kind, "visit": visit}
        data[name] = (("point", "patient"), vals, attrs)
        if has_unt:
            data[f"{name}_untreated"] = (("point", "patient"), unts, {**attrs, "long_name": attrs["long_name"]
                                                                      + " (untreated)"})
    coords = {"point": np.arange(len(combos)), "patient": results[0]["patient"].values}
    for k, v in enumerate(varies):
        col = [c[k] for c in combos]
        coords[v.path] = ("point", np.array(col, dtype=object if any(isinstance(x, (list, str)) for x in col)
                                            else float), {"long_name": field_display(v.path).label,
                                                          "scale": v.scale})
    ds = xr.Dataset(data, coords=coords, attrs={"title": f"mscsim sweep: {sim.scenario.name}",
                                               "mscsim_version": __version__, "seed": sim.scenario.seed,
                                               "scenario": sim.scenario.model_dump_json(),
                                               "disclaimer": "Research tool output, not medical advice."})
    table = pd.DataFrame(rows, columns=[*paths, *TABLE_COLUMNS])
    return SweepResult(sim.scenario, tuple(varies), tuple(outputs), table, ds)


def _stats(v: np.ndarray, disp: Display) -> dict:
    if disp.kind == "binary":
        share = float(np.mean(np.asarray(v) >= 0.5))
        return {"median": share, "q05": np.nan, "q95": np.nan, "q025": np.nan, "q975": np.nan, "mean": share}
    b = band_frame(v)
    return {k: b[k] for k in ("median", "q05", "q95", "q025", "q975", "mean")}


__all__ = ["Vary", "SweepResult", "run_sweep", "scalar_output", "merge_problems", "simulate_points", "QUANTILES"]
