"""The compiled engine: a Rosenbrock method (RODAS5P by default, or RODAS4) per patient in machine code (Numba),
generated from the compiled model.

For one :class:`~mscsim.model.compile.CompiledModel`, a Python module is generated and compiled with Numba: the
model's own ``rhs_w``/``jac_w`` (scalar code from the same SymPy expressions as the NumPy and JAX paths), the
sparse elimination plan of its W matrix (``factor_w``, ``solve_w``, from
:class:`~mscsim.solvers._linalg.SparsePattern`), the method's tableau (:mod:`~mscsim.solvers._rosenbrock`) and the
model-independent step and steady-state loops of ``_kernel_template.py``. The module file and Numba's machine-code
cache live in the model's on-disk cache entry (:mod:`mscsim.model.cache`), so only the first process to use a
composition (and method) pays for compilation.

Patients run ``LANES`` side by side (each with its own step, accepted or rejected on its own; a lane whose patient
has finished takes the next), so the compiler can use SIMD across patients; slices of patients run on
``numba.get_num_threads()`` Python threads (the kernels release the GIL). Every patient's arithmetic is its own,
element by element, with IEEE semantics (no fast-math), so results are bit-identical whatever the chunking,
slicing, lane or thread count (tested).

A patient whose solve fails (too many steps, a step too small to advance time) is reported by index with the
reason, and the other patients' results are kept (:class:`SolveFailure`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from ..errors import MscsimError
from ..model.cache import entry_dir, write_file_atomically
from ..model.compiled import CompiledModel
from ._rosenbrock import DEFAULT, tableau
from ._driver import run_segments
from ._linalg import H_MARGIN, SparsePattern
from .problem import SIGNAL_ATOL, Problem

# patients side by side in one kernel call: 8 was 10 % faster per knee-OA patient than 4 (and 16) on the AVX2
# development machine; any value gives the same numbers
LANES = int(os.environ.get("MSCSIM_LANES", "8"))
KERNEL_FORMAT = "mscsim-kernels-7"  # bump when the template or the generated kernels change shape
STATUS = {0: "ok", 1: "too many steps (the model may be unstable for this patient's parameters)",
          2: "step size too small to advance time (a singularity or a non-finite value)"}
SS_STATUS = {0: "stable steady state", 1: "no steady state found by pseudo-transient continuation",
             2: "steady state found but not proven stable", 3: "non-finite values"}


class SolveFailure(MscsimError):
    """Some patients' solves failed; ``status`` (per patient, 0 = ok) says which and why (``STATUS``); the other
    patients' results are in ``states`` (failed patients' rows are NaN after the failure)."""

    def __init__(self, status: np.ndarray, states: np.ndarray, first_patient: int = 0):
        self.status = status
        self.states = states
        failed = np.nonzero(status)[0]
        shown = ", ".join(f"patient {first_patient + i}: {STATUS.get(int(status[i]), status[i])}" for i in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"the solver failed for {len(failed)} of {len(status)} patients: {shown}{more}")


def solve_compiled(problem: Problem, *, rtol: float = 1e-8, atol_factor: float = 1e-13, max_steps: int = 200_000,
                   failures: str = "raise", method: str = DEFAULT, signal_atol: float = SIGNAL_ATOL) -> np.ndarray:
    """Integrate all patients with the compiled engine; returns states at ``t_eval``, (patients, times, states).
    ``method``: the Rosenbrock method (``rodas5p`` or ``rodas4``, :mod:`mscsim.solvers._rosenbrock`);
    ``signal_atol``: signal states' absolute tolerance relative to their typical magnitude (a reference solution
    tracks small signals with a smaller one).

    ``problem.hold`` states stay at their start values. ``max_steps`` caps the attempted steps of a patient in one
    segment. When some patients fail: ``failures="raise"`` raises :class:`SolveFailure` (which
    carries the others' results), ``"nan"`` returns with the failed patients' rows NaN from the failure on.
    """
    model = problem.model
    kern = kernels(model, method)
    B, n = problem.n_patients, model.n_states
    t_eval = np.asarray(problem.t_eval, dtype=float)
    atol = np.ascontiguousarray(problem.atol(atol_factor, signal_atol))
    P = np.ascontiguousarray(problem.params, dtype=float)
    hold = problem.held()
    status = np.zeros(B, dtype=np.int64)
    nsteps = np.zeros(B, dtype=np.int64)

    def integrate(y, h_prev, seg, u, stops, out):
        y = np.ascontiguousarray(y, dtype=float)
        H = np.where(np.isnan(h_prev), 0.0, h_prev).astype(float)
        U = np.ascontiguousarray(np.broadcast_to(u, (B, n)), dtype=float)
        stops = np.ascontiguousarray(stops, dtype=float)
        _in_slices(kern.integrate_slice, B, y, H, P, U, atol, hold, float(seg.t0), stops, stops.shape[0],
                   _stop_columns(t_eval, seg.out_idx, stops), out, float(rtol), int(max_steps), status, nsteps)
        return y, H

    out = run_segments(problem, integrate)
    if status.any():
        out[status != 0] = np.nan
        if failures == "raise":
            raise SolveFailure(status, out)
    solve_compiled.last_status, solve_compiled.last_steps = status, nsteps
    return out


def _slice_len(B: int, threads: int) -> int:
    """Patients per slice: enough slices for every thread to have several (load balance), each a few lanes deep.
    Any value gives the same numbers."""
    return int(max(LANES, min(256, -(-B // (4 * threads)))))


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (process id, threads) -> pool: none survives a fork


def _in_slices(kernel, B: int, *args) -> None:
    """``kernel(lo, hi, *args)`` for slices of the B patients, on ``numba.get_num_threads()`` threads (one: in this
    thread). The kernels release the GIL, so Python threads run them in parallel; a Numba ``prange`` over the slices
    did the same but its parallel compilation took ~16 s of the ~48 s first call of the knee-OA kernels."""
    import numba

    threads = max(1, numba.get_num_threads())
    size = _slice_len(B, threads)
    bounds = [(lo, min(B, lo + size)) for lo in range(0, B, size)]
    if threads == 1 or len(bounds) < 2:
        for lo, hi in bounds:
            kernel(lo, hi, *args)
        return
    key = (os.getpid(), threads)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mscsim-kernel")
    done = [_POOLS[key].submit(kernel, lo, hi, *args) for lo, hi in bounds]
    wait(done)  # every slice finishes before its arrays are read, even when one fails
    for future in done:
        future.result()


def _stop_columns(t_eval: np.ndarray, out_idx: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """For each stop, the output columns recorded there (a time asked for twice has two), -1 padded."""
    cols = [out_idx[t_eval[out_idx] == s] for s in stops]
    width = max(1, max((len(c) for c in cols), default=1))
    table = np.full((len(stops), width), -1, dtype=np.int64)
    for s, c in enumerate(cols):
        table[s, :len(c)] = c
    return table


@dataclass(frozen=True)
class SteadyState:
    """Each patient's untreated steady state (``x``, patients x states), its status (``SS_STATUS``; 0 = a stable
    steady state) and the pseudo-transient iterations it took."""

    x: np.ndarray
    status: np.ndarray
    iterations: np.ndarray


def steady_state(model: CompiledModel, params: np.ndarray, x0: np.ndarray, atol: np.ndarray, hold: np.ndarray, *,
                 tol: float = 1e-10, max_iter: int = 400, h0: float = 1.0, method: str = DEFAULT) -> SteadyState:
    """Solve f(x) = 0 for every patient from ``x0`` with held states fixed (cells at 0), by pseudo-transient
    continuation with the analytic Jacobian, then check stability: W = -J an H-matrix with a positive diagonal
    proves it; otherwise the eigenvalues of the free block of J are computed (LAPACK) and must have negative real
    parts. ``h0`` (hours) is the first pseudo-time step. The search is the same in every integrator's kernel
    module; ``method`` picks the module the run integrates with, so a run compiles one module, not two."""
    kern = kernels(model, method)
    X = np.array(x0, dtype=float, order="C")
    P = np.ascontiguousarray(params, dtype=float)
    status = np.zeros(X.shape[0], dtype=np.int64)
    iters = np.zeros(X.shape[0], dtype=np.int64)
    hold = np.asarray(hold, dtype=np.bool_)
    _in_slices(kern.steady_slice, X.shape[0], X, P, np.ascontiguousarray(atol, dtype=float), hold, float(h0),
               float(tol), int(max_iter), status, iters)
    check = np.nonzero(status == 2)[0]
    if check.size:
        free = ~hold
        J = model.jac(X[check], P[check])[:, free][:, :, free]
        stable = np.linalg.eigvals(J).real.max(axis=1) < 0.0
        status[check[stable]] = 0
    bad = ~np.all(np.isfinite(X), axis=1)
    status[bad] = 3
    return SteadyState(X, status, iters)


# --- the generated module ----------------------------------------------------------------------------------------

_LOADED: dict[str, ModuleType] = {}
_BY_MODEL: dict[tuple[str, int, str], ModuleType] = {}  # (model key, lanes, method) -> module, found without
# regenerating its source


def kernels(model: CompiledModel, method: str = DEFAULT) -> ModuleType:
    """The compiled engine's module for a model: generated, written to the model's cache entry and imported once
    per process (Numba then compiles it, or loads its machine code from the cache beside it). Found again by the
    model's key (the hash of its mechanism files, composition and version): generating the source takes ~15 ms,
    which a trial's every chunk would otherwise pay twice. Each ``method`` (Rosenbrock tableau) is its own module.
    The steady-state search does not depend on the method."""
    key = (model.key, LANES, method)
    known = _BY_MODEL.get(key)
    if known is not None:
        return known
    source = kernel_source(model, method=method)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    if digest in _LOADED:
        _BY_MODEL[key] = _LOADED[digest]
        return _LOADED[digest]
    name = f"mscsim_kernels_{digest}"
    where = entry_dir(model.key)
    path = None if where is None else where / f"{name}.py"
    if path is None or not (path.exists() and path.read_text(encoding="utf-8") == source):
        if path is None or not write_file_atomically(path, source):
            # no writable cache: a private folder for this process (Numba still caches beside it, for nothing)
            path = Path(tempfile.mkdtemp(prefix="mscsim-kernels-")) / f"{name}.py"
            path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _LOADED[digest] = module
    _BY_MODEL[key] = module
    return module


def kernel_source(model: CompiledModel, lanes: int | None = None, method: str = DEFAULT) -> str:
    """The whole module for one model and method: constants and the tableau, the model's functions, the W
    elimination, the template's loops."""
    lanes = LANES if lanes is None else lanes
    n = model.n_states
    pattern = SparsePattern(n, model.jac_rows, model.jac_cols)
    template = (Path(__file__).with_name("_kernel_template.py")).read_text(encoding="utf-8")
    body = template.split('"""', 2)[2]  # the template's code, after its docstring
    tab = tableau(method)
    S = tab.stages
    A = np.zeros((S + 1, S + 1))  # row s of A is read for the explicit stages only
    C = np.zeros((S + 1, S + 1))
    HD = np.zeros((len(tab.H), tab.dense_stages + 1))
    for (i, j), v in tab.A.items():
        A[i, j] = v
    for (i, j), v in tab.C.items():
        C[i, j] = v
    for r, row in enumerate(tab.H):
        for j, v in row.items():
            HD[r, j] = v

    def arr(a, dtype):
        return f"np.array({np.asarray(a).tolist()!r}, dtype=np.{dtype})"

    header = [
        f'"""Generated by mscsim ({KERNEL_FORMAT}) for model {model.key[:16]}: do not edit."""',
        "import math", "import numpy as np", "from numba import njit",
        "OPTS = dict(cache=True, nogil=True, error_model='numpy', boundscheck=False)",
        f"N = {n}", f"M = {len(model.param_names)}", f"NNZ = {len(model.jac_rows)}", f"NSLOTS = {pattern.n_slots}",
        f"W = {lanes}",
        f"JROW = {arr(model.jac_rows if len(model.jac_rows) else [0], 'int64')}",
        f"JCOL = {arr(model.jac_cols if len(model.jac_cols) else [0], 'int64')}",
        f"# {tab.name}: {tab.reference}",
        f"GAMMA = {tab.gamma!r}", f"ORDER_EMBEDDED = {tab.order_embedded}", f"S = {S}", f"EXPLICIT = {tab.explicit}",
        f"ND = {len(tab.H)}", f"HJ = {tab.dense_stages}",
        f"A = {arr(A, 'float64')}", f"C = {arr(C, 'float64')}", f"HD = {arr(HD, 'float64')}",
    ]
    model_src = model.scalar_source.replace("def rhs_w", "@njit(**OPTS)\ndef rhs_w").replace(
        "def jac_w", "@njit(**OPTS)\ndef jac_w")
    elim = _elimination_tables(pattern, lanes)
    return "\n".join(header) + "\n\n\n" + model_src + "\n\n" + elim + "\n" + body


def _elimination_tables(pattern: SparsePattern, lanes: int) -> str:
    """The W = diag(dsh) - J elimination for ``lanes`` patients side by side, as loops over the pattern's plan held
    in constant tables (measured on the tissue model: faster than the plan unrolled into straight-line code, which
    also took minutes of LLVM time to compile):

    - ``fill_w(jv, dsh, lu)``: W on the compact store (structural non-zeros and fill-in);
    - ``comparison_w(lu, cm)``: W's comparison matrix (|w_ii| on the diagonal, -|w_ij| off it);
    - ``plan_w(a)``: the elimination plan on one matrix, in place (LU without pivoting);
    - ``pivots_positive_w(cm, dg, ok)``: the full test: every comparison pivot positive (a Z-matrix is a nonsingular
      M-matrix iff so), as :class:`~mscsim.solvers._linalg.SparseBatchedSolver` does;
    - ``solve_w(lu, b)``: forward and backward substitution in place, row by row in elimination order (each row's
      entries accumulated per lane, one store per row).

    Each plan step is written out for the lanes with every load before the stores (the compiler cannot prove that
    rows of one array do not alias)."""
    entry = {int(s): k for k, s in enumerate(pattern.entry_slots)}
    diag_of = {int(s): i for i, s in enumerate(pattern.diag_slots)}
    init = np.array([[entry.get(s, -1), diag_of.get(s, -1)] for s in range(pattern.n_slots)], dtype=np.int64)
    ops = np.array([(a, b, -1 if c is None else c) for a, b, c in pattern.factor_ops] or [(0, 0, -2)], dtype=np.int64)
    # row-oriented substitution: rows in elimination order, each with its L (or U) entries (slot, column state)
    fwd = [[(s, k) for (i2, k, s) in pattern.lower if i2 == i] for i in pattern.order]
    bwd = [[(s, j) for (i2, j, s) in pattern.backward if i2 == i] for i in reversed(pattern.order)]
    udiag = [int(pattern.slot[(i, i)]) for i in reversed(pattern.order)]
    fptr = np.cumsum([0] + [len(r) for r in fwd]).astype(np.int64)
    fent = np.array([e for r in fwd for e in r] or [(0, 0)], dtype=np.int64)
    bptr = np.cumsum([0] + [len(r) for r in bwd]).astype(np.int64)
    bent = np.array([e for r in bwd for e in r] or [(0, 0)], dtype=np.int64)
    L = range(lanes)

    def arr(a):
        return f"np.array({a.tolist()!r}, dtype=np.int64)"

    def lanes_of(template, indent):
        """One statement per lane, loads first: ``template`` gives (loads, stores) for lane l."""
        loads, stores = [], []
        for l in L:
            ld, st = template(l)
            loads += ld
            stores += st
        return "\n".join(indent + x for x in loads + stores)

    pad = " " * 12
    upd = lanes_of(lambda l: ([f"a{l} = a[i, {l}]", f"b{l} = a[j, {l}]", f"c{l} = a[k, {l}]"],
                              [f"a[i, {l}] = a{l} - b{l} * c{l}"]), pad)
    dvd = lanes_of(lambda l: ([f"a{l} = a[i, {l}]", f"b{l} = a[j, {l}]"], [f"a[i, {l}] = a{l} / b{l}"]), pad)
    pad8 = " " * 8
    acc_load = "\n".join(f"{pad8}a{l} = b[i, {l}]" for l in L)
    acc_sub = "\n".join(f"{pad}a{l} -= lu[s, {l}] * b[k, {l}]" for l in L)
    acc_store = "\n".join(f"{pad8}b[i, {l}] = a{l}" for l in L)
    acc_store_div = "\n".join(f"{pad8}b[i, {l}] = a{l} / lu[d, {l}]" for l in L)
    return f"""INIT = {arr(init)}
OPS = {arr(ops)}
DIAG = {arr(np.asarray(pattern.diag_slots, dtype=np.int64))}
FORDER = {arr(np.asarray(pattern.order, dtype=np.int64))}
BORDER = {arr(np.asarray(pattern.order[::-1], dtype=np.int64))}
FPTR = {arr(fptr)}
FENT = {arr(fent)}
BPTR = {arr(bptr)}
BENT = {arr(bent)}
UDIAG = {arr(np.asarray(udiag, dtype=np.int64))}
H_MARGIN = {H_MARGIN!r}


@njit(**OPTS)
def fill_w(jv, dsh, lu):
    for s in range(NSLOTS):
        e = INIT[s, 0]
        d = INIT[s, 1]
        for l in range(W):
            v = -jv[e, l] if e >= 0 else 0.0
            if d >= 0:
                v = v + dsh[d, l] if e >= 0 else dsh[d, l]
            lu[s, l] = v


@njit(**OPTS)
def comparison_w(lu, cm, dg):
    for s in range(NSLOTS):
        d = INIT[s, 1]
        for l in range(W):
            cm[s, l] = abs(lu[s, l]) if d >= 0 else -abs(lu[s, l])
    for i in range(N):
        for l in range(W):
            dg[i, l] = cm[DIAG[i], l]


@njit(**OPTS)
def plan_w(a):
    for q in range(OPS.shape[0]):
        i = OPS[q, 0]
        j = OPS[q, 1]
        k = OPS[q, 2]
        if k >= 0:
{upd}
        elif k == -1:
{dvd}


@njit(**OPTS)
def pivots_positive_w(cm, dg, ok):
    for l in range(W):
        good = True
        for i in range(N):
            if not cm[DIAG[i], l] > H_MARGIN * dg[i, l]:
                good = False
        ok[l] = good


@njit(**OPTS)
def solve_w(lu, b):
    for r in range(N):
        i = FORDER[r]
{acc_load}
        for q in range(FPTR[r], FPTR[r + 1]):
            s = FENT[q, 0]
            k = FENT[q, 1]
{acc_sub}
{acc_store}
    for r in range(N):
        i = BORDER[r]
        d = UDIAG[r]
{acc_load}
        for q in range(BPTR[r], BPTR[r + 1]):
            s = BENT[q, 0]
            k = BENT[q, 1]
{acc_sub}
{acc_store_div}
"""
