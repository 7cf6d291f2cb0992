"""Readable names, units and kinds of the model's variables, read from ``data/display/names.yaml``, and the
number formats that figures, tables, the terminal and the explorer share.

A figure says "TNF-alpha (pg/mL)", never ``tnf (1)``; a count of cells is floored at one cell; a stage is a
category, not a point on a continuous axis. Keeping the names as data lets a user change them without code.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from . import _yaml
from .errors import DataError
from .model.parameters import DATA_DIR

NAMES_FILE = DATA_DIR / "display" / "names.yaml"
Kind = Literal["continuous", "count", "share", "stage", "binary", "response"]
UNTREATED = "_untreated"
RESPONSE_CATEGORIES = ("complete", "partial", "none", "progression")  # the codes 0-3 of endpoints.evaluate


class Display(BaseModel):
    """How one variable is shown: its label, the units an axis prints, and what kind of quantity it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str
    units: str = ""
    kind: Kind = "continuous"
    categories: tuple[str, ...] = ()
    better: Literal["lower", "higher"] | None = None

    def axis_label(self) -> str:
        """``TNF-alpha (pg/mL)``; ``share of patients (%)`` for a binary endpoint drawn over a cohort."""
        return f"{self.label} ({self.units})" if self.units else self.label

    @property
    def categorical(self) -> bool:
        return self.kind in ("stage", "binary", "response")


@lru_cache(maxsize=1)
def _tables() -> dict[str, dict[str, Display]]:
    """Each section of the names file (variables, fields, diseases): name -> display record."""
    try:
        raw = _yaml.safe_load(NAMES_FILE.read_text()) or {}
        return {section: {name: Display.model_validate(rec) for name, rec in (raw.get(section) or {}).items()}
                for section in ("variables", "fields", "diseases")}
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise DataError(f"{NAMES_FILE}: invalid display-name table: {exc}") from exc


def _table() -> dict[str, Display]:
    return _tables()["variables"]


def field_display(path: str) -> Display:
    """The display record of a scenario field (``regimen.dose.cells`` -> 'cells per dose (cells)')."""
    return _tables()["fields"].get(path) or Display(label=path.rsplit(".", 1)[-1].replace("_", " "))


def disease_label(disease: str) -> str:
    """A disease as a title says it ('acute_gvhd' -> 'steroid-refractory acute GVHD'); else its name in words."""
    rec = _tables()["diseases"].get(disease)
    return rec.label if rec else disease.replace("_", " ")


def display(name: str, attrs: dict | None = None) -> Display:
    """The display record of a variable (an ``_untreated`` comparator shows as its treated variable); a name
    missing from the table falls back to its ``long_name`` and ``units`` attributes, then to the name itself."""
    base = name.removesuffix(UNTREATED)
    table = _table()
    if base in table:
        return table[base]
    attrs = attrs or {}
    units = str(attrs.get("units", ""))
    return Display(label=str(attrs.get("long_name") or base), units="" if units in ("1", "") else units)


def known_names() -> list[str]:
    return sorted(_table())


def fmt(value: float, digits: int = 3) -> str:
    """A number as a person writes it: three significant digits, no exponent between 0.001 and a million,
    thousands separators (``123,000``), ``5e7`` and ``3.16e6`` beyond."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    v = float(value)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.{digits}g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    decimals = digits - 1 - int(math.floor(math.log10(a)))
    if decimals <= 0:
        return f"{round(v, decimals):,.0f}"
    return f"{v:.{decimals}f}"


def pct(share: float) -> str:
    """A share (0-1) as a percentage: '25%', '2.5%', '0.25%'."""
    v = 100 * float(share)
    if v == 0 or v >= 10 or v == round(v):
        return f"{v:.0f}%"
    return f"{fmt(v, 2)}%"


def fmt_value(value: float, disp: Display) -> str:
    """A value in the variable's display units: shares as %, counts below one cell as 'fewer than 1 cell'."""
    if disp.kind == "share":
        return pct(value)
    if disp.kind == "count" and float(value) < 1:
        return "fewer than 1 cell"
    if disp.kind == "stage":
        return disp.categories[int(round(float(value)))] if disp.categories else f"stage {int(round(float(value)))}"
    if disp.kind == "binary":
        return "yes" if float(value) >= 0.5 else "no"
    if disp.kind == "response":
        return RESPONSE_CATEGORIES[int(value)]
    return fmt(value)


def scaled(values: np.ndarray, disp: Display) -> np.ndarray:
    """Values as an axis draws them: shares in %, counts below one cell hidden (NaN), others unchanged."""
    v = np.asarray(values, dtype=float)
    if disp.kind == "share":
        return 100.0 * v
    if disp.kind == "count":
        return np.where(v >= 1.0, v, np.nan)
    return v


def category_names(disp: Display, codes) -> list[str]:
    """Names of the categories a stage, binary or response variable takes (in order)."""
    if disp.kind == "stage":
        return list(disp.categories) or [f"stage {int(c)}" for c in codes]
    if disp.kind == "binary":
        return ["no", "yes"]
    return list(RESPONSE_CATEGORIES)
