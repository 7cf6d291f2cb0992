"""The mscsim command line: a thin layer over the public API (``mscsim.api``): presets, simulate, parameters,
sweep, explore, citations, export-sbml, export-petab, validate, coculture, trial (and qc for cell lots)."""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import InputError, MscsimError
from .io._validation import exists

DISCLAIMER = "mscsim is a research tool, never medical advice."


def _progress(label: str):
    """A one-line progress indicator on stderr for long work."""
    from .progress import Progress

    return Progress(label).count


def _say(message: str) -> None:
    """A message on stderr on a line of its own (after an unfinished progress line, a newline first)."""
    from .progress import say

    say(message)


def _presets(args) -> int:
    from ._presets import preset_rows

    for r in preset_rows():
        print(f"{r['name']:32s} {r['description'][:100]}")
        print(f"{'':32s} file: {r['file']}")
    return 0


def _simulate(args) -> int:
    from .api import load
    from .display import fmt
    from .results import endpoint_lines, viable_line

    from .io.outputs import check_output_dir
    from .report import figure_worker
    from .simulation import check_scenario
    from .sizing import check_size

    sim = load(args.scenario)
    if args.label is not None:
        sim = _with_label(sim, args.label)
    check_scenario(sim.scenario)  # every name and value, before any work
    cost = check_size(sim.scenario, allow_large=args.allow_large)
    check_output_dir(args.out)  # refused now, not after the run
    if cost.patients > 1:
        _say(f"{sim.scenario.name}: {cost.describe()}")
    figure_worker.start()  # a helper process draws figures beside this one (starting while this one simulates)
    try:
        res = sim.run(progress=True, allow_large=args.allow_large)
        out = res.save(args.out, scenario_path=str(args.scenario))
    finally:
        figure_worker.stop()
    ds = res.data
    print(f"{sim.scenario.name}: {ds.sizes['patient']} patient(s), {ds.sizes['time']} time points, "
          f"{fmt(float(ds['administered'].max()))} cells administered")
    print(viable_line(ds))
    if res.has_endpoints:
        print("endpoints, treated beside the same patients untreated:")
        for line in endpoint_lines(ds):
            print(line)
    bands = res.parameter_bands
    if bands is not None:
        d = bands.draws
        print(f"parameter uncertainty: {len(d.index)} parameter draws ({d.condition}: {d.candidates} screened"
              + (f", {bands.failed} failed" if bands.failed else "") + "; "
              + (f"{', '.join(d.posterior_parameters)} from the posterior {d.posterior}" if d.posterior else
                 "every parameter from its prior") + "); median (90% interval) over the draws:")
        _print_endpoints(ds, bands)
    if "label" in ds.attrs:
        print(_imaging_line(ds))
    print(f"wrote {out}/" + ", ".join(_file_list(out)))
    print(DISCLAIMER)
    return 0


def _with_label(sim, label: str):
    """The scenario with ``--label`` (an imaging label on the cells); an unknown label is refused naming the
    labels with data."""
    from .errors import InputError
    from .model.labels import available_labels

    if label not in available_labels():
        raise InputError("--label", label, f"one of {available_labels()} (labels with data in "
                         "data/parameters/labels.yaml)", file=sim.origin)
    return sim._with(f"--label {label}", lambda data: data.update(label=label))


def _imaging_line(ds) -> str:
    """Where the label is (decay-corrected % of injected activity, first patient) at 2 h, 1 d and the end."""
    import numpy as np

    t = ds["time"].values
    organs = [n for n, v in ds.data_vars.items() if v.attrs.get("kind") == "imaging" and v.attrs.get("decay_corrected")]
    parts = []
    for th, say in ((2.0, "2 h"), (24.0, "1 d"), (float(t[-1]), f"{t[-1] / 24:g} d")):
        if th > t[-1]:
            continue
        i = int(np.argmin(np.abs(t - th)))
        shares = ", ".join(f"{n.removeprefix('imaging_').replace('_', ' ')} {float(ds[n].values[0, i]):.1f}" for n in organs
                           if float(ds[n].values[0, i]) >= 0.5)
        parts.append(f"{say}: {shares}")
    return f"{ds.attrs['label']} (% of injected activity, decay-corrected) " + "; ".join(parts)


def _file_list(out: Path) -> list[str]:
    """The files an output folder holds, figures grouped by name: cell_fate.png/.svg/.pdf."""
    import json

    files = json.loads((Path(out) / "manifest.json").read_text()).get("files", [])
    grouped: dict[str, list[str]] = {}
    for f in files:
        stem, _, ext = f.rpartition(".")
        if ext in ("png", "svg", "pdf"):
            grouped.setdefault(stem, []).append(ext)
        else:
            grouped[f] = []
    return [k if not v else f"{k}.{'/.'.join(v)}" for k, v in grouped.items()]


def _print_endpoints(ds, bands=None) -> None:
    """The endpoints at the disease's visits, treated against untreated (median patient, first patient's response);
    with parameter draws, the median over the draws and its 90% interval, e.g. ``pain_vas_day180: 45.6 (90% 38-55)``."""
    import numpy as np

    from .io.outputs import endpoint_columns

    cols = endpoint_columns(ds)

    def banded(key, v):
        b = bands.headline(key) if bands is not None else {}
        if not b or not np.isfinite(b.get("median", np.nan)):
            return f"{np.median(v):.3g}"
        return f"{b['median']:.3g} (90% {b['low90']:.3g}-{b['high90']:.3g})"

    for name, values in cols.items():
        if "_untreated" in name or "_effect_day" in name:
            continue
        first, _, rest = name.partition("_baseline") if "_baseline" in name else name.partition("_day")
        unt_key = f"{name}_untreated" if f"{name}_untreated" in cols else f"{first}_untreated{name[len(first):]}"
        unt = cols.get(unt_key)
        if np.asarray(values).dtype.kind == "f":
            line = f"  {name}: {banded(name, values)}" + (f"   untreated: {banded(unt_key, unt)}" if unt is not None else "")
        else:
            line = f"  {name}: {values[0]}" + (f"   untreated: {unt[0]}" if unt is not None else "")
        print(line)


def _scenario_path(arg: str) -> Path:
    """A path, or the name of a bundled preset (an unknown name is an error listing the presets)."""
    from .api import scenario_path

    return scenario_path(arg)


def _parameters(args) -> int:
    import pandas as pd

    from .api import load

    sim = load(args.scenario)
    table = sim.parameters(every=args.all)
    if args.grep:
        mask = table.apply(lambda r: r.astype(str).str.contains(args.grep, case=False, regex=False).any(), axis=1)
        table = table[mask]
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv} ({len(table)} parameters)")
        return 0
    if args.json:
        print(table.to_json(orient="records", indent=2))
        return 0
    shown = table.drop(columns=["note"] if not args.notes else []).copy()
    shown["value"] = [f"{v:.4g}" for v in shown["value"]]
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                           "display.max_colwidth", 60 if not args.notes else 200):
        print(f"{sim.scenario.name}: {len(table)} parameters "
              f"({'every one loaded' if args.all else 'those the run uses'}, then the endpoint coefficients); "
              "units as in the data files; grades: human, animal, in_vitro, assumed")
        print(shown.to_string(index=False))
    grades = table["grade"].value_counts()
    print("evidence grades: " + ", ".join(f"{k} {v}" for k, v in grades.items()))
    return 0


def _sweep(args) -> int:
    from .analysis.sweep import Vary
    from .api import load

    varies = [Vary.parse(v) for v in args.vary]
    sim = load(args.scenario)
    if args.patients is not None:
        sim = sim.with_population(args.patients)
    from .io.outputs import check_output_dir

    check_output_dir(args.out)
    result = sim.sweep({v.path: v.values for v in varies}, args.output, progress=True)
    out = result.save(args.out, scenario_path=str(args.scenario))
    for line in result.lines():
        print(line)
    if result.data.sizes["patient"] == 1:
        print("one patient per point: no bands (give --patients N for a virtual cohort)")
    print(f"wrote {out}/" + ", ".join(_file_list(out)))
    print(DISCLAIMER)
    return 0


def _explore(args) -> int:
    from .explore import serve

    serve(host=args.host, port=args.port, scenario=args.scenario, open_browser=not args.no_browser)
    return 0


def _citations(args) -> int:
    from .api import load

    setup = load(args.scenario).setup()
    refs = setup.citations()
    if args.json:
        print(json.dumps([{"key": r.key, "reference": r.formatted()} for r in refs], indent=2))
        return 0
    print(f"Sources used by {setup.scenario.name} ({len(refs)}):")
    for r in refs:
        print(f"  [{r.key}] {r.formatted()}")
    grades: dict[str, int] = {}
    for name in setup.parameter_names_used():
        g = setup.pset[name].grade
        grades[g] = grades.get(g, 0) + 1
    print("Evidence grades of the parameters used: " + ", ".join(f"{k} {v}" for k, v in sorted(grades.items())))
    return 0


def _export_sbml(args) -> int:
    from ._optional import require

    require("libsbml", "sbml", "SBML export")
    from .api import load
    from .io.sbml import export_sbml, sources

    setup = load(args.scenario).setup()
    path = export_sbml(setup, args.out)
    m = setup.model
    print(f"{setup.scenario.name}: wrote {path} (SBML Level 3 Version 2: {m.n_states} species, "
          f"{len(m.process_names)} process reactions, {len(m.param_names)} parameters, {len(sources(setup))} sources)")
    print(DISCLAIMER)
    return 0


def _export_petab(args) -> int:
    from .io.petab import export_petab

    out, problem = export_petab(args.target, args.out, progress=_say)
    p = problem.parameters
    print(f"{problem.disease} ({problem.scenario}): wrote {out}/ (problem.yaml, model.xml, conditions.tsv, "
          f"observables.tsv, measurements.tsv, parameters.tsv, NOT_EXPORTED.tsv, README.md): "
          f"{len(problem.measurements)} measurements in {len(problem.conditions) // 2} arm(s), "
          f"{int(p['estimate'].sum())} of {len(p)} parameters estimated, {len(problem.not_exported)} items not "
          f"exported (see NOT_EXPORTED.tsv); petab lint: no errors; SBML unit warnings: 0")
    print(DISCLAIMER)
    return 0


def _validate(args) -> int:
    from .analysis.validation import format_table, run_validation
    from .io import strict_json

    results = run_validation(progress=None if args.json else _progress("targets"))
    if args.json:
        print(strict_json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(format_table(results))
    return 0


def _coculture(args) -> int:
    from .coculture import load_coculture, run_coculture
    from .coculture.report import write_coculture

    from .io.outputs import check_output_dir

    path = _scenario_path(args.preset)
    spec = load_coculture(path)
    check_output_dir(args.out)  # refused now, not after the run
    result = run_coculture(spec)
    out = write_coculture(result, args.out, preset_path=str(path))
    print(result.table().to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}/coculture.csv, coculture.png, manifest.json")
    print(DISCLAIMER)
    return 0


def _trial(args) -> int:
    from .api import trial
    from .trials import load_design

    if args.workers < 1:
        raise InputError("--workers", args.workers, "an integer >= 1 (local processes)")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise InputError("--chunk-size", args.chunk_size, "an integer >= 1 (patients per chunk)")
    from .trials.runner import check_size, simulated_per_arm

    design, path = load_design(args.design)
    # on a Dask cluster the number of workers is the cluster's: no estimate, no refusal
    seconds = 0.0 if args.scheduler else check_size(design, args.workers, allow_large=args.allow_large,
                                                    file=str(path))
    where = f"on {args.scheduler}" if args.scheduler else f"with {args.workers} worker(s)"
    simulated = sum(simulated_per_arm(design).values())
    pool = f" ({simulated:,} simulated, with the resampling pools)" if simulated > design.n_patients else ""
    eta = f"; about {seconds / 60:.2g} min at the README's benchmark speed" if seconds >= 60 else ""
    _say(f"{design.name}: {design.n_patients:,} patients in {len(design.arms)} arm(s){pool}, {where}{eta}")
    run = trial(path, args.out, workers=args.workers, scheduler=args.scheduler, chunk_size=args.chunk_size,
                progress=True, notice=_say)
    print(trial_summary(run))
    print(f"wrote {run.out}/ (report.html, endpoints.parquet, patients.parquet, arm_summary.csv, forest.png, "
          f"timecourse.png, ...)")
    print(DISCLAIMER)
    return 0


def trial_summary(run) -> str:
    """What a trial run prints: the primary endpoint in the one virtual trial of the design's size, then the
    published numbers beside the virtual pool, each saying which it is."""
    from .display import display
    from .trials.observe import endpoint_kinds
    from .trials.report import comparison_table

    design = run.design
    lab = {a.name: a.label or a.name for a in design.arms}
    ep = display(design.primary.endpoint)
    units = f" ({ep.units})" if ep.units else ""
    sizes = ", ".join(f"{lab[a.name]}: {a.n} patients" for a in design.arms)
    lines = [design.title,
             f"primary endpoint: {ep.label}{units}"
             + ("" if f"day-{design.primary.visit_day:g}" in ep.label or f"day {design.primary.visit_day:g}" in ep.label
                else f" at day {design.primary.visit_day:g}") + ", "
             + ("rate" if endpoint_kinds(design).get(design.primary.endpoint) == "binary" else "change from baseline"),
             f"this one virtual trial ({sizes}), difference against control:"]
    for _, r in run.primary().iterrows():
        band = (f"; parameter uncertainty {r['param_median']:.3g} (90% {r['param_low90']:.3g} to "
                f"{r['param_high90']:.3g})") if "param_median" in r and not _missing(r["param_median"]) else ""
        lines.append(f"  {lab.get(r['arm'], r['arm'])} vs {lab.get(r['control'], r['control'])}: {r['estimate']:.3g} "
                     f"(95% CI {r['ci_low']:.3g} to {r['ci_high']:.3g}), p = {r['p_value']:.3g} ({r['test']}){band}")
    from .trials.observe import response_parts
    from .trials.report import response_table

    if (design.inclusion or any(a.inclusion for a in design.arms)) and "enrolled" in run.patients:
        failed = int((~run.patients["enrolled"].astype(bool)).sum())
        rule = "; ".join([", ".join(c.describe() for c in design.inclusion)] * bool(design.inclusion) + [
            f"arm '{a.name}': " + ", ".join(c.describe() for c in a.inclusion) for a in design.arms if a.inclusion])
        lines.append(f"screening: {failed} of {len(run.patients):,} simulated patients failed the inclusion at "
                     f"baseline ({rule}); they are not followed, and the next enrolled patient takes their place")
    responses = response_table(run.summary, response_parts(design))
    if len(responses):
        lines.append("responses in this one virtual trial (complete, partial, overall = complete or partial):")
        for _, r in responses.iterrows():
            lines.append(f"  {lab.get(r['arm'], r['arm'])}, {display(r['response']).label} (n = {r['n']}): "
                         f"complete {r['complete']:.0%}, partial {r['partial']:.0%}, overall {r['overall']:.0%}")
    if len(run.published):
        pred = design.prediction
        how = (f"simulated: the value over {pred.pool_per_arm} virtual patients per arm, with the 95% range of "
               f"{pred.replicates:,} in-silico repeats of the trial at its published size" if pred else
               "simulated: this one virtual trial, with its 95% confidence interval")
        lines.append(f"published vs simulated ({how}):")
        table = comparison_table(run.published).drop(columns=["interval"])
        table["arm"] = [lab.get(a, a) for a in table["arm"]]
        table["endpoint"] = [display(e).label for e in table["endpoint"]]
        lines.append(table.to_string(index=False))
    return "\n".join(lines)


def _sensitivity(args) -> int:
    from .analysis.sensitivity import check_options, run_sensitivity
    from .io.outputs import check_output_dir

    samples = args.samples if args.samples is not None else (args.trajectories if args.method == "morris" else 256)
    check_options(args.method, samples, args.trajectories if args.method == "sobol" else samples, args.top,
                  args.workers, args.chunk_size)  # before any work
    check_output_dir(args.out)
    target, seed = sensitivity_target(args.target, args.output, args.patients)
    seed = args.seed if args.seed is not None else seed

    def report(done, total, stage):
        _progress(stage)(done, total)

    result = run_sensitivity(target, args.out, method=args.method, samples=args.samples,
                             trajectories=args.trajectories, top=args.top, seed=seed, workers=args.workers,
                             chunk_rows=args.chunk_size, progress=report)
    m, t = result.manifest, result.table
    print(f"sensitivity of {m['output']} (nominal {m['nominal_output']:.4g} {m['output_units']}) over "
          f"{m['uncertain_parameters']} uncertain parameters: {m['evaluations']} evaluations"
          + (f", {m['failed_evaluations']} failed" if m["failed_evaluations"] else "") + f", {m['wall_time_s']:g} s")
    if "ST" in t.columns:
        print("rank  parameter                      total (ST)             first order (S1)   grade")
        for _, r in t[t["ST"].notna()].iterrows():
            print(f"{_rank(r['sobol_rank']):>4}  {r['parameter']:30s} {r['ST']:.3f} ({r['ST_low']:.3f}-{r['ST_high']:.3f})"
                  f"   {r['S1']:.3f} ({r['S1_low']:.3f}-{r['S1_high']:.3f})   {'' if _missing(r['grade']) else r['grade']}")
        c = m["convergence"]["sobol"]
        print(f"convergence: total indices at {c['samples'][0]} vs {c['samples'][1]} samples differ by at most "
              f"{c['max_abs_change_ST']:.3f} ({'stable' if c['stable'] else 'NOT stable: use more --samples'})")
    else:
        print("rank  parameter                      Morris mu* (95% CI)   grade")
        for _, r in t.head(args.top).iterrows():
            print(f"{_rank(r['morris_rank']):>4}  {r['parameter']:30s} {r['mu_star']:.4g} (+/- {r['mu_star_conf']:.2g})"
                  f"   {r['grade']}")
        c = m["convergence"]["morris"]
        print(f"convergence: top {args.top} at {c['trajectories'][0]} vs {c['trajectories'][1]} trajectories overlap "
              f"{c['top_overlap']:.0%} ({'stable' if c['stable'] else 'NOT stable: use more trajectories'})")
    print(f"wrote {result.out}/ (sensitivity.csv, convergence.csv, sensitivity.png, evaluations.npz, manifest.json)")
    print(DISCLAIMER)
    return 0


def _calibrate(args) -> int:
    from .calibration.problem import build_problem
    from .calibration.run import Settings, calibrate, load_training, write_calibration
    from .io.outputs import check_output_dir
    from .progress import Progress

    settings = Settings(points=args.points, walkers=args.walkers, steps=args.steps, burn=args.burn, seed=args.seed,
                        refine=args.refine, heterogeneity=not args.no_heterogeneity)
    settings.check()  # before any work
    check_output_dir(args.out)
    problem = build_problem(args.disease, parameters=args.parameters, top=args.top, pool=args.pool,
                            exclude=tuple(args.exclude or ()), designs=args.targets)
    bar = Progress("calibrate")

    def report(kind, *a):
        if kind == "say":  # a counted step: its counts follow
            bar.close()
            _say(f"calibrate: {a[0]}")
        elif kind == "stage":
            if a[0] is None:
                bar.close()
            else:
                bar.stage(a[0])
        else:
            bar.count(*a)

    store = Path(f"{Path(args.out)}.training")  # finished training blocks: a stopped run resumes from them
    training = load_training(args.reuse_training, problem, settings) if args.reuse_training else None
    cal, loo = calibrate(problem, settings, loo=args.loo, progress=report, store=store, training=training)
    out = write_calibration(cal, args.out, loo)
    shutil.rmtree(store, ignore_errors=True)
    m = cal.manifest
    print(f"{problem.disease}: {len(problem.names)} parameters calibrated against {m['targets']} published numbers "
          f"of {len(m['designs']) - len(m['excluded_designs'])} trial(s)"
          + (f" ({m['held_out']} held out: {', '.join(m['excluded_designs'])})" if m["held_out"] else "")
          + f"; {m['seconds']['total']:g} s")
    print("parameter                      prior 95%              posterior median (95%)       R-hat  ESS   constrained")
    for _, r in cal.parameters.iterrows():
        print(f"{r['parameter']:30s} {r['prior_2.5%']:.3g}-{r['prior_97.5%']:.3g}".ljust(54)
              + f"{r['posterior_median']:.3g} ({r['posterior_2.5%']:.3g}-{r['posterior_97.5%']:.3g})".ljust(29)
              + f"{r['rhat']:.3f}  {r['ess_bulk']:<5.0f} {'yes' if r['constrained'] else 'NO'}")
    print(f"diagnostics: {'pass' if m['diagnostics_pass'] else 'DO NOT PASS (see parameters.csv)'} (R-hat < 1.01, "
          f"bulk ESS >= 400, >= 50 autocorrelation times; acceptance {m['sampler']['acceptance']:.2f})")
    ins = m["inside_95"]
    print(f"published numbers inside their 95% posterior predictive interval: calibrated against "
          f"{ins['calibrated_against']:.0%}" + (f", held out {ins['held_out']:.0%}" if ins["held_out"] is not None
                                               else ""))
    if loo is not None:
        print(f"leave-one-trial-out: {loo['inside_95'].mean():.0%} of {len(loo)} published numbers inside their 95% "
              "interval predicted without their own trial")
    for pair in m["correlated_pairs"]:
        print(f"note: {pair['a']} and {pair['b']} trade off (Spearman {pair['spearman']:+.2f})")
    print(f"wrote {out}/ (posterior.nc, posterior.csv, parameters.csv, predictions.csv, figures, manifest.json"
          + (", leave_one_out.csv" if loo is not None else "") + ")")
    print(DISCLAIMER)
    return 0


def _rank(v) -> str:
    return "-" if _missing(v) else str(int(v))


def _missing(v) -> bool:
    """None, NaN or pandas' NA (a table cell with no value)."""
    import pandas as pd

    return v is None or bool(pd.isna(v))


def sensitivity_target(arg: str, output: str, patients: int):
    """(target, default seed) for ``mscsim sensitivity``: 'validation' (output = a target id), a trial design
    (a bundled name or a YAML file with arms), or a scenario (a preset name or a scenario file)."""
    import yaml

    from .analysis.outputs import design_target, scenario_target, validation_target
    from .io.scenario import load_scenario
    from .trials.design import DESIGN_DIR, load_design

    if arg == "validation":
        return validation_target(output), 0
    if exists(DESIGN_DIR / f"{arg}.yaml") and not exists(arg):  # a bundled trial design by name
        design, _ = load_design(arg)
        return design_target(design, output, patients), design.seed
    path = _scenario_path(arg)
    try:  # a design file has arms; anything unreadable is left to the scenario loader's clear error
        is_design = "arms" in (yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, OSError, TypeError, UnicodeDecodeError):
        is_design = False
    if is_design:
        design, _ = load_design(arg)
        return design_target(design, output, patients), design.seed
    scenario = load_scenario(path)
    return scenario_target(scenario, output), scenario.seed


def _credibility(args) -> int:
    from .analysis.credibility import disease_context, write_credibility

    disease_context(args.disease)  # a clear error before any work
    out = write_credibility(args.disease, args.out, sensitivity=args.sensitivity, trials=args.trials,
                            progress=_progress("validation targets"))
    print(f"wrote {out}/credibility_{args.disease}.html, credibility_{args.disease}.json, manifest.json")
    print(DISCLAIMER)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mscsim", description=f"Mechanistic simulator of MSC therapy. {DISCLAIMER}")
    parser.add_argument("--version", action="version", version=f"mscsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("presets", help="list the bundled example scenarios")
    p.set_defaults(func=_presets)
    p = sub.add_parser("simulate", help="run a scenario and write results.nc, summary.csv, a plot and a manifest")
    p.add_argument("scenario", help="scenario YAML file, or the name of a bundled preset")
    p.add_argument("--out", required=True, help="output folder (created; replaced if it is an earlier mscsim output)")
    p.add_argument("--allow-large", action="store_true", help="run a cohort whose results would not fit in 2 GiB of "
                   "memory (refused otherwise; 'mscsim trial' streams large cohorts to disk)")
    p.add_argument("--label", default=None, metavar="LABEL", help="an imaging label on the cells (e.g. 111In-oxine): "
                   "also writes imaging.csv and an imaging figure, each organ's share of the injected activity")
    p.set_defaults(func=_simulate)
    p = sub.add_parser("parameters", help="list a scenario's parameters: value, units, bounds, between-patient and "
                       "uncertainty distributions, evidence grade and sources")
    p.add_argument("scenario", help="scenario YAML file, or the name of a bundled preset")
    p.add_argument("--all", action="store_true", help="every parameter loaded for the scenario, not only those used")
    p.add_argument("--grep", default=None, help="only rows containing this text (name, source, note, ...)")
    p.add_argument("--notes", action="store_true", help="show each parameter's note (where its value comes from)")
    p.add_argument("--csv", default=None, help="write the table to this CSV file instead")
    p.add_argument("--json", action="store_true", help="print the table as JSON records")
    p.set_defaults(func=_parameters)
    p = sub.add_parser("sweep", help="run a scenario over a range of doses (or timing, route, guidance, product, "
                       "patient) and write the curve with its bands as CSV and plots")
    p.add_argument("scenario", help="scenario YAML file, or the name of a bundled preset")
    p.add_argument("--vary", action="append", required=True, metavar="FIELD=VALUES",
                   help="a scenario field and its values: regimen.dose.cells=1e6:1e9:log:9 (a log range of 9), "
                        "product.viability=0.5:0.95:lin:4, regimen.guidance=ultrasound,landmark, "
                        "regimen.times_days=[[0],[0,28]]; repeat for a grid")
    p.add_argument("--output", action="append", required=True, metavar="NAME",
                   help="what to read per patient: an endpoint or state at a day (pain_vas_day180, "
                        "msc_target_day7, tnf_baseline, viable_total_end), a response (response_day28), or a "
                        "column of summary.csv (target_exposure_cell_days); repeat for several")
    p.add_argument("--patients", type=int, default=None, help="virtual patients per point, with between-patient "
                   "variability (default: the scenario's population); bands need more than one")
    p.add_argument("--out", required=True, help="output folder (created; replaced if it is an earlier mscsim output)")
    p.set_defaults(func=_sweep)
    p = sub.add_parser("explore", help="open a local browser app: pick a disease, product, route, dose and patient "
                       "and see the kinetics, tissue response, endpoints, dose-response and trial power")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 picks a free one)")
    p.add_argument("--scenario", default="knee_oa_ia_5e7", help="the preset or scenario file it opens with")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.set_defaults(func=_explore)
    p = sub.add_parser("citations", help="list the sources a scenario's run uses")
    p.add_argument("scenario")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_citations)
    p = sub.add_parser("export-sbml", help="write a scenario's model as SBML Level 3 Version 2 (COPASI, libRoadRunner, ...)")
    p.add_argument("scenario", help="scenario YAML file, or the name of a bundled preset")
    p.add_argument("-o", "--out", required=True, help="SBML file to write, e.g. model.xml")
    p.set_defaults(func=_export_sbml)
    p = sub.add_parser("export-petab", help="write a disease's calibration problem as PEtab v1 (SBML model, conditions, "
                       "observables, measurements, parameters with priors) for pyPESTO, AMICI or COPASI",
                       description="Write the calibration problem of a disease as PEtab v1: the preset's SBML model "
                       "(as export-sbml), one condition per trial arm the model can express (with an untreated "
                       "preequilibration condition for the burn-in to the chronic state), the continuous endpoints "
                       "as observables, the published arm means and medians as measurements, and the parameters "
                       "(the influential uncertain ones estimated, with priors from their uncertainty). PEtab "
                       "describes one typical patient per arm: it cannot express virtual cohorts (population "
                       "draws), responder or remission rates, response categories or differences between arms; each "
                       "item left out is listed with its reason in NOT_EXPORTED.tsv. A disease whose published "
                       "numbers are all rates (acute_gvhd, perianal_fistula) has nothing a typical patient can be "
                       "compared to and is refused.")
    p.add_argument("target", metavar="DISEASE_OR_SCENARIO", help="knee_osteoarthritis, lumbar_disc_degeneration, ... "
                   "(the disease's preset), or a disease scenario (preset name or YAML file)")
    p.add_argument("-o", "--out", required=True, help="output folder (created; replaced if it is an earlier mscsim "
                   "output); written whole after petab's lint passes, or not at all")
    p.set_defaults(func=_export_petab)
    p = sub.add_parser("coculture", help="run an in vitro co-culture preset (MSC with stimulated PBMC or "
                       "macrophages) and write coculture.csv, coculture.png and a manifest")
    p.add_argument("preset", help="co-culture preset YAML file, or the name of a bundled one (coculture_pbmc, "
                   "coculture_macrophage)")
    p.add_argument("--out", required=True, help="output folder (created; replaced if it is an earlier mscsim output)")
    p.set_defaults(func=_coculture)
    p = sub.add_parser("trial", help="run a virtual trial design (arms, cohort, visits, endpoints) and write "
                       "per-patient results, statistics, plots and an HTML report beside the published results")
    p.add_argument("design", help="trial design YAML file, or the name of a bundled design")
    p.add_argument("--out", required=True, help="output folder (created; replaced if it is an earlier mscsim output); "
                   "finished chunks are kept in <out>.chunks until the trial is done, so a rerun resumes")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", default=None, help="a Dask scheduler address (tcp://host:port): run the chunks "
                   "on that cluster instead of local processes")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="patients per chunk (default: the design's solver.chunk_size, 512 unless it says)")
    p.add_argument("--allow-large", action="store_true", help="run a design estimated to take more than 2 hours "
                   "(refused otherwise)")
    p.set_defaults(func=_trial)
    p = sub.add_parser("sensitivity", help="global sensitivity of one output over the parameters' uncertainty "
                       "(SALib: Morris screening of every parameter, then Sobol indices of the top ones)")
    p.add_argument("target", metavar="SCENARIO_OR_DESIGN", help="a scenario (preset name or YAML), a trial design "
                   "(bundled name or YAML), or 'validation' (then --output is a validation target id)")
    p.add_argument("--output", required=True, help="the output: a summary.csv column or TISSUE_STATE_dayD of a "
                   "scenario (pain_vas_day180, pain_vas_effect_day180, viable_target_cells_7d, damage_day28); "
                   "difference:ENDPOINT_dayD[:ARM], change:... or mean:...:ARM of a design; a validation target id")
    p.add_argument("--out", required=True, help="output folder (created; replaced if it is an earlier mscsim output); "
                   "finished chunks are kept in <out>.chunks until the run is done, so a rerun resumes")
    p.add_argument("--method", choices=["morris", "sobol"], default="sobol", help="morris: screening only; sobol "
                   "(default): Morris screening, then Sobol indices of the --top parameters")
    p.add_argument("--samples", type=int, default=None, help="Morris trajectories (morris) or Sobol base samples, a "
                   "power of two (sobol; default 256)")
    p.add_argument("--trajectories", type=int, default=10, help="Morris trajectories of the screening (default 10)")
    p.add_argument("--top", type=int, default=10, help="parameters given their own Sobol indices (default 10)")
    p.add_argument("--patients", type=int, default=20, help="patients per arm for a design output (default 20)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the scenario's or design's)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--chunk-size", type=int, default=128, help="parameter sets per batch and per chunk on disk")
    p.set_defaults(func=_sensitivity)
    p = sub.add_parser("calibrate", help="Bayesian calibration of a disease's influential parameters against every "
                       "published number of its bundled trials (GP emulator + emcee), with diagnostics and a posterior file")
    p.add_argument("disease", help="knee_osteoarthritis, acute_gvhd, perianal_fistula, lumbar_disc_degeneration, "
                   "tendinopathy, diabetic_foot_ulcer or lupus_nephritis")
    p.add_argument("--out", required=True, help="output folder (created; replaced if it is an earlier mscsim output)")
    p.add_argument("--targets", nargs="+", default=None, metavar="DESIGN", help="the trial designs whose published "
                   "numbers are used (default: every bundled design of the disease)")
    p.add_argument("--exclude", nargs="+", default=None, metavar="DESIGN", help="designs held out: predicted, not "
                   "calibrated against")
    p.add_argument("--parameters", nargs="+", default=None, help="parameters to calibrate (default: the --top "
                   "influential ones of the bundled sensitivity record and the designs' placebo/standard-care responses)")
    p.add_argument("--top", type=int, default=4, help="strongest influential model parameters calibrated, besides "
                   "the MSC efficacy parameters that earlier single-number fits set (default 4)")
    p.add_argument("--pool", type=int, default=200, help="virtual patients per arm in every model run (default 200)")
    p.add_argument("--points", type=int, default=256, help="emulator training points, a power of two (default 256)")
    p.add_argument("--walkers", type=int, default=48, help="emcee walkers (default 48)")
    p.add_argument("--steps", type=int, default=16000, help="emcee steps per walker (default 16000)")
    p.add_argument("--burn", type=int, default=4000, help="steps discarded as burn-in (default 4000)")
    p.add_argument("--seed", type=int, default=20261206, help="seed of the design, sampler and predictive draws")
    p.add_argument("--refine", type=int, default=128, help="a second wave of this many training points drawn from "
                   "the first posterior, the emulator refitted on both waves and sampled again (default 128; 0: one "
                   "wave; leave-one-out keeps the first wave's emulator, trained over the prior)")
    p.add_argument("--no-heterogeneity", action="store_true", help="no between-trial random effects: every trial "
                   "a replicate of one typical trial (default: random effects on each trial's common response and "
                   "cells' effect, with the empirical priors of data/calibration/heterogeneity.yaml)")
    p.add_argument("--loo", action="store_true", help="also leave-one-trial-out: each trial predicted by the posterior "
                   "calibrated without it (leave_one_out.csv)")
    p.add_argument("--reuse-training", default=None, metavar="TRAINING_NPZ", help="the training.npz of an earlier "
                   "calibration of the same problem: skip the model runs (e.g. to rerun the sampler or --loo)")
    p.set_defaults(func=_calibrate)
    p = sub.add_parser("credibility", help="one HTML page per disease in the spirit of ASME V&V 40: evidence grades, "
                       "the top sensitivity rankings, what was fitted to what, validation and trial agreement")
    p.add_argument("disease", help="knee_osteoarthritis, acute_gvhd, perianal_fistula, lumbar_disc_degeneration, "
                   "tendinopathy, diabetic_foot_ulcer or lupus_nephritis")
    p.add_argument("--out", required=True, help="output folder (created; replaced if it is an earlier mscsim output)")
    p.add_argument("--sensitivity", nargs="+", default=None, help="'mscsim sensitivity' output folders to show "
                   "(default: the bundled record of the preset's primary outputs)")
    p.add_argument("--trials", nargs="+", default=None, help="'mscsim trial' output folders to show (default: the "
                   "bundled record of the disease's designs)")
    p.set_defaults(func=_credibility)
    p = sub.add_parser("validate", help="run every bundled validation target and report observed vs simulated")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_validate)
    try:
        from .qc.cli import add_parser as add_qc
    except ImportError:  # the QC package is optional at import time only while it is being built
        add_qc = None
    if add_qc is not None:
        add_qc(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop, keep what can be resumed, say so."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 0 on success, 2 on bad input or a run whose numbers cannot be trusted (one line
    on stderr naming the file and field), 130 on Ctrl-C and 143 on SIGTERM (partial work left resumable)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except MscsimError as exc:
        _say(f"mscsim: error: {' '.join(str(exc).split())}")
        return 2
    except OSError as exc:  # the disk, not the input: a full disk, a folder without write permission
        if isinstance(exc, BrokenPipeError):  # the reader (head, less) went away: nothing more to say
            sys.stderr.close()
            return 0
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"mscsim: error: {where}{exc.strerror or exc}")
        return 2
    except KeyboardInterrupt as exc:
        detail = " ".join(str(exc).split()) or "nothing was written (outputs are written only when complete)"
        _say(f"mscsim: interrupted; {detail}")
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def console() -> None:
    """The ``mscsim`` command: :func:`main`, then exit without the interpreter's final garbage collections.

    At exit the heap holds SymPy, Numba and matplotlib objects; the interpreter's last collections walk all of
    them (about 0.8 s of a cached ``mscsim simulate``). ``gc.freeze()`` moves them out of the collector's reach;
    every output is already written and closed, and objects still go away by reference counting. Only here, not
    in :func:`main`, which tests and notebooks call many times in one process."""
    code = main()
    sys.stdout.flush()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
