"""Virtual trial populations: patient covariates drawn with their correlations (a Gaussian copula), keyed per patient.

A cohort spec gives each covariate a marginal distribution, pairwise correlations on the latent normal scale and
inclusion criteria. Patient ``i`` is drawn from its own generators (``STREAM`` below), so its covariates are the
same whichever chunk or worker computes it; patients who fail the criteria are re-drawn deterministically.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, ValidationError, model_validator
from scipy import stats
from scipy.special import ndtri

from .. import _ufuncs as uf
from .._keyed_random import keyed_rows
from .._schema import NumbersNotBooleans
from ..errors import InputError
from ..io._validation import exists, read_yaml
from ..io.scenario import PatientSpec
from ..model.parameters import DATA_DIR
from ..model.references import bibliography
from ..simulation import COVARIATES

STREAM = 7919  # this module's random stream: draws come from default_rng([seed, patient, STREAM, stream, attempt])
MAX_ATTEMPTS = 10_000  # screening draws per patient before the inclusion criteria count as (nearly) impossible
COHORT_DIR = DATA_DIR / "cohorts"
_BATCH_ROWS = 1024  # rows a re-draw round aims at when few patients are left
DERIVED = "weight_kg"  # = bmi * height_m**2 when both are drawn and weight_kg is not

Grade = Literal["human", "animal", "in_vitro", "assumed"]


# --- what each covariate may hold -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Kind:
    """What values a covariate takes: continuous within [low, high], a yes/no, or one of a few categories."""

    kind: Literal["continuous", "bool", "category"]
    low: float = -math.inf
    high: float = math.inf
    values: tuple = ()
    cast: type = float

    def describe(self) -> str:
        if self.kind == "continuous":
            return f"a continuous value in [{self.low:g}, {self.high:g}] (normal, lognormal or uniform)"
        if self.kind == "bool":
            return "true/false (bernoulli)"
        return f"one of {list(self.values)} (categorical)"


def _kind_from_field(name: str) -> _Kind:
    """The kind of a model covariate, read from PatientSpec so the two never disagree."""
    field = PatientSpec.model_fields[name]
    ann = field.annotation
    if typing.get_origin(ann) in (Union, types.UnionType):
        ann = next(a for a in typing.get_args(ann) if a is not type(None))
    low, high = -math.inf, math.inf
    for m in field.metadata:
        for attr in ("ge", "gt"):
            low = getattr(m, attr, None) if getattr(m, attr, None) is not None else low
        for attr in ("le", "lt"):
            high = getattr(m, attr, None) if getattr(m, attr, None) is not None else high
    if ann is bool:
        return _Kind("bool", cast=bool, values=(False, True))
    if typing.get_origin(ann) is Literal:
        return _Kind("category", values=typing.get_args(ann), cast=str)
    if ann is int:
        return _Kind("category", values=tuple(range(int(low), int(high) + 1)), cast=int)
    return _Kind("continuous", low=float(low), high=float(high))


# auxiliary covariates (not model inputs): sex, and body-mass index and height, from which weight is derived
# (their ranges keep the derived weight within PatientSpec's: 70 * 2.3**2 = 370 kg <= 400 kg); and the organs
# acute GVHD involves, recorded as trials describe their patients (the model's lesion is one systemic lesion, so
# they act on nothing: they show in the subgroup tables that no organ responds differently in the model)
_YES_NO = _Kind("bool", cast=bool, values=(False, True))
KINDS: dict[str, _Kind] = {
    **{name: _kind_from_field(name) for name in COVARIATES},
    "sex_female": _YES_NO,
    "gvhd_gut": _YES_NO,
    "gvhd_skin": _YES_NO,
    "gvhd_liver": _YES_NO,
    "bmi": _Kind("continuous", low=10.0, high=70.0),
    "height_m": _Kind("continuous", low=0.4, high=2.3),
}


class _Problem(ValueError):
    """A validation failure that knows its field: turned into an InputError by ``cohort_from_dict``."""

    def __init__(self, where: str, value: object, allowed: str):
        self.where, self.value, self.allowed = where, value, allowed
        super().__init__(f"{where}: got {value!r}; allowed: {allowed}")


# --- the spec -----------------------------------------------------------------------------------------------------

class _Strict(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Marginal(_Strict):
    """Provenance every marginal may carry (like a parameter record)."""

    source: list[str] = Field(default_factory=list)
    grade: Grade | None = None
    note: str = ""


class Normal(_Marginal):
    """Normal(mean, sd), truncated to [low, high] when given (and always to the covariate's allowed range)."""

    distribution: Literal["normal"]
    mean: float
    sd: float = Field(gt=0)
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _order(self):
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class LogNormal(_Marginal):
    """Log-normal given by its median and coefficient of variation; optional truncation as for the normal."""

    distribution: Literal["lognormal"]
    median: float = Field(gt=0)
    cv: float = Field(gt=0, le=20)
    low: float | None = Field(default=None, ge=0)
    high: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    @property
    def sigma(self) -> float:
        return math.sqrt(math.log1p(self.cv ** 2))


class Uniform(_Marginal):
    distribution: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _order(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class Bernoulli(_Marginal):
    distribution: Literal["bernoulli"]
    p: float = Field(ge=0, le=1, description="probability of true")


class Categorical(_Marginal):
    """Categories in the listed order (low latent values take the first); probabilities sum to 1."""

    distribution: Literal["categorical"]
    categories: dict[int | str, float] = Field(min_length=1)

    @model_validator(mode="after")
    def _probabilities(self):
        bad = {k: v for k, v in self.categories.items() if v < 0}
        if bad:
            raise ValueError(f"probabilities must be >= 0, got {bad}")
        total = sum(self.categories.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"probabilities must sum to 1 (within 1e-6), got {total:.9g}")
        return self


Distribution = Annotated[Union[Normal, LogNormal, Uniform, Bernoulli, Categorical],
                         Field(discriminator="distribution")]
CONTINUOUS = (Normal, LogNormal, Uniform)


class Criterion(_Strict):
    """An inclusion criterion: the covariate's value is ``in`` a list, or within [min, max]."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)

    covariate: str
    in_: list[bool | int | str] | None = Field(default=None, alias="in", min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_form(self):
        ranged = self.min is not None or self.max is not None
        if (self.in_ is not None) == ranged:
            raise ValueError("give either 'in' (a list of values) or 'min'/'max' (a range)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class CohortSpec(_Strict):
    """A virtual population: covariate marginals, latent correlations, inclusion criteria and their sources."""

    covariates: dict[str, Distribution] = Field(min_length=1)
    correlations: list[tuple[str, str, float]] = Field(default_factory=list)
    inclusion: list[Criterion] = Field(default_factory=list)
    source: list[str] = Field(min_length=1)
    note: str = ""

    @model_validator(mode="after")
    def _consistent(self):
        for name, dist in self.covariates.items():
            _check_marginal(name, dist)
        _correlation_matrix(self)
        for i, crit in enumerate(self.inclusion):
            _check_criterion(self, i, crit)
        bib = bibliography()
        for where, keys in [("population.source", self.source)] + [
                (f"population.covariates.{n}.source", d.source) for n, d in self.covariates.items()]:
            missing = [k for k in keys if k not in bib]
            if missing:
                raise _Problem(where, missing, "citation keys in data/references/*.yaml")
        return self

    @property
    def drawn(self) -> list[str]:
        """Covariates drawn from the copula, in the listed order."""
        return list(self.covariates)

    @property
    def derives_weight(self) -> bool:
        return DERIVED not in self.covariates and "bmi" in self.covariates and "height_m" in self.covariates

    @property
    def columns(self) -> list[str]:
        """The covariate columns a drawn cohort holds (drawn ones, then the derived weight)."""
        return self.drawn + ([DERIVED] if self.derives_weight else [])


def _cast(name: str, value):
    """A category or criterion value as its covariate's type (``"3"`` -> 3 for a grade); ValueError if it cannot be."""
    kind = KINDS[name]
    if kind.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(value)
        return value
    if kind.cast is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, int):
            return value
        raise ValueError(value)
    if not isinstance(value, str):
        raise ValueError(value)
    return value


def _bounds(name: str, dist) -> tuple[float, float]:
    """Support of a continuous marginal after truncation to the spec's and the covariate's ranges."""
    kind = KINDS[name]
    if isinstance(dist, Uniform):
        return dist.low, dist.high
    low = kind.low if dist.low is None else max(dist.low, kind.low)
    high = kind.high if dist.high is None else min(dist.high, kind.high)
    if isinstance(dist, LogNormal):
        low = max(low, 0.0)
    return low, high


def _support(spec: CohortSpec, name: str):
    """(low, high) of a continuous covariate, or the set of values a discrete one takes with probability > 0."""
    if name == DERIVED and spec.derives_weight:
        (bl, bh), (hl, hh) = _bounds("bmi", spec.covariates["bmi"]), _bounds("height_m", spec.covariates["height_m"])
        return bl * hl ** 2, bh * hh ** 2
    dist = spec.covariates[name]
    if isinstance(dist, CONTINUOUS):
        return _bounds(name, dist)
    if isinstance(dist, Bernoulli):
        return {v for v, keep in ((True, dist.p > 0), (False, dist.p < 1)) if keep}
    return {_cast(name, k) for k, p in dist.categories.items() if p > 0}


def _check_marginal(name: str, dist) -> None:
    where = f"population.covariates.{name}"
    if name not in KINDS:
        raise _Problem(where, name, f"covariates among {list(KINDS)}")
    kind = KINDS[name]
    fits = {"continuous": CONTINUOUS, "bool": (Bernoulli,), "category": (Categorical,)}[kind.kind]
    if not isinstance(dist, fits):
        raise _Problem(f"{where}.distribution", dist.distribution, f"{name} is {kind.describe()}")
    if kind.kind == "continuous":
        for end in ("low", "high"):
            v = getattr(dist, end)
            if v is not None and not kind.low <= v <= kind.high:
                raise _Problem(f"{where}.{end}", v, f"a value within {name}'s range [{kind.low:g}, {kind.high:g}]")
        low, high = _bounds(name, dist)
        if not low < high:
            raise _Problem(where, [low, high], f"a range overlapping {name}'s [{kind.low:g}, {kind.high:g}]")
        if isinstance(dist, Normal) and stats.norm.cdf(high, dist.mean, dist.sd) - stats.norm.cdf(
                low, dist.mean, dist.sd) < 1e-12:
            raise _Problem(where, [low, high], f"a truncation range the normal({dist.mean:g}, {dist.sd:g}) reaches")
    if kind.kind == "category":
        seen = set()
        for key in dist.categories:
            try:
                value = _cast(name, key)
            except ValueError:
                value = None
            if value not in kind.values:
                raise _Problem(f"{where}.categories", key, f"{name} categories among {list(kind.values)}")
            if value in seen:
                raise _Problem(f"{where}.categories", key, "each category once")
            seen.add(value)


def _correlation_matrix(spec: CohortSpec) -> np.ndarray:
    """The latent correlation matrix R (order: spec.drawn); must be positive definite."""
    names = spec.drawn
    R = np.eye(len(names))
    seen = {}
    for i, (a, b, rho) in enumerate(spec.correlations):
        where = f"population.correlations[{i}]"
        for n in (a, b):
            if n not in spec.covariates:
                raise _Problem(where, n, f"a covariate given under population.covariates: {names}")
        if a == b:
            raise _Problem(where, [a, b, rho], "two different covariates")
        if not -1 < rho < 1:
            raise _Problem(where, rho, "a correlation strictly between -1 and 1")
        pair = frozenset((a, b))
        if pair in seen:
            raise _Problem(where, [a, b], f"each pair once (already given at population.correlations[{seen[pair]}])")
        seen[pair] = i
        j, k = names.index(a), names.index(b)
        R[j, k] = R[k, j] = rho
    try:
        np.linalg.cholesky(R)
    except np.linalg.LinAlgError:
        eig = float(np.linalg.eigvalsh(R).min())
        raise _Problem("population.correlations", [list(c) for c in spec.correlations],
                       f"pairwise correlations whose matrix is positive definite (this one is not: smallest "
                       f"eigenvalue {eig:.3g}); weaken or drop some of them") from None
    return R


def _check_criterion(spec: CohortSpec, i: int, crit: Criterion) -> None:
    where = f"population.inclusion[{i}]"
    name = crit.covariate
    if name not in spec.columns:
        raise _Problem(f"{where}.covariate", name, f"a covariate of the cohort: {spec.columns}")
    kind = _Kind("continuous") if name == DERIVED and spec.derives_weight else KINDS[name]
    support = _support(spec, name)
    if crit.in_ is not None:
        if kind.kind == "continuous":
            raise _Problem(f"{where}.in", crit.in_, f"'min'/'max' for the continuous covariate {name}")
        try:
            values = {_cast(name, v) for v in crit.in_}
        except ValueError as exc:
            raise _Problem(f"{where}.in", exc.args[0], f"{name} values: {list(kind.values)}") from None
        unknown = [v for v in values if v not in kind.values]
        if unknown:
            raise _Problem(f"{where}.in", unknown[0], f"{name} values: {list(kind.values)}")
        if not values & support:
            raise _Problem(where, crit.in_, f"values {name} takes in this cohort ({sorted(support, key=str)}); "
                                            "no patient could meet it")
        return
    if kind.kind == "bool" or (kind.kind == "category" and kind.cast is not int):
        raise _Problem(where, {"min": crit.min, "max": crit.max}, f"'in' (a list of values) for {name}")
    lo = -math.inf if crit.min is None else crit.min
    hi = math.inf if crit.max is None else crit.max
    feasible = (support[0] <= hi and lo <= support[1]) if isinstance(support, tuple) else \
        any(lo <= v <= hi for v in support)
    if not feasible:
        raise _Problem(where, [crit.min, crit.max], f"a range that meets {name}'s values in this cohort "
                                                   f"({support}); no patient could meet it")


# --- reading specs ------------------------------------------------------------------------------------------------

def cohort_from_dict(data: dict, *, file: str | None = None, where: str = "population") -> CohortSpec:
    """Validate a ``population:`` mapping; errors name the field (``population.correlations[1]``), value and rule."""
    if not isinstance(data, dict):
        raise InputError(where, type(data).__name__, "a mapping with covariates, correlations, inclusion, source",
                         file=file)
    try:
        return CohortSpec.model_validate(data)
    except ValidationError as exc:
        raise _input_error(exc, file, where) from None


def load_cohort(name_or_path: str | Path) -> CohortSpec:
    """A bundled cohort (data/cohorts/<name>.yaml) by name, or a YAML file holding a ``population:`` block."""
    path = Path(name_or_path)
    if not exists(path):
        bundled = COHORT_DIR / f"{name_or_path}.yaml"
        if path.suffix in (".yaml", ".yml") or not exists(bundled):
            raise InputError("COHORT", str(name_or_path), f"a bundled cohort {bundled_cohorts()} or a path to an "
                             "existing YAML file with a 'population:' block")
        path = bundled
    data = read_yaml(path)
    if not isinstance(data, dict) or "population" not in data:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError("population", got, "a top-level 'population:' mapping", file=str(path))
    extra = sorted(set(data) - {"population", "description"})
    if extra:
        raise InputError(extra[0], data[extra[0]], "top-level fields 'population' and 'description'", file=str(path))
    return cohort_from_dict(data["population"], file=str(path))


def bundled_cohorts() -> list[str]:
    return sorted(p.stem for p in COHORT_DIR.glob("*.yaml"))


_TAGS = {"normal", "lognormal", "uniform", "bernoulli", "categorical"}
_MODELS = {"normal": Normal, "lognormal": LogNormal, "uniform": Uniform, "bernoulli": Bernoulli,
           "categorical": Categorical}


def _input_error(exc: ValidationError, file: str | None, where: str) -> InputError:
    err = exc.errors()[0]
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, _Problem):
        return InputError(problem.where, problem.value, problem.allowed, file=file)
    loc = list(err["loc"])
    model = None
    if len(loc) >= 3 and loc[0] == "covariates" and loc[2] in _TAGS:  # the union's tag is no field of the file
        model = _MODELS[loc.pop(2)]
    path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    if err["type"] == "extra_forbidden":
        if len(loc) == 1:
            model = CohortSpec
        elif loc[0] == "inclusion":
            model = Criterion
        fields = sorted(f.alias or n for n, f in model.model_fields.items()) if model else None
        allowed = f"known fields: {fields} (unknown field)" if fields else "no extra fields (unknown field)"
        return InputError(path, err["input"], allowed, file=file)
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    value = err.get("input")
    if isinstance(value, dict):
        value = dict(list(value.items())[:6])
    return InputError(path, value, err["msg"].removeprefix("Value error, ") + more, file=file)


# --- drawing ------------------------------------------------------------------------------------------------------

def _latent_draws(seed: int, patients: np.ndarray, stream: int, attempt: int, d: int) -> np.ndarray:
    """Independent standard normals, one row per patient, from default_rng([seed, patient, STREAM, stream, attempt])
    (computed for all patients at once: ``mscsim._keyed_random``)."""
    return keyed_rows([int(seed), np.asarray(patients), STREAM, int(stream), int(attempt)],
                      lambda g: g.standard_normal(d), d)


def _truncated_normals(parts: list[tuple[np.ndarray, float, float]]) -> list[np.ndarray]:
    """Each (z, a, b): a standard normal truncated to [a, b] at the quantile of z (the upper half through survival
    functions, for precision). SciPy's truncnorm works element by element, so every covariate's values come from one
    ppf and one isf call: the same numbers as a call per covariate, without the per-call overhead (most of a chunk's
    cost at a few hundred patients)."""
    cut = [k for k, (_, a, b) in enumerate(parts) if not (a == -math.inf and b == math.inf)]
    out = [z for z, _, _ in parts]
    if not cut:
        return out
    z = np.concatenate([parts[k][0] for k in cut])
    sizes = [parts[k][0].size for k in cut]
    a = np.repeat([parts[k][1] for k in cut], sizes)
    b = np.repeat([parts[k][2] for k in cut], sizes)
    lower = z <= 0
    x = np.empty_like(z)
    x[lower] = stats.truncnorm.ppf(stats.norm.cdf(z[lower]), a[lower], b[lower])
    x[~lower] = stats.truncnorm.isf(stats.norm.sf(z[~lower]), a[~lower], b[~lower])
    x = np.clip(x, a, b)
    for k, piece in zip(cut, np.split(x, np.cumsum(sizes)[:-1])):
        out[k] = piece
    return out


def _standardised_bounds(name: str, dist) -> tuple[float, float]:
    """The truncation bounds of a normal or log-normal marginal on the latent standard-normal scale."""
    low, high = _bounds(name, dist)
    if isinstance(dist, Normal):
        return (low - dist.mean) / dist.sd, (high - dist.mean) / dist.sd
    mu, s = math.log(dist.median), dist.sigma
    return (-math.inf if low <= 0 else (math.log(low) - mu) / s,
            math.inf if high == math.inf else (math.log(high) - mu) / s)


def _marginals(spec: CohortSpec, names: list[str], z: np.ndarray) -> dict[str, np.ndarray]:
    """Covariate values from latent standard normals (column j of z for names[j]) by each marginal's inverse CDF;
    the truncated normal quantiles of all normal and log-normal covariates in one call (``_truncated_normals``)."""
    smooth = [j for j, name in enumerate(names) if isinstance(spec.covariates[name], (Normal, LogNormal))]
    latent = _truncated_normals([(z[:, j], *_standardised_bounds(names[j], spec.covariates[names[j]]))
                                 for j in smooth])
    truncated = dict(zip(smooth, latent))
    return {name: _marginal(name, spec.covariates[name], truncated.get(j, z[:, j])) for j, name in enumerate(names)}


def _marginal(name: str, dist, z: np.ndarray) -> np.ndarray:
    """Covariate values from latent standard normals by the marginal's inverse CDF (for a normal or log-normal
    marginal, z is already truncated to its bounds: ``_truncated_normals``)."""
    if isinstance(dist, Normal):
        return dist.mean + dist.sd * z
    if isinstance(dist, LogNormal):
        return uf.exp(math.log(dist.median) + dist.sigma * z)
    if isinstance(dist, Uniform):
        return dist.low + (dist.high - dist.low) * stats.norm.cdf(z)
    if isinstance(dist, Bernoulli):
        return -z < ndtri(dist.p)  # true for the upper p of the latent scale
    keys = [_cast(name, k) for k in dist.categories]
    probs = np.array(list(dist.categories.values()))
    thresholds = ndtri(np.clip(np.cumsum(probs / probs.sum())[:-1], 0.0, 1.0))
    values = np.array(keys, dtype=np.int64 if KINDS[name].cast is int else object)
    return values[np.searchsorted(thresholds, z, side="right")]


def _included(spec: CohortSpec, cols: dict[str, np.ndarray], n: int) -> np.ndarray:
    ok = np.ones(n, dtype=bool)
    for crit in spec.inclusion:
        v = cols[crit.covariate]
        if crit.in_ is not None:
            hit = np.zeros(n, dtype=bool)
            for allowed in {_cast(crit.covariate, a) for a in crit.in_}:
                hit |= v == allowed
            ok &= hit
        else:
            if crit.min is not None:
                ok &= v >= crit.min
            if crit.max is not None:
                ok &= v <= crit.max
    return ok


def draw_cohort(spec: CohortSpec, seed: int, start: int, count: int, stream: int = 0) -> pd.DataFrame:
    """Covariates of patients start..start+count-1 (index: patient id), one column each, plus ``screen_attempts``.

    Latent z ~ N(0, R) (Cholesky of the pairwise correlations), each marginal by its inverse CDF; weight_kg is
    derived from bmi and height_m. A patient who fails the inclusion criteria is re-drawn (attempt k from
    default_rng([seed, patient, STREAM, stream, k])) until they pass, so each patient is the same in any chunk."""
    for field, value, low in (("seed", seed, 0), ("start", start, 0), ("count", count, 0), ("stream", stream, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(field, value, f"an integer >= {low}")
    if start + count > 2 ** 32:
        raise InputError("count", count, f"patient ids below 2**32 (start {start} + count)")
    names = spec.drawn
    L = np.linalg.cholesky(_correlation_matrix(spec))
    ids = np.arange(start, start + count, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    attempts = np.zeros(count, dtype=np.int64)
    pending = np.arange(count)
    attempt, batch = 0, 1
    while pending.size:
        if attempt >= MAX_ATTEMPTS:
            raise InputError("population.inclusion", [c.model_dump() for c in spec.inclusion],
                             f"criteria that patients meet within {MAX_ATTEMPTS} screening draws (patient "
                             f"{int(ids[pending[0]])} and {pending.size - 1} more never did); the criteria are "
                             "(nearly) impossible for these covariate distributions")
        # the few patients still failing try several attempts at once (attempt k is attempt k however batched);
        # each patient keeps their first passing attempt
        m = pending.size
        batch = min(batch, MAX_ATTEMPTS - attempt, max(1, -(-_BATCH_ROWS // m)))
        raw = np.concatenate([_latent_draws(int(seed), ids[pending], int(stream), attempt + b, len(names))
                              for b in range(batch)])
        # z = raw @ L.T as a fixed-order sum, not BLAS: a patient's covariates must not depend on how many rows
        # share the product (GEMM kernels treat edge rows differently)
        z = np.zeros_like(raw)
        for i in range(L.shape[0]):
            for j in range(i + 1):
                z[:, i] += raw[:, j] * L[i, j]
        cols = _marginals(spec, names, z)
        if spec.derives_weight:
            cols[DERIVED] = cols["bmi"] * cols["height_m"] ** 2
        ok = _included(spec, cols, batch * m).reshape(batch, m)
        passed = ok.any(axis=0)
        first = ok.argmax(axis=0)[passed]
        rows = first * m + np.flatnonzero(passed)
        accepted = pending[passed]
        for name, values in cols.items():
            if name not in out:
                out[name] = np.empty(count, dtype=values.dtype)
            out[name][accepted] = values[rows]
        attempts[accepted] = attempt + first + 1
        pending = pending[~passed]
        attempt += batch
        batch *= 2
    frame = pd.DataFrame({name: out.get(name, np.empty(0)) for name in spec.columns},
                         index=pd.Index(ids, name="patient"))
    frame["screen_attempts"] = attempts
    return frame


def screen_failure_fraction(cohort: pd.DataFrame) -> float:
    """Share of screening draws that failed the inclusion criteria (0 when every first draw passed)."""
    total = int(cohort["screen_attempts"].sum())
    return 0.0 if total == 0 else 1.0 - len(cohort) / total


def to_model_covariates(cohort: pd.DataFrame) -> pd.DataFrame:
    """The columns of a cohort that the model reads (mscsim.simulation.COVARIATES), ready for ``Setup.problem``.

    Continuous columns as float (NaN = not given); yes/no and category columns keep their type (bool, int, str),
    as Python objects with None where a value is missing."""
    out = {}
    for name in COVARIATES:
        if name not in cohort:
            continue
        col = cohort[name]
        kind = KINDS[name]
        if kind.kind == "continuous":
            out[name] = pd.to_numeric(col, errors="raise").astype(float)
            continue
        missing = col.isna().to_numpy()
        if not missing.any():
            dtype = {bool: bool, int: np.int64}.get(kind.cast, object)
            out[name] = col.astype(dtype) if dtype is not object else col.astype(object).map(str)
        else:
            out[name] = pd.Series([None if m else kind.cast(v) for v, m in zip(col, missing)], index=col.index,
                                  dtype=object)
    return pd.DataFrame(out, index=cohort.index)
