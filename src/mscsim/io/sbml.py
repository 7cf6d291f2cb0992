"""Export a scenario's model as SBML Level 3 Version 2, so other simulators and reviewers can run and read it.

One species per state (cells as amounts in cells; the tissue model's signals as concentrations or relative
densities in their own units), one reaction per process, a global parameter (with units, sources and evidence
grade) per model parameter, each derived expression of the mechanisms as an assignment rule, doses as events
and infusions as an input reaction whose rate parameter events switch on and off. The export is the scenario's
first patient at the nominal parameter values; a disease scenario starts from that patient's untreated
chronic state (mscsim's burn-in), as mscsim's own runs do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import libsbml
import numpy as np
import sympy as sp
from sympy.printing.str import StrPrinter

from .. import __version__
from ..errors import DataError, MscsimError
from ..model.core import CELL_KINDS
from ..model.references import Reference, resolve
from ..model.units import expression_units, is_concentration, same_units, sbml_unit_factors

if TYPE_CHECKING:
    from ..model.parameters import Parameter
    from ..simulation import Setup
    from ..solvers.problem import Problem

LEVEL, VERSION = 3, 2
XHTML = "http://www.w3.org/1999/xhtml"

# readable SBML ids for common unit strings; any other unit gets an id spelled from its string
# ('pg/mL' -> 'pg_per_mL'). 'litre' and 'dimensionless' are SBML base units, defined by SBML itself.
UNIT_ALIASES = {"1": "dimensionless", "h": "hour", "1/h": "per_hour", "L": "litre", "L/h": "litre_per_hour",
                "cell": "cell", "cell/h": "cell_per_hour"}


def export_sbml(setup: Setup, path: str | Path) -> Path:
    """Write the scenario's model as a validated SBML L3V2 file; returns the path written."""
    text = sbml_document(setup)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:  # written whole or not at all
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise MscsimError(f"cannot write SBML to {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sbml_document(setup: Setup) -> str:
    """The scenario's model as SBML L3V2 text, validated (raises MscsimError naming the first error)."""
    doc = build_document(setup)
    validate(doc)
    return libsbml.writeSBMLToString(doc)


def build_document(setup: Setup) -> libsbml.SBMLDocument:
    """Assemble the libsbml document: units, compartments, species, parameters, assignment rules, reactions,
    dosing, notes."""
    doc = libsbml.SBMLDocument(LEVEL, VERSION)
    model = doc.createModel()
    units = UnitTable(model)
    _set(model, Id=sbml_id(setup.scenario.name), Name=setup.scenario.name, MetaId="mscsim_model",
         TimeUnits=units.id("h"), SubstanceUnits=units.id(EXTENT), ExtentUnits=units.id(EXTENT))
    problem = exported_problem(setup)
    if not np.array_equal(problem.params[0], setup.nominal):  # the start and doses must be those of the values
        raise MscsimError("SBML export: the exported patient's parameters are not the nominal values written")
    _add_compartments(model, setup, units)
    _add_species(model, setup, problem.initial_state()[0], units)
    _add_parameters(model, setup, units)
    rules = derived_expressions(setup)
    _add_rules(model, setup, rules, units)
    _add_reactions(model, setup, rules)
    _add_dosing(model, setup, problem, units)
    refs = sources(setup)
    _set(model, Notes=model_notes(setup, refs))
    _describe_by(model, refs)
    return doc


def exported_problem(setup: Setup) -> Problem:
    """The exported patient as mscsim would solve it: the scenario's first patient at nominal parameters (no
    between-patient draw), with its dosing and, for a disease, its burn-in state as the start."""
    sc = setup.scenario
    one = sc.population.model_copy(update={"size": 1, "variability": False})
    return replace(setup, scenario=sc.model_copy(update={"population": one})).problem(0, 1)


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


def unit_warnings(doc: libsbml.SBMLDocument) -> list[str]:
    """libSBML's unit-consistency messages for the document, one line each (every export keeps this empty)."""
    doc.setConsistencyChecks(libsbml.LIBSBML_CAT_UNITS_CONSISTENCY, True)
    doc.checkConsistency()
    return [" ".join(doc.getError(i).getMessage().split()) for i in range(doc.getNumErrors())]


def sources(setup: Setup) -> list[Reference]:
    """References behind the parameters the exported model and its dosing use (not the solver's)."""
    return resolve(setup.pset.citations(setup.parameter_names_used()))


def sbml_id(text: str) -> str:
    """A valid SBML SId from free text (letters, digits, underscores; not starting with a digit)."""
    out = re.sub(r"\W", "_", text, flags=re.ASCII)
    return out if out and not out[0].isdigit() else f"_{out}"


class UnitTable:
    """The model's unit definitions, made on first use from mscsim's unit strings (with pint, see
    :func:`mscsim.model.units.sbml_unit_factors`): one definition per distinct unit, whatever its spelling."""

    def __init__(self, model: libsbml.Model):
        self.model = model
        self.ids: dict[tuple, str] = {}

    def id(self, units: str, what: str = "units") -> str:
        """The SBML unit id for ``units``, defining it in the model the first time it is seen."""
        key = units.replace(" ", "")
        try:
            factors = sbml_unit_factors(key, what=what)
        except DataError as exc:
            raise MscsimError(f"SBML export: {exc}") from None
        if not factors:
            return "dimensionless"
        if factors in self.ids:
            return self.ids[factors]
        uid, name = UNIT_ALIASES.get(key), units
        if uid is None:
            kind, exponent, scale, multiplier = factors[0]
            if len(factors) == 1 and (exponent, multiplier) == (1, 1.0) and scale in SI_PREFIXES:
                uid = name = SI_PREFIXES[scale] + kind  # 'picogram', 'nanomole', or a base unit itself
            else:
                uid = unit_sid(key)
        if not libsbml.UnitKind_isValidUnitKindString(uid, LEVEL, VERSION):  # base units need no definition
            if self.model.getUnitDefinition(uid) is not None:
                raise MscsimError(f"SBML export: two different units would both be called '{uid}'")
            ud = self.model.createUnitDefinition()
            _set(ud, Id=uid, Name=name)
            for kind, exponent, scale, multiplier in factors:
                _set(ud.createUnit(), Kind=libsbml.UnitKind_forName(kind), Exponent=exponent, Scale=scale,
                     Multiplier=multiplier)
        self.ids[factors] = uid
        return uid


SI_PREFIXES = {-15: "femto", -12: "pico", -9: "nano", -6: "micro", -3: "milli", 0: "", 3: "kilo"}


def unit_sid(units: str) -> str:
    """An SBML id spelled from a unit string: 'pg/mL' -> 'pg_per_mL', '1/cell/h' -> 'per_cell_per_h'."""
    text = units.replace("(", "").replace(")", "").replace("**", "")
    text = text[1:] if text.startswith("1/") else text  # '1/mL' -> 'per_mL'
    return sbml_id(text.replace("/", "_per_").replace("*", "_"))


def _set(obj, **attributes) -> None:
    """Call obj.setX(value) for each X=value and fail loudly: libsbml setters report errors by return code."""
    for name, value in attributes.items():
        rc = getattr(obj, f"set{name}")(value)
        if rc != libsbml.LIBSBML_OPERATION_SUCCESS:
            label = obj.getId() if hasattr(obj, "getId") and obj.isSetId() else obj.getElementName()
            raise MscsimError(f"SBML export: cannot set {name}={value!r} on {label}: "
                              f"{libsbml.OperationReturnValue_toString(rc)}")


CONCENTRATION_VOLUME = "mL"  # the size unit of compartments that hold concentrations


def concentration_compartments(setup: Setup) -> set[str]:
    """Compartments holding at least one state in concentration units (pg/mL, umol/L, ...)."""
    return {s.compartment for s in setup.model.model.states if is_concentration(s.units)}


def _add_compartments(model: libsbml.Model, setup: Setup, table: UnitTable) -> None:
    """One compartment per distinct state compartment, size 1. Where species are amounts (cells, relative
    densities) it only labels where they are (dimensionless); where it holds concentrations it is one mL, so a
    species' amount is its content per mL and its value in the math is the concentration mscsim integrates."""
    conc = concentration_compartments(setup)
    for name in dict.fromkeys(s.compartment for s in setup.model.model.states):
        c = model.createCompartment()
        units = table.id(CONCENTRATION_VOLUME) if name in conc else "dimensionless"
        _set(c, Id=name, Name=name.replace("_", " "), SpatialDimensions=3.0, Size=1.0, Units=units, Constant=True)
        if name in conc:
            _set(c, Notes=_xhtml(f"<p>A unit volume (1 {CONCENTRATION_VOLUME}) for the concentrations held here: "
                                 "their amounts are per mL. Reactions changing them have the rate law times "
                                 "this size as their kinetic law (amount per hour).</p>"))


def _add_species(model: libsbml.Model, setup: Setup, x0: np.ndarray, table: UnitTable) -> None:
    """One species per state, starting at ``x0`` (the patient's state when mscsim starts: cells 0, signals their
    start or, for a disease, the burn-in). A state in concentration units is a concentration species (its
    substance is the units times the compartment's mL); any other (cells, relative densities) is an amount
    (hasOnlySubstanceUnits). Either way the value the math reads is the number mscsim integrates."""
    states = {s.name: s for s in setup.model.model.states}
    for name, value in zip(setup.model.state_names, x0):
        s = states[name]
        what = f"state '{name}'"
        sp_ = model.createSpecies()
        _set(sp_, Id=name, Name=s.description or name, Compartment=s.compartment, BoundaryCondition=False,
             Constant=False)
        substance = f"({s.units})*{CONCENTRATION_VOLUME}" if is_concentration(s.units) else s.units
        if is_concentration(s.units):
            _set(sp_, SubstanceUnits=table.id(substance, what), HasOnlySubstanceUnits=False,
                 InitialConcentration=float(value))
        else:
            _set(sp_, SubstanceUnits=table.id(substance, what), HasOnlySubstanceUnits=True, InitialAmount=float(value))
        if not same_units(substance, EXTENT):
            _set(sp_, ConversionFactor=_conversion_factor(model, table, substance))
        if s.kind not in CELL_KINDS:
            start = ("the patient's untreated chronic state (mscsim's burn-in, see the model notes)"
                     if setup.has_tissue else f"the declared start ({s.initial or 0})")
            _set(sp_, Notes=_xhtml(f"<p>Signal state in {escape(s.units)}. Initial value {float(value)!r}: "
                                   f"{escape(start)}.</p>"))


EXTENT = "cell"  # the model's one extent unit (SBML L3 has one per model): reactions move cells


def _conversion_factor(model: libsbml.Model, table: UnitTable, substance: str) -> str:
    """The constant parameter (value 1, units ``substance`` per cell) that converts the model's extent (cells)
    into a signal species' own substance units, made once per unit. SBML L3 has one extent unit per model; a
    reaction that changes a signal states its kinetic law as extent per hour (the rate divided by this factor)
    and the species' conversionFactor turns it back, so every kinetic law is in cells per hour, libSBML's unit
    checks pass, and the numbers are unchanged (the factor is 1)."""
    pid = "cf_" + table.id(substance)
    if model.getParameter(pid) is None:
        p = model.createParameter()
        _set(p, Id=pid, Value=1.0, Units=table.id(f"({substance})/{EXTENT}", f"conversion factor '{pid}'"),
             Constant=True)
        _set(p, Notes=_xhtml(f"<p>Conversion factor from the model's extent (cells) to {escape(substance)}: "
                             "1, a units declaration only (SBML L3 has one extent unit per model).</p>"))
    return pid


def rate_factor(setup: Setup, proc) -> sp.Expr:
    """What turns a process rate (the states' units per hour) into an SBML kinetic law (amount per hour): the
    compartment size where the process changes concentrations, else 1. Both ends must be in the same units."""
    states = {s.name: s for s in setup.model.model.states}
    ends = [states[e] for e in (proc.source, proc.target) if e is not None]
    if len({e.units for e in ends}) > 1:
        raise MscsimError(f"SBML export: process '{proc.name}' moves {ends[0].name} ({ends[0].units}) to "
                          f"{ends[1].name} ({ends[1].units}); a reaction needs both in the same units")
    conc = [e for e in ends if is_concentration(e.units)]
    if not conc:
        return sp.Integer(1)
    if len({e.compartment for e in conc}) > 1:
        raise MscsimError(f"SBML export: process '{proc.name}' moves a concentration between compartments")
    return sp.Symbol(conc[0].compartment)


def _add_parameters(model: libsbml.Model, setup: Setup, table: UnitTable) -> None:
    """One constant global parameter per model parameter, in internal units, annotated with its sources."""
    cm = setup.model
    for name, units, value in zip(cm.param_names, cm.param_units, setup.nominal):
        par = setup.pset[name]
        p = model.createParameter()
        _set(p, Id=name, MetaId=f"meta_{name}", Value=float(value), Units=table.id(units, f"parameter '{name}'"),
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


@dataclass(frozen=True)
class Derived:
    """A mechanism's derived expression (``n_local``, ``hypoxia``, ``S_target`` ...) as exported: an assignment rule."""

    name: str
    text: str
    expr: sp.Expr  # in terms of states, parameters and other derived expressions
    mechanism: str
    units: str


@dataclass(frozen=True)
class Rules:
    """The derived expressions the rate laws use (in dependency order) and each process's rate law in terms of them."""

    derived: tuple[Derived, ...]
    rates: tuple[sp.Expr, ...]  # one per process, in ``process_names`` order


def derived_expressions(setup: Setup) -> Rules:
    """Parse the enabled mechanisms' expressions and rate laws as compile_model does, but keep each expression
    as a name (an SBML assignment rule, readable beside the mechanism files) instead of substituting it.

    Checked: substituting the rules back gives exactly the compiled rate laws mscsim integrates. Each rule's
    units are worked out from its symbols' units (pint), which also checks the expression's dimensions.
    """
    cm = setup.model
    model = cm.model
    xs = {n: sp.Symbol(n, real=True) for n in cm.state_names}
    ps = {n: sp.Symbol(n, real=True) for n in model.symbols}
    texts = model.expressions
    local = {**xs, **ps, **{k: sp.Symbol(k) for k in texts}}
    exprs = {k: sp.sympify(v, locals=local) for k, v in texts.items()}
    rates = [sp.sympify(p.rate, locals=local) for p in model.processes]
    # the expressions the rate laws reach, each after those it uses (SBML needs no order; readers do)
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise MscsimError(f"SBML export: derived expressions refer to each other in a loop: {path + (name,)}")
        for s in sorted(str(x) for x in exprs[name].free_symbols if str(x) in exprs):
            visit(s, path + (name,))
        order.append(name)

    for r in rates:
        for s in sorted(str(x) for x in r.free_symbols if str(x) in exprs):
            visit(s, ())
    full: dict[sp.Symbol, sp.Expr] = {}
    for name in order:
        full[sp.Symbol(name)] = exprs[name].xreplace(full)
    for proc, r, compiled_rate in zip(model.processes, rates, cm.rate_exprs):
        if r.xreplace(full) != compiled_rate:
            raise MscsimError(f"SBML export: process '{proc.name}' rate law with its expressions substituted "
                              f"differs from the compiled model's")
    owner = {k: m.name for m in model.mechanisms if m.name in model.enabled for k in m.expressions}
    state_units = {s.name: s.units for s in model.states}
    units = state_units | dict(model.symbols)
    derived = []
    try:
        for name in order:
            u = expression_units(exprs[name], units, what=f"expression '{name}' ({owner[name]})")
            units[name] = u
            derived.append(Derived(name, texts[name], exprs[name], owner[name], u))
        for proc, r in zip(model.processes, rates):
            end = state_units[proc.source or proc.target]
            got = expression_units(r, units, what=f"process '{proc.name}' rate")
            if not same_units(got, f"({end})/h"):
                raise DataError(f"process '{proc.name}' rate is in {got}, but it changes a state in {end}: "
                                f"expected {end} per hour")
    except DataError as exc:
        raise MscsimError(f"SBML export: {exc}") from None
    return Rules(tuple(derived), tuple(rates))


def _add_rules(model: libsbml.Model, setup: Setup, rules: Rules, table: UnitTable) -> None:
    """Each derived expression as a parameter (not constant, with its units) set by an assignment rule."""
    for d in rules.derived:
        p = model.createParameter()
        _set(p, Id=d.name, Units=table.id(d.units, f"expression '{d.name}'"), Constant=False)
        overrides = " It takes the place of the parameter of that name in the mechanisms that use one." \
            if any(d.name in m.symbols for m in setup.model.model.mechanisms if m.name in setup.model.model.enabled) \
            else ""
        _set(p, Notes=_xhtml(f"<p>Derived quantity of mechanism {escape(d.mechanism)}: {escape(d.text)} "
                             f"({escape(d.units)}).{escape(overrides)}</p>"))
        rule = model.createAssignmentRule()
        _set(rule, Variable=d.name, Math=sympy_math(d.expr, model, f"expression '{d.name}'"))


def _add_reactions(model: libsbml.Model, setup: Setup, rules: Rules) -> None:
    """One irreversible reaction per process: source -> target (either may be outside: a signal made or
    removed), kinetic law = the process rate law, using the assignment rules' names; every other species the
    rate depends on (directly or through a rule) is a modifier."""
    cm = setup.model
    mechanisms = {m.name: m for m in cm.model.mechanisms}
    for proc, expr, full in zip(cm.model.processes, rules.rates, cm.rate_exprs):
        r = model.createReaction()
        _set(r, Id=proc.name, Name=proc.description or proc.name.replace("_", " "), Reversible=False)
        if proc.source is not None:
            _set(r.createReactant(), Species=proc.source, Stoichiometry=1.0, Constant=True)
        if proc.target is not None:
            _set(r.createProduct(), Species=proc.target, Stoichiometry=1.0, Constant=True)
        used = {str(x) for x in full.free_symbols}
        for name in cm.state_names:
            if name in used and name not in (proc.source, proc.target):
                _set(r.createModifier(), Species=name)
        law = rate_factor(setup, proc) * expr
        factor = model.getSpecies(proc.source or proc.target).getConversionFactor()
        if factor:
            law = law / sp.Symbol(factor)  # the kinetic law in extent (cells) per hour, see _conversion_factor
        _set(r.createKineticLaw(), Math=sympy_math(law, model, f"process '{proc.name}'"))
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
    _dimensionless_numbers(ast)
    return ast


def _dimensionless_numbers(ast: libsbml.ASTNode) -> None:
    """Declare every literal number dimensionless (the 1 in 1 - f_trap, the 2 of a Hill power), so unit checkers
    can follow every expression. Sound because mscsim's units check (``expression_units``, run on every
    expression and rate law at export) already treats literals as pure numbers and found no clash."""
    if ast.isNumber() and not ast.isSetUnits():
        if ast.setUnits("dimensionless") != libsbml.LIBSBML_OPERATION_SUCCESS:
            raise MscsimError(f"SBML export: cannot declare the number {libsbml.formulaToL3String(ast)} dimensionless")
    for i in range(ast.getNumChildren()):
        _dimensionless_numbers(ast.getChild(i))


def _math(formula: str, model: libsbml.Model, what: str) -> libsbml.ASTNode:
    """SBML math for a formula in SBML L3 infix syntax (used for dosing, written here with units)."""
    ast = libsbml.parseL3FormulaWithModel(formula, model)
    if ast is None:
        raise MscsimError(f"{what}: SBML cannot parse '{formula}': {libsbml.getLastParseL3Error()}")
    return ast


@dataclass(frozen=True)
class Step:
    """A dosing jump at time ``t`` (h): ``variable`` changes by ``change`` (in ``units``: the state's, or the
    state's per hour for an infusion rate)."""

    t: float
    variable: str
    change: float
    units: str
    label: str


def infusion_rate_id(species: str) -> str:
    """Id of the parameter holding the current infusion rate into ``species`` (its units per hour)."""
    return f"infusion_rate_{species}"


def dosing_steps(problem: Problem, state_names: tuple[str, ...], state_units: tuple[str, ...]) -> list[Step]:
    """The first patient's doses as jumps: boluses add to states (cells; vesicles for a vesicle product); an
    infusion adds its rate at its start and takes it off at its end, so overlapping infusions compose."""
    steps = []
    for b in problem.boluses:
        steps += [Step(float(b.t), state_names[i], float(b.amount[0, i]), state_units[i], "dose")
                  for i in np.flatnonzero(b.amount[0])]
    for inf in problem.infusions:
        for i in np.flatnonzero(inf.rate[0]):
            rid, rate, units = infusion_rate_id(state_names[i]), float(inf.rate[0, i]), f"{state_units[i]}/h"
            steps += [Step(float(inf.t_start), rid, rate, units, "infusion starts"),
                      Step(float(inf.t_end), rid, -rate, units, "infusion ends")]
    return steps


def _add_dosing(model: libsbml.Model, setup: Setup, problem: Problem, table: UnitTable) -> None:
    """Dosing steps as events, one per distinct time with the net change of each variable (simultaneous
    events would all read the values at their common trigger time, so they must not touch the same variable)."""
    names, state_units = setup.model.state_names, setup.model.state_units
    steps = dosing_steps(problem, names, state_units)
    compartments = {s.name: s.compartment for s in setup.model.model.states}
    for species, units in zip(names, state_units):
        if any(s.variable == infusion_rate_id(species) for s in steps):
            size = compartments[species] if is_concentration(units) else None
            _infusion_input(model, species, table.id(f"{units}/h", f"infusion into '{species}'"), size)
    for k, t in enumerate(sorted({s.t for s in steps}), start=1):
        at = [s for s in steps if s.t == t]
        net: dict[str, float] = {}
        for s in at:
            net[s.variable] = net.get(s.variable, 0.0) + s.change
        units = {s.variable: table.id(s.units, f"dose of '{s.variable}'") for s in at}
        changes = {v: f"{v} {'+' if c > 0 else '-'} {abs(c)!r} {units[v]}" for v, c in net.items() if c != 0}
        if changes:
            label = " and ".join(dict.fromkeys(s.label for s in at))
            _event(model, f"dosing_{k}", f"{label} at {t:g} h", t, changes)


def _infusion_input(model: libsbml.Model, species: str, units: str, compartment: str | None) -> None:
    """A rate parameter (0 outside infusions) and a reaction making ``species`` at that rate (times the
    compartment's size for a concentration)."""
    pid = infusion_rate_id(species)
    p = model.createParameter()
    _set(p, Id=pid, Value=0.0, Units=units, Constant=False)
    _set(p, Notes=_xhtml(f"<p>Infusion rate into {escape(species)}: set by the dosing events, 0 otherwise.</p>"))
    r = model.createReaction()
    _set(r, Id=f"infusion_into_{species}", Name=f"infusion into {species}", Reversible=False)
    _set(r.createProduct(), Species=species, Stoichiometry=1.0, Constant=True)
    law = f"{compartment} * {pid}" if compartment else pid
    factor = model.getSpecies(species).getConversionFactor()
    if factor:  # a signal's or label's input, in the model's extent per hour (see _conversion_factor)
        law = f"({law}) / {factor}"
    _set(r.createKineticLaw(), Math=_math(law, model, f"infusion into '{species}'"))


def _event(model: libsbml.Model, eid: str, name: str, t: float, changes: dict[str, str]) -> None:
    """An event that fires once, at time ``t`` (h), and applies ``changes`` (variable -> new-value formula)."""
    ev = model.createEvent()
    _set(ev, Id=eid, Name=name, UseValuesFromTriggerTime=True)
    trig = ev.createTrigger()
    _set(trig, Math=_math(f"time >= {t!r} hour", model, f"event '{eid}'"), InitialValue=False, Persistent=True)
    for variable, formula in changes.items():
        _set(ev.createEventAssignment(), Variable=variable, Math=_math(formula, model, f"event '{eid}'"))


def model_notes(setup: Setup, refs: list[Reference]) -> str:
    """XHTML model notes: scenario, mscsim version, conventions, dosing, the starting state and the references."""
    from ..simulation import BURN_IN_DAYS

    sc = setup.scenario
    f = setup.factors
    dose = sc.regimen.dose
    what = f"{dose.particles:.6g} vesicles" if dose.particles is not None else f"{setup.dose_cells():.6g} cells"
    dosing = (f"{len(sc.regimen.times_days)} {sc.regimen.route} dose(s) of {what} at "
              f"{', '.join(f'{t:g}' for t in sc.regimen.times_days)} d"
              + (f", each infused over {sc.regimen.infusion_minutes:g} min" if sc.regimen.infusion_minutes else "")
              + (f"; viability {f.viability:g}" if dose.particles is None else ""))
    if setup.placement_parameter:
        dosing += f"; placement fraction {setup.placement_fraction:g} ({setup.placement_parameter})"
    if setup.retention_parameter:
        dosing += (f"; share held in the lesion's organ at first contact {setup.retained:g} "
                   f"({setup.retention_parameter}; the rest enters venous blood)")
    paras = [
        f"mscsim {__version__} export of scenario '{sc.name}'.",
        " ".join(sc.description.split()),
        "Time in hours; cell species are amounts in cells; parameters are nominal values (first patient, no "
        "between-patient variability) in the units the rate laws assume. Compartments have size 1: a "
        "dimensionless label of where species are amounts, one mL where they hold concentrations.",
        f"Dosing: {dosing}. Doses are events adding to species; infusions are input reactions whose rate "
        "parameters events switch on and off.",
        "Process reactions move cells between cell species and only dosing adds them, so viable + debris + "
        "cleared = administered.",
    ]
    model = setup.model.model
    overrides = [k for k in model.expressions
                 if any(k in m.symbols for m in model.mechanisms if m.name in model.enabled)]
    if setup.has_tissue:
        paras += [
            f"Tissue model ({sc.disease}): signal species (mediators, cytokines, immune cells, tissue state) are "
            "concentrations (pg/mL, ng/mL, umol/L, particles/mL: concentration species in a 1 mL compartment) or "
            "relative densities (dimensionless amounts), with the values mscsim integrates. SBML has one extent "
            "unit per model (cells here): a reaction that makes or removes a signal states its kinetic law in "
            "cells per hour (its rate divided by the signal's conversion factor cf_*, which is 1), and the "
            "signal species' conversionFactor turns the extent back into its own amount (pg, nmol, ...). Every "
            "expression is dimensionally consistent, and libSBML's unit checks report nothing.",
            f"Initial state: the patient's untreated chronic disease, i.e. mscsim's {BURN_IN_DAYS:g}-day burn-in "
            "without cells from the declared start values, with structural loss reset to the patient's grade; "
            "time 0 is the first dose, as in mscsim's results.",
            "Derived quantities of the mechanisms are assignment rules with their units"
            + (f"; {', '.join(overrides)} replace(s) the fixed parameter(s) of that name in the mechanisms that "
               "use them (e.g. the lesion's inflammation drives homing)" if overrides else "") + ".",
        ]
    paras.append("Research tool output, not medical advice.")
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
