"""Unit conversion for parameter values, with pint (cells and per-cell quantities added as units)."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import pint

from ..errors import DataError


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    """The one unit registry mscsim uses; counts of cells are a unit so 'cells/kg' converts cleanly."""
    ureg = pint.UnitRegistry(cache_folder=_pint_cache())
    ureg.define("cell = [cell_count] = cells")
    ureg.define("EU = [endotoxin_unit]")
    return ureg


def _pint_cache() -> Path | None:
    """pint's parsed-definitions cache inside mscsim's cache directory (building the registry from its text costs
    ~0.15 s per process, loading it ~0.01 s); None (no cache) when mscsim's cache is off or not writable."""
    from .cache import cache_root

    root = cache_root()
    if root is None:
        return None
    folder = root / "pint"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def convert(value: float, from_units: str, to_units: str, *, what: str = "value") -> float:
    """Convert ``value`` from ``from_units`` to ``to_units``; raise DataError naming ``what`` if they disagree."""
    if from_units == to_units:
        return float(value)
    ureg = registry()
    try:
        return float(ureg.Quantity(value, _norm(from_units)).to(_norm(to_units)).magnitude)
    except (pint.errors.DimensionalityError, pint.errors.UndefinedUnitError) as exc:
        raise DataError(f"{what}: cannot convert {value} {from_units} to {to_units}: {exc}") from exc


def _norm(units: str) -> str:
    """pint spells the dimensionless unit as an empty string; mscsim data files write '1'."""
    return "" if units.strip() in {"1", "", "dimensionless"} else units


# pint dimensionality of each SBML base unit kind mscsim needs, and the pint unit that kind stands for
_SBML_KINDS = (("[time]", "second", "s"), ("[mass]", "gram", "g"), ("[substance]", "mole", "mol"),
               ("[cell_count]", "item", "cell"), ("[length] ** 3", "litre", "L"), ("[length]", "metre", "m"))


def sbml_unit_factors(units: str, *, what: str = "units") -> tuple[tuple[str, int, int, float], ...]:
    """An mscsim unit string as SBML unit factors ``(kind, exponent, scale, multiplier)``, meaning
    prod (multiplier * 10**scale * kind) ** exponent; () for a pure number.

    pint parses the string and converts each of its units to an SBML base kind (hour -> 3600 second,
    mL -> 1e-3 litre, pg -> 1e-12 gram, umol -> 1e-6 mole, cell -> item); what pint cannot do is name the
    SBML kinds, which is the table above. Powers of ten become SBML's exact ``scale``, anything else the
    ``multiplier``; a factor left over when a kind cancels (ng/pg) goes to the first remaining kind.
    """
    ureg = registry()
    try:
        container = ureg.Quantity(1.0, _norm(units)).unit_items()
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError, TypeError,
            ValueError) as exc:
        raise DataError(f"{what}: cannot read units '{units}': {exc}") from exc
    exponents: dict[str, float] = {}
    factor: dict[str, float] = {}
    for name, exponent in container:
        dim = str(ureg.get_dimensionality(name))
        for dimensionality, kind, base in _SBML_KINDS:
            if dim == dimensionality:
                break
        else:
            raise DataError(f"{what}: unit '{name}' in '{units}' has no SBML base unit (dimension {dim})")
        exponents[kind] = exponents.get(kind, 0) + exponent
        factor[kind] = factor.get(kind, 1.0) * ureg.Quantity(1.0, name).to(base).magnitude ** exponent
    kept = [k for k in exponents if exponents[k] != 0]
    for k, e in exponents.items():
        if e != int(e):
            raise DataError(f"{what}: '{units}' has a fractional power of {k}, which SBML units cannot express")
    leftover = 1.0
    for k in exponents:
        if k not in kept:
            leftover *= factor[k]
    if not kept:
        return () if leftover == 1.0 else (("dimensionless", 1, *_scale(leftover)),)
    out = []
    for i, k in enumerate(kept):
        e = int(exponents[k])
        total = factor[k] * (leftover if i == 0 else 1.0)
        out.append((k, e, *_scale(total ** (1.0 / e))))
    return tuple(out)


def _scale(multiplier: float) -> tuple[int, float]:
    """(scale, multiplier) with multiplier * 10**scale == the value; a power of ten is written as an exact scale."""
    scale = round(math.log10(multiplier))
    if math.isclose(multiplier, 10.0 ** scale, rel_tol=1e-12):
        return scale, 1.0
    return 0, float(multiplier)


def expression_units(expr, symbol_units: dict[str, str], *, what: str = "expression") -> str:
    """The units of a SymPy expression whose symbols have the given units, e.g. 'pg/mL' or '1'.

    pint does the dimensional algebra: the expression is evaluated once with pint quantities and once with
    plain numbers (the same arbitrary magnitudes). A sum of incompatible units raises; a sum of compatible
    but different units (pg/mL + ng/mL), which mscsim would add without converting, shows up as the two
    results differing, since pint converts where the model does not. Either is a DataError naming ``what``.
    """
    import numpy as np
    import sympy as sp

    ureg = registry()
    names = sorted(str(s) for s in expr.free_symbols)
    missing = [n for n in names if n not in symbol_units]
    if missing:
        raise DataError(f"{what}: no units known for {missing}")
    magnitude = dict(zip(names, np.random.default_rng(0).uniform(0.2, 0.8, len(names))))

    def walk(e, leaf):
        if e.is_Symbol:
            return leaf(str(e))
        if e.is_Number:
            return float(e)
        args = [walk(a, leaf) for a in e.args]
        if isinstance(e, sp.Add):
            return sum(args[1:], args[0])
        if isinstance(e, sp.Mul):
            out = args[0]
            for a in args[1:]:
                out = out * a
            return out
        if isinstance(e, sp.Pow):
            base, exponent = args
            if isinstance(exponent, ureg.Quantity):
                exponent = exponent.to("").magnitude  # raises unless dimensionless
            return base ** exponent
        if isinstance(e, (sp.exp, sp.log)):
            arg = args[0].to("").magnitude if isinstance(args[0], ureg.Quantity) else args[0]
            return math.exp(arg) if isinstance(e, sp.exp) else math.log(arg)
        if isinstance(e, sp.Abs):
            return abs(args[0])
        if isinstance(e, (sp.Min, sp.Max)):
            pick = min if isinstance(e, sp.Min) else max
            return pick(args)
        raise DataError(f"{what}: cannot work out the units of '{e}' ({type(e).__name__})")

    try:
        q = walk(expr, lambda n: ureg.Quantity(magnitude[n], _norm(symbol_units[n])))
    except pint.errors.DimensionalityError as exc:
        raise DataError(f"{what}: inconsistent units in '{expr}': {exc}") from exc
    plain = walk(expr, lambda n: magnitude[n])
    if not isinstance(q, ureg.Quantity):
        q = ureg.Quantity(q, "")
    if not math.isclose(q.magnitude, plain, rel_tol=1e-9, abs_tol=1e-300):
        raise DataError(f"{what}: '{expr}' adds quantities in different units of the same kind (e.g. pg/mL and "
                        f"ng/mL) without converting them; units would give {q.magnitude!r}, the model {plain!r}")
    text = f"{q.units:~}".replace(" ", "")
    return text if text else "1"


def is_concentration(units: str) -> bool:
    """Whether ``units`` are an amount per volume (pg/mL, umol/L, particles 1/mL): a concentration."""
    try:
        dim = registry().Quantity(1.0, _norm(units)).dimensionality
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError) as exc:
        raise DataError(f"cannot read units '{units}': {exc}") from exc
    return dim.get("[length]", 0) == -3


def same_units(a: str, b: str) -> bool:
    """Whether two unit strings are the same unit (e.g. 'cells/ml/h' and '(cell/mL)/h'; 'ng/mL' is not 'pg/mL')."""
    ureg = registry()
    try:
        qa, qb = ureg.Quantity(1.0, _norm(a)), ureg.Quantity(1.0, _norm(b))
        return math.isclose(qa.to(qb.units).magnitude, 1.0, rel_tol=1e-12)
    except pint.errors.DimensionalityError:
        return False
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError) as exc:
        raise DataError(f"cannot read units '{a}' or '{b}': {exc}") from exc
