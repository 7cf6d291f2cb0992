"""A compiled model as the solvers use it: names, units, stoichiometry and the generated code, without SymPy.

:mod:`mscsim.model.compile` makes one from a :class:`Model` (with SymPy); :mod:`mscsim.model.cache` reads one back
from disk. Kept apart from the compiler so a process whose model is cached never imports SymPy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import DataError
from .core import CELL_KINDS, Model
from .parameters import ParameterSet
from .units import convert


@dataclass(frozen=True, eq=False)
class CompiledModel:
    """What the solvers need: names, units, stoichiometry and generated rate/Jacobian functions.

    ``key`` identifies the composition (a hash of the mechanisms' content and the mscsim version): the on-disk
    cache and the compiled engine's machine code are filed under it."""

    model: Model
    state_names: tuple[str, ...]
    state_units: tuple[str, ...]
    param_names: tuple[str, ...]
    param_units: tuple[str, ...]
    process_names: tuple[str, ...]
    stoichiometry: np.ndarray  # (states, processes)
    jac_rows: np.ndarray  # structural non-zeros of the Jacobian d f_row / d x_col, in jac_values order
    jac_cols: np.ndarray
    rate_text: tuple[str, ...]  # each process's rate law with every expression substituted (SymPy srepr)
    source: str  # array code: rates, jac_values, rhs (xp, x, p) and their batch-last forms
    scalar_source: str  # rhs_w(x, p, f) and jac_w(x, p, jv): W patients side by side, scalar code for Numba
    key: str
    linear: bool = False  # no Jacobian entry depends on a state: dx/dt = A(p) x + u, solved exactly (solvers.linear)

    @cached_property
    def _namespace(self) -> dict:
        ns: dict = {}
        exec(compile(self.source, f"<mscsim compiled model {self.key[:12]}>", "exec"), ns)  # noqa: S102 - our codegen
        return ns

    @cached_property
    def rate_exprs(self) -> tuple:
        """The rate laws as SymPy expressions (for SBML export), rebuilt from their srepr on first use."""
        import sympy as sp

        ns = {name: getattr(sp, name) for name in dir(sp) if not name.startswith("_")}
        return tuple(eval(t, ns) for t in self.rate_text)  # noqa: S307 - srepr written by compile_model

    @cached_property
    def cell_mask(self) -> np.ndarray:
        kinds = {s.name: s.kind for s in self.model.states}
        return np.array([kinds[n] in CELL_KINDS for n in self.state_names])

    @cached_property
    def label_mask(self) -> np.ndarray:
        """States of an imaging label (``mscsim.model.labels``; all False without one)."""
        from .labels import LABEL_MECHANISM

        names = {s.name for m in self.model.mechanisms if m.name == LABEL_MECHANISM for s in m.states}
        return np.array([n in names for n in self.state_names], dtype=bool)

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    def index(self, name: str) -> int:
        try:
            return self.state_names.index(name)
        except ValueError:
            raise DataError(f"no state '{name}'; states are {list(self.state_names)}") from None

    def param_index(self, name: str) -> int:
        try:
            return self.param_names.index(name)
        except ValueError:
            raise DataError(f"no parameter '{name}' in the compiled model") from None

    def rates(self, x: np.ndarray, p: np.ndarray, xp=np) -> np.ndarray:
        return self._namespace["rates"](xp, x, p)

    def rhs(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """dx/dt for a batch: (B, n) states, (B, m) parameters -> (B, n).

        Generated as straight-line code (no BLAS matmul) so each patient's arithmetic is the same whatever
        the batch size: results must not depend on chunking.
        """
        return self._namespace["rhs"](np, x, p)

    def jac_values(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """The Jacobian's structural non-zeros (``jac_rows``, ``jac_cols``) for a batch: (B, nnz)."""
        return self._namespace["jac_values"](np, x, p)

    def rhs_bl(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``rhs`` on batch-last arrays: (n, B) states, (m, B) parameters -> (n, B); the same arithmetic."""
        return self._namespace["rhs_bl"](np, x, p)

    def jac_values_bl(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``jac_values`` on batch-last arrays: (n, B) states, (m, B) parameters -> (nnz, B)."""
        return self._namespace["jac_values_bl"](np, x, p)

    def jac(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Analytic Jacobian d(dx/dt)/dx for a batch: (B, n, n)."""
        vals = self.jac_values(x, p)
        J = np.zeros((x.shape[0], self.n_states, self.n_states))
        if len(self.jac_rows):
            J[:, self.jac_rows, self.jac_cols] = vals
        return J

    def initial_signals(self, params: np.ndarray) -> np.ndarray:
        """Start values of every state for a parameter batch (B, m): cells 0, signals their declared initial
        parameter (or 0)."""
        x0 = np.zeros((params.shape[0], self.n_states))
        for i, s in enumerate(self.model.states):
            if s.initial is not None:
                x0[:, i] = params[:, self.param_index(s.initial)]
        return x0

    @cached_property
    def held_mask(self) -> np.ndarray:
        """States held at their start values while a patient's untreated chronic state is found (``baseline: held``
        in the mechanism files: covariates such as structural loss, and running totals)."""
        return np.array([s.baseline == "held" for s in self.model.states])

    @cached_property
    def chronic_hold_mask(self) -> np.ndarray:
        """States kept fixed while the untreated chronic state is found: those declared held, the cells (none yet),
        and states no enabled process touches (constant anyway; a switched-off mechanism's mediators would
        otherwise make the Newton matrix singular)."""
        return self.held_mask | self.cell_mask | ~np.abs(self.stoichiometry).any(axis=1)

    @cached_property
    def signed_mask(self) -> np.ndarray:
        """States that may go below zero (``signed: true``: a running total of a net rate, such as net T-cell
        proliferation, which crowding past capacity makes negative); the positivity check skips them."""
        return np.array([s.signed for s in self.model.states])

    @cached_property
    def signal_scale(self) -> np.ndarray:
        """Typical magnitude of each state (cells: 0, filled with the dose at solve time; signals: declared)."""
        return np.array([0.0 if c else s.scale for c, s in zip(self.cell_mask, self.model.states)])

    def parameter_vector(self, pset: ParameterSet) -> np.ndarray:
        """Nominal parameter values in the model's internal units, in ``param_names`` order."""
        return np.array([convert(pset[n].value, pset[n].units, u, what=f"parameter '{n}'")
                         for n, u in zip(self.param_names, self.param_units)])


def model_key(model: Model) -> str:
    """A content hash of a composition: every mechanism's states, symbols, expressions and processes, which are
    switched on, the code generator's format and the mscsim version."""
    from .. import __version__

    # the mechanisms' reprs (tuples and dicts in file order) and the enabled set sorted: a frozenset's repr follows
    # string hashing, which differs between processes
    text = f"{CODEGEN_FORMAT}\n{__version__}\n{model.mechanisms!r}\n{sorted(model.enabled)!r}"
    return hashlib.sha256(text.encode()).hexdigest()


CODEGEN_FORMAT = "mscsim-codegen-5"  # bump when the generated code changes shape
