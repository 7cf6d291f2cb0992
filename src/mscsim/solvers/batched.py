"""Batched stiff solver: RODAS4 with per-patient step-size control, many patients per NumPy call.

Why by hand: SciPy's stiff solvers integrate one system with one step size; stacking patients into one
system would let the worst patient set everyone's step and blur per-patient error control. No maintained
NumPy library offers a batched Rosenbrock method, so this module implements RODAS4 (Hairer & Wanner 1996)
over a batch, with the analytic Jacobian from the compiled model. Rosenbrock stages are linear combinations
of right-hand sides and solves with one matrix, so linear invariants (the cell mass balance) are kept to
round-off.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import MscsimError
from . import _rodas4 as tab
from ..model.compile import CompiledModel
from ._driver import run_segments
from ._linalg import BatchedSolver, SparseBatchedSolver, SparsePattern
from .problem import Problem

_SAFETY, _FAC_MIN, _FAC_MAX = 0.9, 0.2, 6.0


def solve_batched(problem: Problem, *, rtol: float = 1e-8, atol_factor: float = 1e-13,
                  max_steps: int = 200_000) -> np.ndarray:
    """Integrate all patients together; returns states at ``t_eval``, shape (patients, times, states)."""
    model = problem.model
    t_eval = np.asarray(problem.t_eval, dtype=float)
    atol = problem.atol(atol_factor)
    P = np.asarray(problem.params, dtype=float)

    def integrate(y, h_prev, seg, u, stops, out):
        return _integrate_segment(model, P, u, y, seg.t0, stops, t_eval, seg.out_idx, out, atol, rtol, h_prev,
                                  max_steps)

    # The W matrices are tiny (tens of states): a multi-threaded BLAS spends far more on waking threads than on
    # arithmetic (measured 100x slower per LAPACK call with 2 threads on a busy 2-core machine), so one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        return run_segments(problem, integrate)


def _integrate_segment(model, P, u, y, t0, stops, t_eval, out_idx, out, atol, rtol, h_prev, max_steps):
    B, n = y.shape
    t = np.full(B, t0)
    k_stop = np.zeros(B, dtype=np.intp)  # index of the next stop for each patient
    f0 = model.rhs(y, P) + u
    h = np.where(np.isnan(h_prev), _initial_step(y, f0, atol, rtol, stops[-1] - t0), h_prev)
    out_times = t_eval[out_idx]
    steps = 0
    active = np.arange(B)
    while active.size:
        steps += 1
        if steps > max_steps:
            raise MscsimError(f"batched solver: more than {max_steps} steps between {t0} and {stops[-1]} h; "
                              "the model may be unstable for some patients' parameters")
        ya, ta, pa, ua = y[active], t[active], P[active], u[active]
        t_target = stops[k_stop[active]]
        h_try = np.minimum(h[active], t_target - ta)
        ynew, err_vec = _rodas4_step(model, ya, pa, ua, h_try)
        sc = atol[active] + rtol * np.maximum(np.abs(ya), np.abs(ynew))
        err = np.sqrt(np.mean((err_vec / sc) ** 2, axis=1))
        err = np.where(np.isfinite(err), err, np.inf)
        ok = err <= 1.0
        fac = np.clip(_SAFETY * np.maximum(err, 1e-10) ** (-1.0 / (tab.ORDER_EMBEDDED + 1)), _FAC_MIN, _FAC_MAX)
        fac = np.where(ok, fac, np.minimum(fac, 1.0))
        clipped = h_try < h[active]
        # a step shortened only to land on an output time keeps the longer proposal for the next step
        h[active] = np.where(ok & clipped, np.maximum(h[active], h_try * fac), h_try * fac)
        acc = active[ok]
        if acc.size:
            y[acc] = ynew[ok]
            landed = ok & (h_try >= t_target - ta)
            t[acc] = np.where(landed[ok], t_target[ok], ta[ok] + h_try[ok])
            hit = active[landed]
            if hit.size:
                tt = t[hit]
                for j in np.nonzero(np.isin(out_times, np.unique(tt)))[0]:
                    sel = hit[tt == out_times[j]]
                    out[sel, out_idx[j]] = y[sel]
                k_stop[hit] += 1
        active = active[k_stop[active] < len(stops)]
    return y, h


@lru_cache(maxsize=32)
def _pattern(n: int, rows: tuple, cols: tuple) -> SparsePattern:
    return SparsePattern(n, np.array(rows), np.array(cols))


def _w_solver(model, y, p, h):
    """Factor W = I/(h*gamma) - J: sparse elimination for compiled models, dense otherwise."""
    if isinstance(model, CompiledModel):
        pattern = _pattern(model.n_states, tuple(model.jac_rows), tuple(model.jac_cols))
        return SparseBatchedSolver(pattern, model.jac_values(y, p), 1.0 / (h * tab.GAMMA))
    n = y.shape[1]
    return BatchedSolver(np.eye(n)[None] / (h * tab.GAMMA)[:, None, None] - model.jac(y, p))


def _rodas4_step(model, y, p, u, h):
    """One RODAS4 step for a batch with per-patient step ``h``; returns (y_new, error estimate)."""
    solve = _w_solver(model, y, p, h).solve

    def f(x):
        return model.rhs(x, p) + u

    return tab.rodas4_stages(f, solve, y, h)


def _initial_step(y, f, atol, rtol, span):
    """Hairer's starting-step heuristic, per patient, capped by the segment length."""
    sc = atol + rtol * np.abs(y)
    d0 = np.sqrt(np.mean((y / sc) ** 2, axis=1))
    d1 = np.sqrt(np.mean((f / sc) ** 2, axis=1))
    h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.maximum(d1, 1e-300))
    return np.minimum(h0, span)
