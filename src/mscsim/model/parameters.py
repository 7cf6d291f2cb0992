"""Parameters as data: value, units, bounds, variability, citation and evidence grade, loaded from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import DataError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
Grade = Literal["human", "animal", "in_vitro", "assumed"]


class Distribution(BaseModel):
    """A distribution of a parameter across patients or across knowledge (uncertainty).

    lognormal: ``cv`` is the coefficient of variation around the nominal value;
    logitnormal: ``sd`` is the SD on the logit scale around the nominal fraction;
    normal: ``sd`` in the parameter's units; uniform/loguniform: ``low``..``high`` in its units.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    distribution: Literal["lognormal", "logitnormal", "normal", "uniform", "loguniform"]
    cv: float | None = Field(default=None, gt=0)
    sd: float | None = Field(default=None, gt=0)
    low: float | None = None
    high: float | None = None


class _ParameterRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float
    units: str
    bounds: tuple[float, float] | None = None
    grade: Grade
    source: list[str]
    fitted_to: list[str] = []
    between_patient: Distribution | None = None
    uncertainty: Distribution | None = None
    note: str = ""

    @field_validator("source", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, str) else v


@dataclass(frozen=True)
class Parameter:
    """One model parameter with everything needed to trust (or doubt) its value."""

    name: str
    value: float
    units: str
    grade: str
    source: tuple[str, ...]
    bounds: tuple[float, float] | None = None
    fitted_to: tuple[str, ...] = ()
    between_patient: Distribution | None = None
    uncertainty: Distribution | None = None
    note: str = ""
    origin: str = ""  # data file it came from

    def with_value(self, value: float) -> "Parameter":
        return replace(self, value=float(value))


@dataclass(frozen=True)
class ParameterSet:
    """A named collection of parameters; later sets override earlier ones by name (species over defaults)."""

    parameters: Mapping[str, Parameter] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Parameter:
        try:
            return self.parameters[name]
        except KeyError:
            raise DataError(f"parameter '{name}' is used by the model but no data file defines it") from None

    def __contains__(self, name: str) -> bool:
        return name in self.parameters

    def names(self) -> list[str]:
        return list(self.parameters)

    def merged(self, other: "ParameterSet") -> "ParameterSet":
        return ParameterSet({**self.parameters, **other.parameters})

    def override(self, values: Mapping[str, float], *, source: str = "scenario_override") -> "ParameterSet":
        """Return a copy with some values replaced (for scenario what-ifs); the citation says so."""
        params = dict(self.parameters)
        for name, value in values.items():
            base = self[name]
            params[name] = replace(base, value=float(value), source=(source,), grade="assumed",
                                   note=f"set by {source} (default {base.value} {base.units})")
        return ParameterSet(params)

    def citations(self, names=None) -> list[str]:
        keys: list[str] = []
        for name in names if names is not None else self.parameters:
            for key in self[name].source:
                if key not in keys:
                    keys.append(key)
        return keys


def load_parameter_file(path: str | Path) -> ParameterSet:
    """Read one parameter YAML file (mapping ``parameters: {name: record}``) and validate every record."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read parameter file: {exc}") from exc
    out: dict[str, Parameter] = {}
    for name, rec in (raw.get("parameters") or {}).items():
        try:
            r = _ParameterRecord.model_validate(rec)
        except ValidationError as exc:
            raise DataError(f"{path}: parameter '{name}': {exc}") from exc
        if r.bounds and not (r.bounds[0] <= r.value <= r.bounds[1]):
            raise DataError(f"{path}: parameter '{name}' value {r.value} outside its bounds {r.bounds}")
        out[name] = Parameter(name=name, value=r.value, units=r.units, grade=r.grade, source=tuple(r.source),
                              bounds=r.bounds, fitted_to=tuple(r.fitted_to), between_patient=r.between_patient,
                              uncertainty=r.uncertainty, note=r.note, origin=path.name)
    return ParameterSet(out)


def load_parameter_sets(names: list[str]) -> ParameterSet:
    """Load bundled parameter files by name (``data/parameters/<name>.yaml``), later ones overriding."""
    result = ParameterSet({})
    for name in names:
        result = result.merged(load_parameter_file(DATA_DIR / "parameters" / f"{name}.yaml"))
    return result
