"""Endpoint definitions: how a disease's tissue state maps to what a trial measures, read from data files.

Each disease has ``data/endpoints/<disease>.yaml``: cited coefficients (same records as parameter files),
endpoints as expressions of the model's states and those coefficients, and responses (categorical outcomes
at a visit, such as the day-28 GVHD response). Keeping the maps as data lets a user read, cite and change them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .. import _yaml
from ..errors import DataError
from ..model.parameters import DATA_DIR, ParameterSet, load_parameter_file

ENDPOINT_DIR = DATA_DIR / "endpoints"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    """A continuous or 0/1 endpoint: an expression of states and coefficients, clipped to its range."""

    long_name: str
    units: str
    expression: str
    range: tuple[float, float] | None = None
    source: list[str] = Field(min_length=1)
    note: str = ""


class Response(_Strict):
    """A categorical response from a staged endpoint, by the usual definitions (e.g. aGVHD day 28): complete =
    stage 0; partial = lower stage than at baseline; none = same stage; progression = higher. ``stage_response``
    is judged at ``day``; ``best_stage_response`` is the best category reached at any visit up to ``day`` (best
    overall response by day 100, as GVHD trials report it).

    ``reduction_response`` (and ``best_reduction_response``) judge a continuous endpoint that should fall (e.g.
    lupus nephritis proteinuria): complete = below ``complete_below``; partial = fallen by at least
    ``partial_fall`` (a fraction of baseline) and below ``partial_below``; progression = risen by more than
    ``progression_rise`` (a fraction of baseline; 0: any rise); none otherwise."""

    kind: Literal["stage_response", "best_stage_response", "reduction_response", "best_reduction_response"]
    of: str
    day: float = Field(gt=0)
    long_name: str
    source: list[str] = Field(min_length=1)
    note: str = ""
    complete_below: float | None = None
    partial_fall: float | None = Field(default=None, gt=0, le=1)
    partial_below: float | None = None
    progression_rise: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _thresholds(self):
        given = [x is not None for x in (self.complete_below, self.partial_fall, self.partial_below)]
        if self.kind.endswith("reduction_response") and not all(given):
            raise ValueError(f"a {self.kind} needs complete_below, partial_fall and partial_below")
        if self.kind.endswith("stage_response") and any(given):
            raise ValueError(f"complete_below, partial_fall and partial_below are for reduction responses, "
                             f"not a {self.kind}")
        return self


class Enrolled(_Strict):
    """The untreated patient as trials of the disease enrol them: an endpoint's value at baseline lies in
    [low, high]. A parameter set drawn from the priors whose reference patient falls outside does not describe
    the disease and is rejected when bands are drawn (rejection on an observation, as in ABC)."""

    low: float
    high: float
    source: list[str] = Field(min_length=1)
    note: str = ""

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


class EndpointFile(_Strict):
    disease: str
    description: str = ""
    visits_days: list[float] = Field(min_length=1)
    parameters: dict = Field(default_factory=dict)
    endpoints: dict[str, Endpoint]
    responses: dict[str, Response] = Field(default_factory=dict)
    plot: list[str] = Field(default_factory=list, description="endpoints drawn in the report's endpoint panel")
    enrolled: dict[str, Enrolled] = Field(default_factory=dict, description="baseline windows of the untreated "
                                          "patient as trials enrol them (condition parameter draws)")


class EndpointSet:
    """A disease's endpoints with their coefficients (a ParameterSet, so they are cited like any parameter)."""

    def __init__(self, spec: EndpointFile, coefficients: ParameterSet, path: Path):
        self.spec, self.coefficients, self.path = spec, coefficients, path

    @property
    def disease(self) -> str:
        return self.spec.disease

    def citation_keys(self) -> list[str]:
        keys = list(self.coefficients.citations())
        for item in [*self.spec.endpoints.values(), *self.spec.responses.values(), *self.spec.enrolled.values()]:
            keys += item.source
        return list(dict.fromkeys(keys))


@lru_cache(maxsize=None)
def load_endpoints(disease: str) -> EndpointSet:
    """The bundled endpoint definitions for a disease (``data/endpoints/<disease>.yaml``)."""
    path = ENDPOINT_DIR / f"{disease}.yaml"
    if not path.exists():
        raise DataError(f"no endpoint definitions for disease '{disease}' (expected {path})")
    try:
        raw = _yaml.safe_load(path.read_text()) or {}
        spec = EndpointFile.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise DataError(f"{path}: invalid endpoint file: {exc}") from exc
    if spec.disease != disease:
        raise DataError(f"{path}: 'disease' is {spec.disease!r}, expected {disease!r}")
    for name in spec.enrolled:
        if name not in spec.endpoints:
            raise DataError(f"{path}: 'enrolled' names unknown endpoint '{name}'")
    for name, resp in spec.responses.items():
        if resp.of not in spec.endpoints:
            raise DataError(f"{path}: response '{name}' refers to unknown endpoint '{resp.of}'")
    return EndpointSet(spec, load_parameter_file(path), path)
