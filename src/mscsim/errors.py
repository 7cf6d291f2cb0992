"""Errors that mscsim reports to its users: each names the field (or file), the bad value and what is allowed."""

from __future__ import annotations

import reprlib

_REPR = reprlib.Repr()
_REPR.maxstring = 120
_REPR.maxother = 120
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3
_REPR.maxlong = 60


def short_repr(value: object) -> str:
    """``repr(value)`` cut to a readable length without walking all of it (a hostile file may hold a huge or
    deeply nested value; reprlib stops early); always one line."""
    return _REPR.repr(value).replace("\n", "\\n")


class MscsimError(Exception):
    """Base class of every error mscsim reports to a user; the CLI prints it and exits with status 2."""


class InputError(MscsimError):
    """A scenario, lot, design or data file holds a value that is not allowed.

    The message always names where (file and field), what was found and what is allowed.
    """

    def __init__(self, where: str, value: object, allowed: str, *, file: str | None = None):
        self.where = where
        self.value = value
        self.allowed = allowed
        self.file = file
        prefix = f"{file}: " if file else ""
        text = " ".join(str(allowed).split())  # one line, whatever the message was built from
        super().__init__(f"{prefix}field '{where}': got {short_repr(value)}; allowed: {text}")

    def __reduce__(self):
        # worker processes send errors back pickled; the default would call InputError(message) and fail
        return (_rebuild_input_error, (self.where, self.value, self.allowed, self.file))

    def with_file(self, file: str | None, where: str | None = None) -> "InputError":
        """The same problem, naming the file (and optionally a fuller field path) it was found in."""
        return InputError(self.where if where is None else where, self.value, self.allowed,
                          file=self.file or file)


def _rebuild_input_error(where, value, allowed, file):
    return InputError(where, value, allowed, file=file)


class ConservationError(MscsimError):
    """Cells were created or lost by the numerics: viable + debris + cleared != administered."""


class PositivityError(MscsimError):
    """A state went negative (or non-finite) beyond round-off: the numbers cannot be trusted."""


class DataError(MscsimError):
    """A bundled or user-supplied data file (parameters, references, mechanisms) is inconsistent."""
