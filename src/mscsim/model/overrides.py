"""What-if parameter overrides, checked against the parameters' own records before anything runs.

An override is a bare number in the parameter's documented units (the ``units`` of its data file) or
``{value: 0.1, units: 1/d}``, converted with pint. A name the model does not know is refused with the closest
names (difflib); a value outside the parameter's ``bounds`` is refused with the bounds, the file and the sources
they come from, unless the scenario or design lists the name under ``allow_out_of_bounds`` (recorded in every
output). Negative values of a non-negative quantity (every mscsim parameter whose bounds do not reach below
zero, and every one without bounds: rates, volumes, fractions, concentrations) are refused whatever the list says.
"""

from __future__ import annotations

import difflib
import math
import tokenize
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pint
from pydantic import ConfigDict, Field, model_serializer, model_validator

from .._schema import NumbersNotBooleans
from ..errors import InputError
from .parameters import Parameter, ParameterSet
from .units import _norm, registry


class ParameterValue(NumbersNotBooleans):
    """One override: ``value`` in ``units`` (pint syntax), or in the parameter's documented units when ``units``
    is left out (a bare number in a file means exactly that)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    value: float
    units: str | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, raw: Any) -> Any:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return {"value": raw}
        return raw

    @model_serializer(mode="plain")
    def _as_written(self):
        """A bare override is written back as the bare number, so a resolved scenario reads like its file."""
        return self.value if self.units is None else {"value": self.value, "units": self.units}


@dataclass(frozen=True)
class Override:
    """A checked override: the value in the parameter's documented units, and where it sits against its bounds."""

    name: str
    value: float
    units: str
    given: float
    given_units: str | None
    default: float
    bounds: tuple[float, float] | None
    out_of_bounds: bool
    origin: str

    def record(self) -> dict:
        """As plain data for a manifest."""
        return {"name": self.name, "value": self.value, "units": self.units, "given": self.given,
                "given_units": self.given_units, "default": self.default,
                "bounds": None if self.bounds is None else list(self.bounds), "out_of_bounds": self.out_of_bounds,
                "file": self.origin}


def _suggest(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"names of this model's parameters, e.g. {known[:8]} ..."


def _convert(name: str, value: float, units: str, par: Parameter, where: str, file: str | None) -> float:
    ureg = registry()
    try:
        q = ureg.Quantity(value, _norm(units))
        return float(q.to(_norm(par.units)).magnitude)
    except pint.errors.DimensionalityError:
        raise InputError(f"{where}.units", units, f"units convertible to {par.units!r}, the documented units of "
                         f"{name} (from {par.origin})", file=file) from None
    except (pint.errors.PintError, AttributeError, TypeError, ValueError, AssertionError, SyntaxError,
            tokenize.TokenError) as exc:  # pint's parser raises all of these on junk
        raise InputError(f"{where}.units", units, f"units pint can read (e.g. '1/d', '1/h', 'mL', 'cell'), "
                         f"convertible to {par.units!r} ({type(exc).__name__})", file=file) from None


def check_overrides(pset: ParameterSet, overrides: Mapping[str, ParameterValue | float],
                    allow_out_of_bounds: Iterable[str] = (), *, where: str = "parameters",
                    file: str | None = None) -> tuple[Override, ...]:
    """Every override checked against ``pset`` (names, units, physical sign, bounds); InputError on the first
    problem, naming ``file``, the field, the value and what is allowed."""
    allow = list(allow_out_of_bounds)
    stray = [n for n in allow if n not in overrides]
    if stray:
        raise InputError("allow_out_of_bounds", stray[0], f"names of parameters overridden under '{where}' "
                         f"({sorted(overrides)})", file=file)
    out = []
    for name, raw in overrides.items():
        ov = raw if isinstance(raw, ParameterValue) else ParameterValue.model_validate(raw)
        if name not in pset:
            raise InputError(where, name, _suggest(name, pset.names()), file=file)
        par = pset[name]
        field = f"{where}.{name}"
        value = ov.value if ov.units is None else _convert(name, ov.value, ov.units, par, field, file)
        shown = ov.value if ov.units is None else f"{ov.value} {ov.units}"
        doc = f"{par.units}" if par.units not in ("1", "") else "(dimensionless)"
        if not math.isfinite(value):
            raise InputError(field, shown, f"a finite number in {doc}", file=file)
        sources = ", ".join(par.source) or "no source"
        lower = par.bounds[0] if par.bounds is not None else 0.0
        if value < 0 and lower >= 0:
            raise InputError(field, shown, f"a value >= 0: {name} is a non-negative quantity ({doc}; default "
                             f"{par.value:g}, bounds {_bounds_text(par)} from {par.origin} [{sources}]); "
                             "allow_out_of_bounds does not lift this", file=file)
        outside = par.bounds is not None and not (par.bounds[0] <= value <= par.bounds[1])
        if outside and name not in allow:
            converted = "" if ov.units is None else f" (= {value:g} {doc})"
            raise InputError(field, shown, f"a value within the bounds of {name}, {_bounds_text(par)} {doc}{converted}"
                             f" (from {par.origin} [{sources}]); to run outside them on purpose, add {name!r} to "
                             "allow_out_of_bounds", file=file)
        out.append(Override(name=name, value=value, units=par.units, given=ov.value, given_units=ov.units,
                            default=par.value, bounds=par.bounds, out_of_bounds=outside, origin=par.origin))
    return tuple(out)


def _bounds_text(par: Parameter) -> str:
    return "none given" if par.bounds is None else f"[{par.bounds[0]:g}, {par.bounds[1]:g}]"


def apply_overrides(pset: ParameterSet, checked: Iterable[Override], *, source: str = "scenario_override"
                    ) -> ParameterSet:
    """``pset`` with the checked overrides' values (documented units), each marked as set by ``source``."""
    values = {o.name: o.value for o in checked}
    return pset.override(values, source=source) if values else pset
