"""The mscsim command line: presets, simulate, citations, validate (and qc for cell lots)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import InputError, MscsimError

DISCLAIMER = "mscsim is a research tool, never medical advice."


_LINE_OPEN = False  # a progress line is on stderr without its newline yet


def _progress(label: str):
    """A one-line progress indicator on stderr for long work."""

    def report(done: int, total: int) -> None:
        global _LINE_OPEN
        if total > 1:
            end = "\n" if done >= total else ""
            print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)
            _LINE_OPEN = done < total

    return report


def _say(message: str) -> None:
    """A message on stderr on a line of its own (after an unfinished progress line, a newline first)."""
    global _LINE_OPEN
    if _LINE_OPEN:
        print(file=sys.stderr)
        _LINE_OPEN = False
    print(message, file=sys.stderr, flush=True)


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
    from .io.outputs import write_results
    from .io.scenario import load_scenario
    from .report.plots import cell_fate_figure, tissue_response_figure
    from .simulation import simulate

    from .io.outputs import check_output_dir
    from .simulation import check_scenario
    from .sizing import check_size

    scenario = load_scenario(_scenario_path(args.scenario))
    check_scenario(scenario)  # every name and value, before any work
    cost = check_size(scenario, allow_large=args.allow_large)
    check_output_dir(args.out)  # refused now, not after the run
    if cost.patients > 1:
        _say(f"{scenario.name}: {cost.describe()}")
    ds = simulate(scenario, progress=_progress("patients"), allow_large=args.allow_large)
    extra = {"tissue_response.png": tissue_response_figure} if scenario.disease else {}
    out = write_results(ds, args.out, scenario_path=str(args.scenario), figure=cell_fate_figure, figures=extra)
    v = ds["viable_total"].median("patient")
    adm = float(ds["administered"].max())
    print(f"{scenario.name}: {ds.sizes['patient']} patient(s), {ds.sizes['time']} time points, "
          f"{adm:.3g} cells administered")
    end = float(v[-1])
    shown = f"{end:.3g} cells ({end / adm:.2%} of administered)" if end >= 1 else "fewer than 1 cell"
    print(f"viable at end ({float(ds['time_days'][-1]):g} d, median patient): {shown}")
    if scenario.disease:
        _print_endpoints(ds)
    print(f"wrote {out}/" + ", ".join(["results.nc", "summary.csv", "cell_fate.png", *extra, "manifest.json"]))
    print(DISCLAIMER)
    return 0


def _print_endpoints(ds) -> None:
    """The endpoints at the disease's visits, treated against untreated (median patient, first patient's response)."""
    import numpy as np

    from .io.outputs import endpoint_columns

    cols = endpoint_columns(ds)
    for name, values in cols.items():
        if "_untreated" in name:
            continue
        first, _, rest = name.partition("_baseline") if "_baseline" in name else name.partition("_day")
        unt = cols.get(f"{name}_untreated", cols.get(f"{first}_untreated{name[len(first):]}"))
        show = (lambda v: f"{np.median(v):.3g}") if np.asarray(values).dtype.kind == "f" else (lambda v: str(v[0]))
        print(f"  {name}: {show(values)}" + (f"   untreated: {show(unt)}" if unt is not None else ""))


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
    from .trials import load_design, run_trial
    from .trials.report import comparison_table

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
    result = run_trial(design, args.out, design_path=str(path), workers=args.workers, scheduler=args.scheduler,
                       chunk_size=args.chunk_size, progress=_progress("chunks"), notice=_say)
    a = result.analysis
    prim = a.comparisons[(a.comparisons["endpoint"] == design.primary.endpoint)
                         & (a.comparisons["visit_day"] == design.primary.visit_day)]
    print(f"{design.title}")
    print(f"primary endpoint: {design.primary.endpoint} at day {design.primary.visit_day:g}")
    for _, r in prim.iterrows():
        print(f"  {r['arm']} vs {r['control']}: {r['estimate']:.3g} (95% CI {r['ci_low']:.3g} to {r['ci_high']:.3g}), "
              f"p = {r['p_value']:.3g} ({r['test']})")
    if len(a.published):
        print("published vs simulated:")
        print(comparison_table(a.published).to_string(index=False))
    print(f"wrote {result.out}/ (report.html, endpoints.parquet, patients.parquet, arm_summary.csv, forest.png, "
          f"timecourse.png, ...)")
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
    p.add_argument("--allow-large", action="store_true", help="run a design estimated to take more than 2 hours "
                   "(refused otherwise)")
    p.set_defaults(func=_trial)
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
    global _LINE_OPEN
    _LINE_OPEN = False
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


if __name__ == "__main__":
    sys.exit(main())
