"""A QC result as plain data (qc_results.json) and as a text table for the terminal."""

from __future__ import annotations

import math

import numpy as np

from .decision import QCResult
from .flow import TubeResult
from .lot import lot_product_fields
from ..io.strict_json import strict

DISCLAIMER = ("mscsim is a research tool, never medical advice; a release decision here does not replace the "
              "lot's approved release procedure.")


def mscsim_version() -> str:
    """The package version; from the installed metadata if the package module cannot say."""
    try:
        from .. import __version__

        return str(__version__)
    except Exception:  # noqa: BLE001 - the package __init__ may be mid-edit; metadata still answers
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("mscsim")
        except PackageNotFoundError:
            return "unknown"


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def tube_dict(t: TubeResult) -> dict:
    g = t.gated
    return {
        "name": t.name,
        "file": str(t.file),
        "fcs_version": None if g is None else g.data.version,
        "compensation": None if g is None else g.data.compensated_with,
        "counts": None if g is None else g.counts(),
        "viable_fraction_of_singlets": t.viable_fraction,
        "problem": t.problem,
        "gates": None if g is None else {
            "scatter": {"fsc": g.scatter.fsc, "ssc": g.scatter.ssc, "fsc_min": _num(g.scatter.fsc_min),
                        "fsc_max": _num(g.scatter.fsc_max), "ssc_min": _num(g.scatter.ssc_min),
                        "ssc_max": _num(g.scatter.ssc_max), "automatic": g.scatter.automatic},
            "singlet": {"kind": g.singlet.kind, "channels": list(g.singlet.channels), "low": _num(g.singlet.low),
                        "high": _num(g.singlet.high), "automatic": g.singlet.automatic},
            "viability": None if g.viability is None else {
                "channel": g.viability.channel, "threshold": _num(g.viability.threshold),
                "automatic": g.viability.automatic},
        },
        "channels": [{
            "channel": c.channel, "markers": list(c.markers), "label": None if g is None else g.data.label(c.channel),
            "percent_positive": _num(c.percent_positive), "threshold": _num(c.threshold),
            "threshold_source": c.threshold_source,
            "control_file": None if c.control_file is None else str(c.control_file),
            "control_events": c.control_events,
            "control_percent_above": None if c.control_values is None or c.threshold is None
            or not c.control_values.size else
            100.0 * float(np.count_nonzero(c.control_values > c.threshold)) / c.control_values.size,
        } for c in t.channels],
        "warnings": [] if g is None else list(g.data.warnings),
    }


def result_dict(result: QCResult, lot_file: str | None = None) -> dict:
    """Everything the report says, as JSON-ready data: decision per criterion, flow analysis, provenance."""
    from ..model.references import bibliography

    bib = bibliography()
    keys = list(dict.fromkeys(k for c in result.criteria for k in c.source))
    return strict({
        "mscsim_version": mscsim_version(),
        "lot_file": lot_file or (str(result.lot.file) if result.lot.file else None),
        "lot_id": result.lot_id,
        "spec": {"name": result.spec.name, "title": result.spec.title, "file": result.spec.file},
        "released": result.released,
        "decision": "RELEASED" if result.released else "NOT RELEASED",
        "failed": result.failed,
        "criteria": [c.as_dict() for c in result.criteria],
        "product_fields": lot_product_fields(result.lot),
        "lot": result.lot.model_dump(mode="json"),
        "flow": None if result.flow is None else {"tubes": [tube_dict(t) for t in result.flow.tubes]},
        "citations": {k: (bib[k].formatted() if k in bib else k) for k in keys},
        "analysis_problems": result.problems,
        "disclaimer": DISCLAIMER,
    })


def format_table(result: QCResult) -> str:
    """The decision per criterion and overall, as a fixed-width table."""
    lot = result.lot
    history = ", ".join(x for x in (lot.source, None if lot.passage is None else f"passage {lot.passage}",
                                    lot.cryo_state) if x)
    rows = [(c.label, c.measured_text(), c.limit, c.status.replace("_", " "), ", ".join(c.source))
            for c in result.criteria]
    head = ("criterion", "measured", "limit", "result", "source")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [f"Lot {lot.lot_id} ({history}); specification {result.spec.name}", line(head),
           line(tuple("-" * w for w in widths)), *map(line, rows), ""]
    if result.released:
        out.append("Decision: RELEASED (every release criterion passed)")
    else:
        out.append(f"Decision: NOT RELEASED ({len(result.failed)} reason(s): criteria failed, not tested or not "
                   "trustworthy)")
        out += [f"  - {f}" for f in result.failed]
    return "\n".join(out)
