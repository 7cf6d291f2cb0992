"""Errors that mscsim reports to its users: each names the field (or file), the bad value and what is allowed."""

from __future__ import annotations


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
        super().__init__(f"{prefix}field '{where}': got {value!r}; allowed: {allowed}")


class ConservationError(MscsimError):
    """Cells were created or lost by the numerics: viable + debris + cleared != administered."""


class DataError(MscsimError):
    """A bundled or user-supplied data file (parameters, references, mechanisms) is inconsistent."""
