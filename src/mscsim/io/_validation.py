"""Pydantic validation errors as mscsim InputErrors that name the field, the value and what is allowed."""

from __future__ import annotations

import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import InputError


def _submodel(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation: X, X | None, list[X], dict[str, X]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def input_error(exc: ValidationError, file: str | None, root: type[BaseModel]) -> InputError:
    """The most telling validation problem (a misspelt field explains most) as an InputError."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] | None = root
        for part in err["loc"][:-1]:
            if model is None:
                break
            if isinstance(part, int) or str(part) not in model.model_fields:
                continue  # a list index or a dict key: stay on the item model
            model = _submodel(model.model_fields[str(part)].annotation)
        allowed = f"known fields: {sorted(model.model_fields)}" if model else "no extra fields"
        return InputError(loc, err["input"], f"{allowed} (unknown field){more}", file=file)
    value = err.get("input")
    if isinstance(value, dict):
        value = {k: v for k, v in list(value.items())[:6]}
    return InputError(loc, value, err["msg"].removeprefix("Value error, ") + more, file=file)


def read_yaml(path: Path):
    """A user's YAML file, parsed; a syntax error is an InputError naming the file (exit status 2, not a traceback)."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise InputError("(file)", str(path), f"valid YAML ({exc})", file=str(path)) from None
