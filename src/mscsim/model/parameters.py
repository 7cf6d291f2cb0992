"""Parameters as data: value, units, bounds, variability, citation and evidence grade, loaded from YAML."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import _yaml
from ..errors import DataError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
Grade = Literal["human", "animal", "in_vitro", "assumed"]


class Distribution(BaseModel):
    """A distribution of a parameter across patients (between-patient) or across knowledge (uncertainty).

    lognormal: ``cv`` is the coefficient of variation, median the nominal value;
    logitnormal: ``sd`` is the SD on the logit scale around the nominal fraction;
    normal: ``sd`` in the parameter's units around the nominal value;
    uniform/loguniform: ``low``..``high`` in its units (the nominal value must lie inside);
    fixed (uncertainty only): the value is not uncertain - a definition, a unit scale, a switch, a culture
    setting or a value set at run time from other parameters; ``basis`` says which.
    ``basis`` says where the spread comes from: the source's reported spread, or the reasoning behind a prior.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    distribution: Literal["lognormal", "logitnormal", "normal", "uniform", "loguniform", "fixed"]
    cv: float | None = Field(default=None, gt=0)
    sd: float | None = Field(default=None, gt=0)
    low: float | None = None
    high: float | None = None
    basis: str = ""

    @model_validator(mode="after")
    def _fields_match_kind(self):
        needs = _NEEDS[self.distribution]
        given = {k for k in ("cv", "sd", "low", "high") if getattr(self, k) is not None}
        if needs - given:
            raise ValueError(f"a {self.distribution} distribution needs {sorted(needs)}; missing "
                             f"{sorted(needs - given)}")
        if given - needs:
            raise ValueError(f"a {self.distribution} distribution takes {sorted(needs) or 'no spread fields'}; "
                             f"remove {sorted(given - needs)}")
        if self.low is not None and self.high is not None:
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.distribution == "loguniform" and self.low <= 0:
                raise ValueError(f"a loguniform distribution needs low > 0 (got low {self.low})")
        return self

    @property
    def is_fixed(self) -> bool:
        return self.distribution == "fixed"


_NEEDS = {"lognormal": {"cv"}, "logitnormal": {"sd"}, "normal": {"sd"}, "uniform": {"low", "high"},
          "loguniform": {"low", "high"}, "fixed": set()}
FIXED_OVERRIDE = "set by the scenario (a what-if value is not uncertain)"


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
    label: str = Field(default="", max_length=60)
    why_no_source: str = ""
    note: str = ""

    @field_validator("source", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _distributions_fit_the_value(self):
        if self.between_patient is not None and self.between_patient.is_fixed:
            raise _Problem("between_patient.distribution", "fixed", "a spread (lognormal, logitnormal, normal, "
                           "uniform, loguniform), or leave between_patient out")
        u = self.uncertainty
        if u is None:
            return self
        if not u.basis.strip():
            raise _Problem("uncertainty.basis", u.basis, "a sentence saying where the spread comes from (the "
                           "source's reported spread, or the reasoning behind a prior)")
        if u.distribution in ("uniform", "loguniform"):
            if not u.low <= self.value <= u.high:
                raise _Problem("uncertainty", f"low {u.low}, high {u.high}",
                               f"a range that holds the value {self.value}")
            if self.bounds and (u.low < self.bounds[0] or u.high > self.bounds[1]):
                raise _Problem("uncertainty", f"low {u.low}, high {u.high}",
                               f"a range inside the bounds {list(self.bounds)}")
        if u.distribution == "lognormal" and self.value <= 0:
            raise _Problem("uncertainty.distribution", "lognormal", f"a distribution for the value {self.value} "
                           "(lognormal needs a value > 0; use uniform or normal)")
        if u.distribution == "logitnormal" and not 0 < self.value < 1:
            raise _Problem("uncertainty.distribution", "logitnormal", f"a distribution for the value {self.value} "
                           "(logitnormal needs a fraction strictly between 0 and 1)")
        return self


class _Problem(ValueError):
    """A check across a record's fields, reported as the field it is about."""

    def __init__(self, where: str, value: object, allowed: str):
        super().__init__(f"{where}: got {value!r}; allowed: {allowed}")
        self.where, self.value, self.allowed = where, value, allowed


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
    label: str = ""  # a short readable name for tables and plots (default: from the note)
    why_no_source: str = ""  # for an assumed value that matters: why no measurement exists to cite

    def with_value(self, value: float) -> "Parameter":
        return replace(self, value=float(value))

    @property
    def readable(self) -> str:
        """A short readable name: the record's ``label``, else the note's first clause (at most 60 characters)."""
        if self.label:
            return self.label
        text = re.sub(r"\s*\([^)]*\)", "", self.note)
        text = " ".join(re.split(r"[.;:](?:\s|$)", text)[0].split())
        return text if len(text) <= 60 else text[:57].rsplit(" ", 1)[0] + "..."


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
                                   note=f"set by {source} (default {base.value} {base.units})",
                                   uncertainty=Distribution(distribution="fixed", basis=FIXED_OVERRIDE))
        return ParameterSet(params)

    def citations(self, names=None) -> list[str]:
        keys: list[str] = []
        for name in names if names is not None else self.parameters:
            for key in self[name].source:
                if key not in keys:
                    keys.append(key)
        return keys


def load_parameter_file(path: str | Path) -> ParameterSet:
    """Read one parameter YAML file (mapping ``parameters: {name: record}``) and validate every record.

    Every parameter needs an ``uncertainty`` (how well its value is known, apart from how it varies between
    patients): a distribution from its source's reported spread, a stated prior, or ``distribution: fixed`` with
    the reason. A file is parsed once per process (and again only when it changes on disk)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read parameter file: {exc}") from exc
    return _load_parameter_file(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=128)
def _load_parameter_file(path_str: str, _mtime_ns: int, _size: int) -> ParameterSet:
    path = Path(path_str)
    try:
        raw = _yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read parameter file: {exc}") from exc
    out: dict[str, Parameter] = {}
    for name, rec in (raw.get("parameters") or {}).items():
        try:
            r = _ParameterRecord.model_validate(rec)
        except ValidationError as exc:
            raise _record_error(path, name, exc) from None
        if r.bounds and not (r.bounds[0] <= r.value <= r.bounds[1]):
            raise DataError(f"{path}: parameter '{name}' value {r.value} outside its bounds {r.bounds}")
        if r.uncertainty is None:
            raise DataError(f"{path}: parameter '{name}' has no 'uncertainty': give the spread its source reports, "
                            "a stated prior (e.g. {distribution: loguniform, low: .., high: .., basis: why}) or "
                            "{distribution: fixed, basis: why the value is not uncertain}")
        out[name] = Parameter(name=name, value=r.value, units=r.units, grade=r.grade, source=tuple(r.source),
                              bounds=r.bounds, fitted_to=tuple(r.fitted_to), between_patient=r.between_patient,
                              uncertainty=r.uncertainty, note=r.note, origin=path.name, label=r.label,
                              why_no_source=r.why_no_source)
    return ParameterSet(out)




def _record_error(path: Path, name: str, exc: ValidationError) -> DataError:
    """A parameter record's first problem as one line naming the file, the parameter, the field and the value."""
    err = exc.errors()[0]
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, _Problem):
        where, value, allowed = problem.where, problem.value, problem.allowed
    else:
        where = ".".join(str(x) for x in err["loc"]) or "(record)"
        value, allowed = err.get("input"), err["msg"].removeprefix("Value error, ")
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "basis"}
    return DataError(f"{path}: parameter '{name}', field '{where}': got {value!r}; allowed: {allowed}")


def load_parameter_sets(names: list[str]) -> ParameterSet:
    """Load bundled parameter files by name (``data/parameters/<name>.yaml``), later ones overriding."""
    result = ParameterSet({})
    for name in names:
        result = result.merged(load_parameter_file(DATA_DIR / "parameters" / f"{name}.yaml"))
    return result
