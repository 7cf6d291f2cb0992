"""The mscsim command line: presets, simulate, citations, validate (and qc for cell lots)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import MscsimError

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
    from .io.outputs import write_results
    from .io.scenario import load_scenario
    from .report.plots import cell_fate_figure
    from .simulation import simulate

    scenario = load_scenario(_scenario_path(args.scenario))
    ds = simulate(scenario, progress=_progress("patients"))
    out = write_results(ds, args.out, scenario_path=str(args.scenario), figure=cell_fate_figure)
    v = ds["viable_total"].median("patient")
    adm = float(ds["administered"].max())
    print(f"{scenario.name}: {ds.sizes['patient']} patient(s), {ds.sizes['time']} time points, "
          f"{adm:.3g} cells administered")
    end = float(v[-1])
    shown = f"{end:.3g} cells ({end / adm:.2%} of administered)" if end >= 1 else "fewer than 1 cell"
    print(f"viable at end ({float(ds['time_days'][-1]):g} d, median patient): {shown}")
    print(f"wrote {out}/results.nc, summary.csv, cell_fate.png, manifest.json")
    print(DISCLAIMER)
    return 0


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
