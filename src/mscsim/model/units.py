"""Unit conversion for parameter values, with pint (cells and per-cell quantities added as units)."""

from __future__ import annotations

from functools import lru_cache

import pint

from ..errors import DataError


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    """The one unit registry mscsim uses; counts of cells are a unit so 'cells/kg' converts cleanly."""
    ureg = pint.UnitRegistry()
    ureg.define("cell = [cell_count] = cells")
    ureg.define("EU = [endotoxin_unit]")
    return ureg


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
