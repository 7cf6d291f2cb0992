"""The input boundary: user files read defensively, and pydantic validation errors as mscsim InputErrors that
name the file, the field, the value and what is allowed.

Every user file (scenario, design, cohort, co-culture preset, lot, spec) is read by :func:`read_yaml`: at most
``MAX_FILE_BYTES``, UTF-8 only, nesting at most ``MAX_DEPTH`` deep, at most ``MAX_ALIASES`` aliases, no duplicate
keys and no integer beyond 64 bits. Each of these is an InputError naming the file (exit status 2), never a
``UnicodeDecodeError``, ``RecursionError`` or Python's int-conversion ``ValueError`` from deep inside PyYAML.
"""

from __future__ import annotations

import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .._schema import FieldProblem
from ..errors import InputError

MAX_FILE_BYTES = 5 * 1024 * 1024  # the largest bundled input is ~10 kB; a lot record with notes a few kB
MAX_DEPTH = 32  # nesting of mappings/lists; the deepest bundled input nests 5 levels
MAX_ALIASES = 100  # YAML aliases (*name); each may stand for a whole subtree, so they are capped
MAX_INT = 2 ** 63  # integers in input files must fit in 64 bits; larger numbers are written as floats (1.0e+20)


class _Problem(yaml.YAMLError):
    """A limit of the safe loader was exceeded (reported like a YAML syntax error, with its position)."""

    def __init__(self, message: str, mark=None):
        super().__init__(message)
        self.message, self.mark = message, mark

    def __str__(self):
        where = f" (line {self.mark.line + 1}, column {self.mark.column + 1})" if self.mark is not None else ""
        return self.message + where


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth limit (its composer is recursive), an alias budget, duplicate keys refused
    and integers limited to 64 bits. Written as a subclass because PyYAML has no options for these."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Problem(f"more than {MAX_ALIASES} aliases (*name)", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Problem(f"nesting deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = (key_node.tag, key_node.value)
                    if key in seen:
                        raise _Problem(f"the key {key_node.value!r} appears twice in one mapping (first at line "
                                       f"{seen[key].line + 1}); which value is meant is ambiguous",
                                       key_node.start_mark)
                    seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > 25:
            raise _Problem(f"an integer with {digits} digits; integers must fit in 64 bits", node.start_mark)
        value = super().construct_yaml_int(node)
        if abs(value) >= MAX_INT:
            raise _Problem(f"the integer {value} does not fit in 64 bits; write large numbers as floats "
                           "(e.g. 1.0e+20)", node.start_mark)
        return value


_SafeLoader.add_constructor("tag:yaml.org,2002:int", _SafeLoader.construct_yaml_int)


def exists(path: str | Path) -> bool:
    """Whether a user-given path names an existing file or folder; a name the system cannot even look up (too long,
    a NUL byte) is simply not there, so the caller's own error (which names the file and field) is the one shown."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def parse_yaml(text: str, *, file: str):
    """Parse YAML text with the safe loader's limits; any problem is an InputError naming ``file``."""
    try:
        loader = _SafeLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise InputError("(file)", file, f"valid YAML ({_one_line(exc)})", file=file) from None
    except RecursionError:  # a limit above should prevent it; never a traceback if not
        raise InputError("(file)", file, f"YAML nested less than {MAX_DEPTH} levels deep", file=file) from None


def read_yaml(path: Path):
    """A user's YAML file, parsed; any problem (unreadable, too large, not UTF-8, bad syntax, a limit) is an
    InputError naming the file (exit status 2, not a traceback)."""
    path = Path(path)
    file = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError("(file)", f"{size} bytes", f"a YAML file of at most {MAX_FILE_BYTES} bytes", file=file)
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError("(file)", file, f"a readable file ({exc.strerror or exc})", file=file) from None
    if len(raw) > MAX_FILE_BYTES:
        raise InputError("(file)", f"{len(raw)} bytes", f"a YAML file of at most {MAX_FILE_BYTES} bytes", file=file)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError("(file)", file, f"UTF-8 text; byte 0x{raw[exc.start]:02x} at offset {exc.start} (line "
                         f"{line}) is not UTF-8 (save the file as UTF-8)", file=file) from None
    return parse_yaml(text, file=file)


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
    found = next((e for e in errors if isinstance((e.get("ctx") or {}).get("error"), FieldProblem)), None)
    if found is not None:
        problem = found["ctx"]["error"]
        where = ".".join([*(str(x) for x in found["loc"]), problem.where])
        return InputError(where, problem.value, problem.allowed, file=file)
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
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "finite_number":
        msg = "a finite number (not NaN or infinity)"
    return InputError(loc, value, msg + more, file=file)
