"""Optional parts of mscsim (SBML export, Dask clusters, the docs): a missing one is a clear error that names the
extra to install, raised when the part is used, never at import time of mscsim itself."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from .errors import MscsimError


class MissingExtraError(MscsimError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError: '<purpose> needs <module>: pip install "mscsim[<extra>]"'."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{purpose} needs the Python package '{module}', which is not installed "
                                f"({exc}); install it with: pip install 'mscsim[{extra}]'") from None
