"""The mscsim command line: presets, simulate, citations, validate (and qc for cell lots)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import InputError, MscsimError

DISCLAIMER = "mscsim is a research tool, never medical advice."


def _progress(label: str):
    """A one-line progress indicator on stderr for long work."""

    def report(done: int, total: int) -> None:
        if total > 1:
            end = "\n" if done >= total else ""
            print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report


def _presets(args) -> int:
    import yaml

    from .analysis.validation import EXAMPLES

    for path in sorted(EXAMPLES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if "regimen" not in data:
            continue  # lot records and other non-scenario examples
        desc = " ".join(str(data.get("description", "")).split())
        print(f"{path.stem:32s} {desc[:100]}")
        print(f"{'':32s} file: {path}")
    return 0


def _simulate(args) -> int:
    from .io.outputs import check_output_dir, write_results
    from .io.scenario import load_scenario
    from .report.plots import cell_fate_figure, tissue_response_figure
    from .simulation import simulate

    from functools import partial

    scenario = load_scenario(_scenario_path(args.scenario))
    check_output_dir(args.out)  # before any work
    ds = simulate(scenario, progress=_progress("patients"))
    bands = None
    if scenario.uncertainty is not None:
        from .uncertainty.bands import simulate_bands

        bands = simulate_bands(scenario, ds, progress=_progress("parameter draws"),
                               screening=_progress("draws kept (enrolled disease)"))
    curves = bands.timecourse if bands is not None else None
    extra = {"tissue_response.png": partial(tissue_response_figure, bands=curves)} if scenario.disease else {}
    out = write_results(ds, args.out, scenario_path=str(args.scenario), figure=partial(cell_fate_figure, bands=curves),
                        figures=extra, bands=bands)
    v = ds["viable_total"].median("patient")
    adm = float(ds["administered"].max())
    print(f"{scenario.name}: {ds.sizes['patient']} patient(s), {ds.sizes['time']} time points, "
          f"{adm:.3g} cells administered")
    end = float(v[-1])
    shown = f"{end:.3g} cells ({end / adm:.2%} of administered)" if end >= 1 else "fewer than 1 cell"
    print(f"viable at end ({float(ds['time_days'][-1]):g} d, median patient): {shown}")
    if bands is not None:
        d = bands.draws
        print(f"bands: {len(d.index)} parameter draws ({d.condition}: {d.candidates} screened"
              + (f", {bands.failed} failed" if bands.failed else "") + "); median (90% interval) over the draws")
    if scenario.disease:
        _print_endpoints(ds, bands)
    files = ["results.nc", "summary.csv", "cell_fate.png", *extra] + \
        (["bands.csv", "draws.csv", "draws.nc"] if bands is not None else []) + ["manifest.json"]
    print(f"wrote {out}/" + ", ".join(files))
    print(DISCLAIMER)
    return 0


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
    """A path, or the name of a bundled preset."""
    from .analysis.validation import EXAMPLES

    p = Path(arg)
    if not p.exists() and (EXAMPLES / f"{arg}.yaml").exists():
        return EXAMPLES / f"{arg}.yaml"
    return p


def _citations(args) -> int:
    from .io.scenario import load_scenario
    from .simulation import resolve_setup

    setup = resolve_setup(load_scenario(_scenario_path(args.scenario)))
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
    from .io.sbml import export_sbml, sources
    from .io.scenario import load_scenario
    from .simulation import resolve_setup

    setup = resolve_setup(load_scenario(_scenario_path(args.scenario)))
    path = export_sbml(setup, args.out)
    m = setup.model
    print(f"{setup.scenario.name}: wrote {path} (SBML Level 3 Version 2: {m.n_states} species, "
          f"{len(m.process_names)} process reactions, {len(m.param_names)} parameters, {len(sources(setup))} sources)")
    print(DISCLAIMER)
    return 0


def _validate(args) -> int:
    from .analysis.validation import format_table, run_validation

    results = run_validation(progress=None if args.json else _progress("targets"))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(format_table(results))
    return 0


def _coculture(args) -> int:
    from .coculture import load_coculture, run_coculture
    from .coculture.report import write_coculture

    path = _scenario_path(args.preset)
    result = run_coculture(load_coculture(path))
    out = write_coculture(result, args.out, preset_path=str(path))
    print(result.table().to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out}/coculture.csv, coculture.png, manifest.json")
    print(DISCLAIMER)
    return 0


def _trial(args) -> int:
    from .trials import load_design, run_trial
    from .trials.report import comparison_table

    if args.workers < 1:
        raise InputError("--workers", args.workers, "an integer >= 1 (local processes)")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise InputError("--chunk-size", args.chunk_size, "an integer >= 1 (patients per chunk)")
    design, path = load_design(args.design)
    where = f"on {args.scheduler}" if args.scheduler else f"with {args.workers} worker(s)"
    print(f"{design.name}: {design.n_patients} patients in {len(design.arms)} arm(s), {where}", file=sys.stderr)
    result = run_trial(design, args.out, design_path=str(path), workers=args.workers, scheduler=args.scheduler,
                       chunk_size=args.chunk_size, progress=_progress("chunks"),
                       screening=_progress("parameter draws kept (enrolled disease)"))
    a = result.analysis
    prim = a.comparisons[(a.comparisons["endpoint"] == design.primary.endpoint)
                         & (a.comparisons["visit_day"] == design.primary.visit_day)]
    print(f"{design.title}")
    print(f"primary endpoint: {design.primary.endpoint} at day {design.primary.visit_day:g}")
    for _, r in prim.iterrows():
        band = (f"; parameter uncertainty {r['param_median']:.3g} (90% {r['param_low90']:.3g} to "
                f"{r['param_high90']:.3g})") if "param_median" in r and not _missing(r["param_median"]) else ""
        print(f"  {r['arm']} vs {r['control']}: {r['estimate']:.3g} (95% CI {r['ci_low']:.3g} to {r['ci_high']:.3g}), "
              f"p = {r['p_value']:.3g} ({r['test']}){band}")
    if len(a.published):
        print("published vs simulated:")
        print(comparison_table(a.published).to_string(index=False))
    print(f"wrote {result.out}/ (report.html, endpoints.parquet, patients.parquet, arm_summary.csv, forest.png, "
          f"timecourse.png, ...)")
    print(DISCLAIMER)
    return 0


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
    path = _scenario_path(arg)
    is_design = (DESIGN_DIR / f"{arg}.yaml").exists() and not path.exists()
    if path.exists() and not is_design:
        try:
            is_design = "arms" in (yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError:
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
    p.set_defaults(func=_simulate)
    p = sub.add_parser("citations", help="list the sources a scenario's run uses")
    p.add_argument("scenario")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_citations)
    p = sub.add_parser("export-sbml", help="write a scenario's model as SBML Level 3 Version 2 (COPASI, libRoadRunner, ...)")
    p.add_argument("scenario", help="scenario YAML file, or the name of a bundled preset")
    p.add_argument("-o", "--out", required=True, help="SBML file to write, e.g. model.xml")
    p.set_defaults(func=_export_sbml)
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
    p.add_argument("--chunk-size", type=int, default=None, help="patients per chunk (default: the design's)")
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
    p = sub.add_parser("credibility", help="one HTML page per disease in the spirit of ASME V&V 40: evidence grades, "
                       "the top sensitivity rankings, what was fitted to what, validation and trial agreement")
    p.add_argument("disease", help="knee_osteoarthritis, acute_gvhd or perianal_fistula")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MscsimError as exc:
        print(f"mscsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mscsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
