"""The co-culture preset (YAML) and its schema, validated at the boundary.

A preset describes an in vitro assay: MSCs in a culture well with stimulated PBMC/T cells (proliferation
assay) or with macrophages (polarisation assay), at several MSC:responder ratios, with or without
IFN-gamma pre-licensing of the MSCs. Every error names the file, the field, the bad value and what is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from .._schema import NumbersNotBooleans
from ..errors import InputError
from ..io._validation import exists, input_error, read_yaml
from ..model.overrides import ParameterValue

RATIO_HELP = "MSC:responder ratios written 'A:B' with positive numbers, e.g. '1:10'"


class _Strict(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class WellSpec(_Strict):
    """The culture well: medium volume and the responder cells seeded in it."""

    volume_ml: float = Field(gt=0, le=10, description="medium volume per well (mL)")
    responders_per_well: float = Field(gt=0, le=1e8, description="PBMC/T cells or macrophages seeded per well")


class PrelicensingSpec(_Strict):
    """IFN-gamma pre-licensing of the MSCs before the co-culture; the medium is then replaced (washed out)."""

    ifng_ng_per_ml: float = Field(gt=0, le=1000)
    hours: float = Field(gt=0, le=168)


class CocultureSpec(_Strict):
    """A co-culture assay: which responders, which ratios, how long, and whether MSCs are pre-licensed."""

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    assay: Literal["t_cell_proliferation", "macrophage_polarisation"]
    well: WellSpec
    ratios: list[str] = Field(min_length=1, max_length=50)
    duration_days: float = Field(gt=0, le=14)
    thymidine_pulse_hours: float | None = Field(default=None, gt=0, le=72, description=(
        "for a 3H-thymidine-type readout: proliferation in the last hours of the culture"))
    prelicensing: PrelicensingSpec | None = None
    parameters: dict[str, ParameterValue] = Field(default_factory=dict, description="overrides of the well's "
                                                  "parameters: a number in its documented units, or {value, units}")
    allow_out_of_bounds: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list, description="citation keys of the assay design")

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v):
        values = [parse_ratio(r) for r in v]
        if len(set(values)) != len(values):
            raise ValueError("each ratio may appear only once")
        return v

    @model_validator(mode="after")
    def _pulse_in_culture(self):
        if self.thymidine_pulse_hours is not None and self.thymidine_pulse_hours > self.duration_days * 24:
            raise ValueError(f"thymidine_pulse_hours ({self.thymidine_pulse_hours}) must fit in the culture "
                             f"({self.duration_days * 24:g} h)")
        return self

    def msc_per_responder(self) -> list[float]:
        return [parse_ratio(r) for r in self.ratios]

    def resolved(self) -> dict:
        """The preset with every default filled in, as plain JSON-able data (recorded in the manifest)."""
        return json.loads(self.model_dump_json())


def parse_ratio(text: str) -> float:
    """'1:10' -> 0.1 MSC per responder cell."""
    parts = str(text).split(":")
    try:
        a, b = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not a ratio; give {RATIO_HELP}") from None
    if not (0 < a < 1e12 and 0 < b < 1e12):
        raise ValueError(f"{text!r}: both sides of a ratio must be finite numbers > 0 ({RATIO_HELP})")
    if not 1e-6 <= a / b <= 1e3:
        raise ValueError(f"{text!r}: MSC:responder ratios from 1:1000000 to 1000:1")
    return a / b


def coculture_from_dict(data: dict, *, file: str | None = None) -> CocultureSpec:
    """Validate a preset mapping; errors name the field, the value and what is allowed."""
    if not isinstance(data, dict):
        raise InputError("(top level)", type(data).__name__, "a mapping of co-culture preset fields", file=file)
    try:
        return CocultureSpec.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, file, CocultureSpec) from None


def load_coculture(path: str | Path) -> CocultureSpec:
    """Read and validate a co-culture preset YAML file."""
    path = Path(path)
    if not exists(path):
        raise InputError("PRESET", str(path), "a path to an existing co-culture preset YAML file, or the name of "
                         "a bundled one (e.g. coculture_pbmc)")
    data = read_yaml(path)
    spec = coculture_from_dict(data, file=str(path))
    from .well import well_parameters

    well_parameters(spec, file=str(path))  # parameter names, units and bounds checked now, not mid-run
    return spec
