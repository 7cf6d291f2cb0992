"""The base of every input schema (scenario, design, cohort, co-culture, lot, spec, overrides): a YAML boolean is
not a number. Pydantic's lax mode reads ``true`` as 1 in a number field (``times_days: [true]`` was a dose at day 1,
``weight_kg: yes`` a 1 kg patient); strict mode would refuse it but also refuse the strings that enum fields take
from YAML, so this one rule is added to lax mode instead."""

from __future__ import annotations

import typing

from pydantic import BaseModel, model_validator


class FieldProblem(ValueError):
    """A cross-field check that failed, with the field it is about (reported as that field, not the model's)."""

    def __init__(self, where: str, value: object, allowed: str):
        super().__init__(f"{where}: got {value!r}; allowed: {allowed}")
        self.where, self.value, self.allowed = where, value, allowed


def _leaves(annotation) -> set:
    """The plain types an annotation admits: X, X | None, list[X], dict[str, X], Annotated[X, ...]."""
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    if typing.get_origin(annotation) is typing.Literal:
        return {type(a) for a in args}
    if typing.get_origin(annotation) is typing.Annotated:
        return _leaves(args[0])
    found = set()
    for arg in args:
        found |= _leaves(arg)
    return found


def _booleans(value) -> bool:
    """Whether ``value`` is a boolean, or a list or mapping holding one directly."""
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, bool) for v in value)
    if isinstance(value, dict):
        return any(isinstance(v, bool) for v in value.values())
    return False


class NumbersNotBooleans(BaseModel):
    """Refuses ``true``/``false`` (and YAML's yes/no/on/off) where a field takes numbers and not booleans. A model
    validator rather than a field validator on every field, which pydantic refuses on discriminator fields."""

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data):
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            key = name if name in data else field.alias
            if key is None or key not in data or not _booleans(data[key]):
                continue
            leaves = _leaves(field.annotation)
            if bool not in leaves and leaves & {int, float}:
                raise FieldProblem(key, data[key], "a number (true/false, yes/no and on/off are booleans in YAML, "
                                                   "not numbers)")
        return data
