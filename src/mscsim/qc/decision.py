"""The release decision: each criterion of a spec checked against the lot's own data.

A criterion passes, fails, is not tested (no result in the lot record, which blocks release: an untested
release test cannot release a lot) or is informative (reported, never deciding). The lot is released
only when every non-informative criterion passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InputError
from .flow import FlowResult, analyze_flow
from .lot import Lot
from .settings import flow_settings
from .spec import Criterion, Spec, load_spec

Status = Literal["pass", "fail", "not_tested", "untrusted", "informative"]
BLOCKING = ("fail", "not_tested", "untrusted")
_UNIT_WORDS = {"%": "percentage points"}


@dataclass(frozen=True)
class Measured:
    """What the lot says for one criterion: a number or a word (None when absent) and how it was got."""

    value: float | str | None
    detail: str
    untrusted: bool = False  # the data behind the value cannot support it (the reason is in ``detail``)


@dataclass(frozen=True)
class CriterionResult:
    """One criterion's verdict: measured vs limit, pass/fail, by how much, and the limit's sources."""

    id: str
    label: str
    measure: str
    status: Status
    measured: float | str | None
    unit: str | None
    limit: str
    source: tuple[str, ...]
    detail: str
    shortfall: float | None

    def measured_text(self) -> str:
        if self.measured is None:
            return "not tested"
        if isinstance(self.measured, str):
            return self.measured
        unit = self.unit or ""
        digits = 1 if unit == "%" else 3
        text = f"{self.measured:.{digits}f}" if unit == "%" else f"{self.measured:.{digits}g}"
        return f"{text}%" if unit == "%" else f"{text} {unit}".strip()

    def describe(self) -> str:
        """One line for a reader: measured vs limit, by how much it misses, and the limit's source keys."""
        src = ", ".join(self.source)
        if self.status == "untrusted":
            return f"{self.label}: analysis cannot be trusted ({self.detail}); required: {self.limit} [{src}]"
        if self.measured is None:
            return f"{self.label}: not tested ({self.detail}); required: {self.limit} [{src}]"
        if isinstance(self.measured, str):
            verdict = "" if self.status != "fail" else ": not accepted"
            return f"{self.label}: '{self.measured}' reported, accepted: {self.limit} [{src}]{verdict}"
        text = f"{self.label}: {self.measured_text()} measured, limit {self.limit} [{src}]"
        if self.shortfall is not None and self.shortfall > 0:
            word = _UNIT_WORDS.get(self.unit or "", self.unit or "")
            direction = "short" if self.limit.startswith(">") else "over"
            text += f": {direction} by {self.shortfall:.3g} {word}".rstrip()
        return text

    def as_dict(self) -> dict:
        return {"id": self.id, "label": self.label, "measure": self.measure, "status": self.status,
                "measured": self.measured, "unit": self.unit, "limit": self.limit, "source": list(self.source),
                "shortfall": self.shortfall, "detail": self.detail, "summary": self.describe()}


@dataclass(frozen=True)
class QCResult:
    """The decision for one lot under one spec, with the flow analysis it rests on."""

    lot: Lot
    spec: Spec
    criteria: list[CriterionResult]
    flow: FlowResult | None

    @property
    def problems(self) -> list[str]:
        """Why parts of the flow analysis cannot be trusted (each blocks release, whatever the criteria say)."""
        return [f"flow tube {t.name}: analysis cannot be trusted: {t.problem}"
                for t in (self.flow.tubes if self.flow is not None else ()) if t.problem]

    @property
    def released(self) -> bool:
        """Released only when every release criterion passed and the analysis behind them can be trusted."""
        return all(c.status in ("pass", "informative") for c in self.criteria) and not self.problems

    @property
    def failed(self) -> list[str]:
        """Human-readable reasons the lot is not released: blocking criteria, then untrusted analyses."""
        return [c.describe() for c in self.criteria if c.status in BLOCKING] + self.problems

    @property
    def lot_id(self) -> str:
        return self.lot.lot_id

    @property
    def spec_name(self) -> str:
        return self.spec.name


def _compare(value: float, op: str, limit: float) -> bool:
    return {">=": value >= limit, "<=": value <= limit, ">": value > limit, "<": value < limit}[op]


def _marker(c: Criterion, flow: FlowResult | None) -> Measured:
    if flow is None:
        return Measured(None, "no flow cytometry in the lot record")
    lower_bound = c.op in (">=", ">")
    found, parts = [], []
    for m in c.markers:
        hits = flow.measurements(m)
        if not hits:
            parts.append(f"{m} not measured")
        broken = [t for t in flow.tubes if t.problem and any(m in ch.markers for ch in t.channels)]
        if broken:
            return Measured(None, f"{m} in tube {broken[0].name}: {broken[0].problem}", untrusted=True)
        for h in hits:
            found.append(h.percent_positive)
            where = f"{m} {h.percent_positive:.1f}% in tube {h.tube} {h.channel} vs {h.threshold_source}"
            if h.cocktail:
                where += f" (cocktail {'/'.join(h.markers)}: upper bound for each)"
            parts.append(where)
    if not found:
        return Measured(None, f"{' or '.join(c.markers)} not in any tube's panel")
    value = min(found) if lower_bound else max(found)
    return Measured(value, "; ".join(parts))


def measure(c: Criterion, lot: Lot, flow: FlowResult | None) -> Measured:
    """The lot's value for one criterion, in the criterion's unit."""
    if c.measure == "marker":
        return _marker(c, flow)
    if c.measure == "viability":
        method = f" by {lot.viability.method}" if lot.viability.method else ""
        return Measured(100.0 * lot.viability.value, f"lot record{method}")
    if c.measure == "endotoxin":
        e = lot.endotoxin
        if e is None:
            return Measured(None, "no endotoxin result in the lot record")
        v = e.convert(c.unit or "")
        if v is None:
            return Measured(None, f"the record gives {e.value:g} {e.unit}; expressing it in {c.unit} needs "
                                  "dose_volume_mL and patient_weight_kg in the endotoxin record")
        hours = f", infused over {e.infusion_hours:g} h" if e.infusion_hours else ""
        return Measured(v, f"{e.value:g} {e.unit} in the record{hours}" + (f" ({e.method})" if e.method else ""))
    if c.measure in ("passage", "population_doublings"):
        v = getattr(lot, c.measure)
        if v is None:
            return Measured(None, f"no {c.measure} in the lot record")
        return Measured(float(v), "lot record")
    if c.measure in ("t_cell_suppression", "ido_fold_induction"):
        field = "t_cell_suppression_pct" if c.measure == "t_cell_suppression" else c.measure
        v = getattr(lot.potency, field) if lot.potency else None
        assay = f" ({lot.potency.assay})" if lot.potency and lot.potency.assay else ""
        return Measured(v, f"no {field} in the lot record's potency" if v is None else f"potency assay{assay}")
    word = lot.result_of(c.measure)
    return Measured(word, f"no {c.measure} result in the lot record" if word is None else "lot record")


def judge(c: Criterion, lot: Lot, flow: FlowResult | None) -> CriterionResult:
    """Measure one criterion and decide it."""
    m = measure(c, lot, flow)
    shortfall = None
    if m.value is None:
        ok = None
    elif isinstance(m.value, str):
        ok = m.value in c.accept
    else:
        ok = _compare(float(m.value), c.op or ">=", float(c.limit))
        if not ok:
            shortfall = abs(float(m.value) - float(c.limit))
    if c.informative:
        status: Status = "informative"
        if m.untrusted:
            m = Measured(None, f"analysis cannot be trusted: {m.detail}")
        detail = m.detail + ("" if ok is None else "; within the limit" if ok else "; outside the limit")
        detail += " (informative: not a release criterion)"
    else:
        status = "untrusted" if m.untrusted else "not_tested" if ok is None else "pass" if ok else "fail"
        detail = m.detail
    return CriterionResult(id=c.id, label=c.title, measure=c.measure, status=status, measured=m.value,
                           unit=c.unit, limit=c.limit_text(), source=c.source, detail=detail, shortfall=shortfall)


def resolve_spec(lot: Lot, spec: Spec | str | Path | None) -> Spec:
    """The spec to judge by: the caller's, else the lot's own ``spec`` (relative to the lot), else the default."""
    if isinstance(spec, Spec):
        return spec
    if spec is not None:
        return load_spec(spec)
    if lot.spec:
        near = lot.file.parent / lot.spec if lot.file else None
        try:
            return load_spec(near if near is not None and near.is_file() else lot.spec)
        except InputError as exc:  # the lot names the spec: say so
            if exc.file:
                raise
            raise InputError("spec", lot.spec, exc.allowed, file=str(lot.file) if lot.file else None) from None
    return load_spec(flow_settings().default_spec)


def evaluate_lot(lot: Lot, spec: Spec | str | Path | None = None) -> QCResult:
    """Analyse the lot's flow files and judge every criterion of the spec; never raises on a failing lot."""
    chosen = resolve_spec(lot, spec)
    flow = analyze_flow(lot.flow) if lot.flow is not None else None
    return QCResult(lot=lot, spec=chosen, criteria=[judge(c, lot, flow) for c in chosen.criteria], flow=flow)
