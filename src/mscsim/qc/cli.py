"""The ``mscsim qc`` subcommand: judge a lot against a release specification and write the report.

Exit status 0 whenever the analysis ran, released or not; an input problem raises MscsimError, which the
main CLI prints (exit 2). Outputs are written to a temporary folder and moved into place only when whole.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .settings import flow_settings
from .spec import presets

REPORT_FILES = ("qc_report.html", "qc_results.json", "manifest.json")


def add_parser(subparsers) -> None:
    """Register ``qc LOT.yaml --out DIR [--json] [--spec NAME_OR_PATH]`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "qc", help="release testing of an MSC lot from its own data (ISCT identity, safety, flow-cytometry files)",
        description="Judge an MSC lot against a release specification, criterion by criterion, from the lot "
                    "record and its FCS files; write qc_report.html and qc_results.json.")
    p.add_argument("lot", help="lot record YAML (paths inside it are relative to it)")
    p.add_argument("--out", required=True, help="output folder (created; replaced if it is an earlier mscsim output)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--spec", default=None,
                   help=f"a preset ({', '.join(presets())}) or the path of a spec YAML; default: the lot's own "
                        f"'spec', else {flow_settings().default_spec}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate the lot, write the report folder atomically, print the decision; MscsimError propagates."""
    from ..io.outputs import atomic_output_dir
    from .decision import evaluate_lot  # here, not at import: the CLI builds its parser on every command
    from .lot import load_lot
    from .report import render_html
    from .results import format_table, result_dict

    from ..io.outputs import check_output_dir

    lot_path = Path(args.lot)
    lot = load_lot(lot_path)
    check_output_dir(args.out)  # refused now, not after the analysis
    result = evaluate_lot(lot, args.spec)
    data = result_dict(result, lot_file=str(lot_path))
    page = render_html(result, data)
    with atomic_output_dir(args.out) as tmp:
        (tmp / "qc_report.html").write_text(page, encoding="utf-8")
        (tmp / "qc_results.json").write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
        manifest = {"mscsim_version": data["mscsim_version"], "command": "qc", "lot_file": data["lot_file"],
                    "spec": data["spec"]["name"], "released": data["released"], "files": list(REPORT_FILES)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False), encoding="utf-8")
    if args.json:
        print(json.dumps(data, indent=2, allow_nan=False))
    else:
        print(format_table(result))
        print(f"wrote {args.out}/qc_report.html, qc_results.json")
    return 0
