"""Export a scenario's model as SBML Level 3 Version 2, so other simulators and reviewers can run and read it.

One species per state (amounts in cells), one reaction per process, a global parameter (with units, sources and
evidence grade) per model parameter, doses as events and infusions as an input reaction whose rate parameter
events switch on and off. The export is the scenario's first patient at the nominal parameter values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import libsbml
import numpy as np
import sympy as sp
from sympy.printing.str import StrPrinter

from .. import __version__
from ..errors import MscsimError
from ..model.references import Reference, resolve

if TYPE_CHECKING:
    from ..model.parameters import Parameter
    from ..simulation import Setup
    from ..solvers.problem import Problem

LEVEL, VERSION = 3, 2
XHTML = "http://www.w3.org/1999/xhtml"

# mscsim's internal unit strings -> SBML unit ids; 'litre' and 'dimensionless' are SBML base units.
UNIT_IDS = {"1": "dimensionless", "h": "hour", "1/h": "per_hour", "L": "litre", "L/h": "litre_per_hour",
            "cell": "cell", "cell/h": "cell_per_hour"}

# unit definitions as (kind, exponent, multiplier) factors: unit = prod (multiplier * kind) ** exponent
UNIT_DEFINITIONS = {
    "hour": ((libsbml.UNIT_KIND_SECOND, 1, 3600.0),),
    "per_hour": ((libsbml.UNIT_KIND_SECOND, -1, 3600.0),),
    "litre_per_hour": ((libsbml.UNIT_KIND_LITRE, 1, 1.0), (libsbml.UNIT_KIND_SECOND, -1, 3600.0)),
    "cell": ((libsbml.UNIT_KIND_ITEM, 1, 1.0),),
    "cell_per_hour": ((libsbml.UNIT_KIND_ITEM, 1, 1.0), (libsbml.UNIT_KIND_SECOND, -1, 3600.0)),
}


def export_sbml(setup: Setup, path: str | Path) -> Path:
    """Write the scenario's model as a validated SBML L3V2 file; returns the path written."""
    text = sbml_document(setup)
    path = Path(path)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MscsimError(f"cannot write SBML to {path}: {exc}") from exc
    return path


def sbml_document(setup: Setup) -> str:
    """The scenario's model as SBML L3V2 text, validated (raises MscsimError naming the first error)."""
    doc = build_document(setup)
    validate(doc)
    return libsbml.writeSBMLToString(doc)


def build_document(setup: Setup) -> libsbml.SBMLDocument:
    """Assemble the libsbml document: units, compartments, species, parameters, reactions, dosing, notes."""
    doc = libsbml.SBMLDocument(LEVEL, VERSION)
    model = doc.createModel()
    _set(model, Id=sbml_id(setup.scenario.name), Name=setup.scenario.name, MetaId="mscsim_model",
         TimeUnits="hour", SubstanceUnits="cell", ExtentUnits="cell")
    _add_unit_definitions(model)
    _add_compartments(model, setup)
    _add_species(model, setup)
    _add_parameters(model, setup)
    _add_reactions(model, setup)
    _add_dosing(model, setup)
    refs = sources(setup)
    _set(model, Notes=model_notes(setup, refs))
    _describe_by(model, refs)
    return doc


def validate(doc: libsbml.SBMLDocument) -> None:
    """Run libsbml's internal and SBML consistency checks; raise MscsimError naming the first error."""
    for check in (doc.checkInternalConsistency, doc.checkConsistency):
        check()
        log = doc.getErrorLog()
        errors = [log.getError(i) for i in range(log.getNumErrors())]
        errors = [e for e in errors if e.isError() or e.isFatal()]
        if errors:
            e = errors[0]
            raise MscsimError(f"exported SBML is invalid ({len(errors)} error(s)); first: "
                              f"[{e.getErrorId()}] {' '.join(e.getMessage().split())}")


def sources(setup: Setup) -> list[Reference]:
    """References behind the parameters the exported model and its dosing use (not the solver's)."""
    return resolve(setup.pset.citations(setup.parameter_names_used()))


def sbml_id(text: str) -> str:
    """A valid SBML SId from free text (letters, digits, underscores; not starting with a digit)."""
    out = re.sub(r"\W", "_", text, flags=re.ASCII)
    return out if out and not out[0].isdigit() else f"_{out}"


def unit_id(units: str, what: str) -> str:
    """The SBML unit id for one of mscsim's internal unit strings."""
    try:
        return UNIT_IDS[units.replace(" ", "")]
    except KeyError:
        raise MscsimError(f"{what}: units '{units}' have no SBML unit definition; known: {sorted(UNIT_IDS)}") from None


def _set(obj, **attributes) -> None:
    """Call obj.setX(value) for each X=value and fail loudly: libsbml setters report errors by return code."""
    for name, value in attributes.items():
        rc = getattr(obj, f"set{name}")(value)
        if rc != libsbml.LIBSBML_OPERATION_SUCCESS:
            label = obj.getId() if hasattr(obj, "getId") and obj.isSetId() else obj.getElementName()
            raise MscsimError(f"SBML export: cannot set {name}={value!r} on {label}: "
                              f"{libsbml.OperationReturnValue_toString(rc)}")


def _add_unit_definitions(model: libsbml.Model) -> None:
    """Hours, per hour, litres per hour and cells (SBML 'item'), so every number in the model has units."""
    for uid, factors in UNIT_DEFINITIONS.items():
        ud = model.createUnitDefinition()
        _set(ud, Id=uid)
        for kind, exponent, multiplier in factors:
            _set(ud.createUnit(), Kind=kind, Exponent=exponent, Multiplier=multiplier, Scale=0)


def _add_compartments(model: libsbml.Model, setup: Setup) -> None:
    """One compartment per distinct state compartment: a label of where cells are (size 1; amounts only)."""
    for name in dict.fromkeys(s.compartment for s in setup.model.model.states):
        _set(model.createCompartment(), Id=name, Name=name.replace("_", " "), SpatialDimensions=3.0, Size=1.0,
             Units="dimensionless", Constant=True)


def _add_species(model: libsbml.Model, setup: Setup) -> None:
    """One species per state: an amount (hasOnlySubstanceUnits) starting at 0, as mscsim's states do."""
    states = {s.name: s for s in setup.model.model.states}
    for name, units in zip(setup.model.state_names, setup.model.state_units):
        s = states[name]
        _set(model.createSpecies(), Id=name, Name=s.description or name, Compartment=s.compartment,
             InitialAmount=0.0, SubstanceUnits=unit_id(units, f"state '{name}'"), HasOnlySubstanceUnits=True,
             BoundaryCondition=False, Constant=False)


def _add_parameters(model: libsbml.Model, setup: Setup) -> None:
    """One constant global parameter per model parameter, in internal units, annotated with its sources."""
    cm = setup.model
    for name, units, value in zip(cm.param_names, cm.param_units, setup.nominal):
        par = setup.pset[name]
        p = model.createParameter()
        _set(p, Id=name, MetaId=f"meta_{name}", Value=float(value), Units=unit_id(units, f"parameter '{name}'"),
             Constant=True)
        _set(p, Notes=parameter_notes(par, float(value), units))
        _describe_by(p, resolve(par.source))


def parameter_notes(par: Parameter, value: float, units: str) -> str:
    """XHTML notes for one parameter: value used, value as cited, citation keys and evidence grade."""
    lines = [f"Value {value!r} {units} (the units the rate laws assume).",
             f"As cited: {par.value!r} {par.units}" + (f", from {par.origin}." if par.origin else "."),
             f"Sources: {', '.join(par.source)}. Evidence grade: {par.grade}."]
    if par.note:
        lines.append(" ".join(par.note.split()))
    return _xhtml("".join(f"<p>{escape(line)}</p>" for line in lines))


def _add_reactions(model: libsbml.Model, setup: Setup) -> None:
    """One irreversible reaction per process: source -> target, kinetic law = the process rate law."""
    cm = setup.model
    mechanisms = {m.name: m for m in cm.model.mechanisms}
    for proc, expr in zip(cm.model.processes, cm.rate_exprs):
        r = model.createReaction()
        _set(r, Id=proc.name, Name=proc.description or proc.name.replace("_", " "), Reversible=False)
        if proc.source is not None:
            _set(r.createReactant(), Species=proc.source, Stoichiometry=1.0, Constant=True)
        if proc.target is not None:
            _set(r.createProduct(), Species=proc.target, Stoichiometry=1.0, Constant=True)
        _set(r.createKineticLaw(), Math=sympy_math(expr, model, f"process '{proc.name}'"))
        mech = mechanisms[proc.mechanism]
        _set(r, Notes=_xhtml(f"<p>Mechanism {escape(mech.name)}: {escape(mech.title)}.</p>"
                             f"<p>Rate law (mscsim): {escape(proc.rate)}</p>"))


class L3Printer(StrPrinter):
    """SymPy's text printer with SBML L3 infix syntax: '^' for powers, 'ln' and 'abs' spelled as SBML does."""

    def _print_Pow(self, expr, rational=False):
        # nested powers were already printed with '^'; symbol names cannot hold '*', so this is the only '**'
        return super()._print_Pow(expr, rational).replace("**", "^")

    def _print_log(self, expr):
        return f"ln({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_Min(self, expr):
        return f"min({', '.join(self._print(a) for a in expr.args)})"

    def _print_Max(self, expr):
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Exp1(self, expr):
        return "exponentiale"

    def _print_Pi(self, expr):
        return "pi"


def sympy_math(expr: sp.Expr, model: libsbml.Model, what: str) -> libsbml.ASTNode:
    """SBML math for a SymPy expression, checked by a round trip back to SymPy (so no term is misread)."""
    text = L3Printer().doprint(expr)
    ast = libsbml.parseL3FormulaWithModel(text, model)
    if ast is None:
        raise MscsimError(f"{what}: SBML cannot parse '{text}': {libsbml.getLastParseL3Error()}")
    back = libsbml.formulaToL3String(ast)
    names = {str(s): s for s in expr.free_symbols}
    funcs = {"ln": sp.log, "abs": sp.Abs, "min": sp.Min, "max": sp.Max, "exp": sp.exp, "sqrt": sp.sqrt,
             "exponentiale": sp.E, "pi": sp.pi}
    try:
        again = sp.sympify(back.replace("^", "**"), locals={**names, **funcs})
    except (sp.SympifyError, SyntaxError, TypeError) as exc:
        raise MscsimError(f"{what}: SBML math '{back}' does not read back: {exc}") from exc
    diff = expr - again
    if diff != 0 and sp.simplify(diff) != 0:
        raise MscsimError(f"{what}: SBML math '{back}' differs from the rate law '{expr}'")
    return ast


def _math(formula: str, model: libsbml.Model, what: str) -> libsbml.ASTNode:
    """SBML math for a formula in SBML L3 infix syntax (used for dosing, written here with units)."""
    ast = libsbml.parseL3FormulaWithModel(formula, model)
    if ast is None:
        raise MscsimError(f"{what}: SBML cannot parse '{formula}': {libsbml.getLastParseL3Error()}")
    return ast


@dataclass(frozen=True)
class Step:
    """A dosing jump at time ``t`` (h): ``variable`` changes by ``change`` (cells, or cells/h for an infusion rate)."""

    t: float
    variable: str
    change: float
    units: str
    label: str


def infusion_rate_id(species: str) -> str:
    """Id of the parameter holding the current infusion rate into ``species`` (cells/h)."""
    return f"infusion_rate_{species}"


def dosing_steps(problem: Problem, state_names: tuple[str, ...]) -> list[Step]:
    """The first patient's doses as jumps: boluses add cells; an infusion adds its rate at its start and takes
    it off at its end, so overlapping infusions compose."""
    steps = []
    for b in problem.boluses:
        steps += [Step(float(b.t), state_names[i], float(b.amount[0, i]), "cell", "dose")
                  for i in np.flatnonzero(b.amount[0])]
    for inf in problem.infusions:
        for i in np.flatnonzero(inf.rate[0]):
            rid, rate = infusion_rate_id(state_names[i]), float(inf.rate[0, i])
            steps += [Step(float(inf.t_start), rid, rate, "cell_per_hour", "infusion starts"),
                      Step(float(inf.t_end), rid, -rate, "cell_per_hour", "infusion ends")]
    return steps


def _add_dosing(model: libsbml.Model, setup: Setup) -> None:
    """Dosing steps as events, one per distinct time with the net change of each variable (simultaneous
    events would all read the values at their common trigger time, so they must not touch the same variable)."""
    names = setup.model.state_names
    steps = dosing_steps(setup.problem(0, 1), names)
    for species in names:
        if any(s.variable == infusion_rate_id(species) for s in steps):
            _infusion_input(model, species)
    for k, t in enumerate(sorted({s.t for s in steps}), start=1):
        at = [s for s in steps if s.t == t]
        net: dict[str, float] = {}
        for s in at:
            net[s.variable] = net.get(s.variable, 0.0) + s.change
        units = {s.variable: s.units for s in at}
        changes = {v: f"{v} {'+' if c > 0 else '-'} {abs(c)!r} {units[v]}" for v, c in net.items() if c != 0}
        if changes:
            label = " and ".join(dict.fromkeys(s.label for s in at))
            _event(model, f"dosing_{k}", f"{label} at {t:g} h", t, changes)


def _infusion_input(model: libsbml.Model, species: str) -> None:
    """A rate parameter (0 outside infusions) and a reaction making ``species`` at that rate."""
    pid = infusion_rate_id(species)
    p = model.createParameter()
    _set(p, Id=pid, Value=0.0, Units="cell_per_hour", Constant=False)
    _set(p, Notes=_xhtml(f"<p>Infusion rate into {escape(species)}: set by the dosing events, 0 otherwise.</p>"))
    r = model.createReaction()
    _set(r, Id=f"infusion_into_{species}", Name=f"infusion into {species}", Reversible=False)
    _set(r.createProduct(), Species=species, Stoichiometry=1.0, Constant=True)
    _set(r.createKineticLaw(), Math=_math(pid, model, f"infusion into '{species}'"))


def _event(model: libsbml.Model, eid: str, name: str, t: float, changes: dict[str, str]) -> None:
    """An event that fires once, at time ``t`` (h), and applies ``changes`` (variable -> new-value formula)."""
    ev = model.createEvent()
    _set(ev, Id=eid, Name=name, UseValuesFromTriggerTime=True)
    trig = ev.createTrigger()
    _set(trig, Math=_math(f"time >= {t!r} hour", model, f"event '{eid}'"), InitialValue=False, Persistent=True)
    for variable, formula in changes.items():
        _set(ev.createEventAssignment(), Variable=variable, Math=_math(formula, model, f"event '{eid}'"))


def model_notes(setup: Setup, refs: list[Reference]) -> str:
    """XHTML model notes: scenario, mscsim version, conventions, dosing and the formatted references."""
    sc = setup.scenario
    f = setup.factors
    dosing = (f"{len(sc.regimen.times_days)} {sc.regimen.route} dose(s) of {setup.dose_cells():.6g} cells at "
              f"{', '.join(f'{t:g}' for t in sc.regimen.times_days)} d"
              + (f", each infused over {sc.regimen.infusion_minutes:g} min" if sc.regimen.infusion_minutes else "")
              + f"; viability {f.viability:g}")
    if setup.placement_parameter:
        dosing += f"; placement fraction {setup.placement_fraction:g} ({setup.placement_parameter})"
    paras = [
        f"mscsim {__version__} export of scenario '{sc.name}'.",
        " ".join(sc.description.split()),
        "Time in hours; species are amounts in cells; parameters are nominal values (first patient, no "
        "between-patient variability) in the units the rate laws assume. Compartments only label where cells "
        "are (size 1).",
        f"Dosing: {dosing}. Doses are events adding cells; infusions are input reactions whose rate parameters "
        "events switch on and off.",
        "Process reactions move cells between cell species and only dosing adds them, so viable + debris + "
        "cleared = administered.",
        "Research tool output, not medical advice.",
    ]
    body = "".join(f"<p>{escape(p)}</p>" for p in paras if p)
    items = "".join(f"<li>[{escape(r.key)}] {escape(r.formatted())}</li>" for r in refs)
    return _xhtml(f"{body}<p>Sources of the parameter values:</p><ol>{items}</ol>")


def _xhtml(inner: str) -> str:
    """Wrap notes content in the XHTML body element SBML notes require."""
    return f'<body xmlns="{XHTML}">{inner}</body>'


def _describe_by(element: libsbml.SBase, refs: list[Reference]) -> None:
    """MIRIAM 'isDescribedBy' annotations linking an element to the DOIs of its sources."""
    dois = [r.doi for r in refs if r.doi]
    if not dois:
        return
    term = libsbml.CVTerm(libsbml.BIOLOGICAL_QUALIFIER)
    term.setBiologicalQualifierType(libsbml.BQB_IS_DESCRIBED_BY)
    for doi in dict.fromkeys(dois):
        term.addResource(f"https://identifiers.org/doi:{doi}")
    rc = element.addCVTerm(term)
    if rc != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise MscsimError(f"SBML export: cannot annotate {element.getId() or 'the model'} with its sources: "
                          f"{libsbml.OperationReturnValue_toString(rc)}")
