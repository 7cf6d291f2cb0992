"""Batched stiff solver: a Rosenbrock method (RODAS5P by default, or RODAS4) with per-patient step-size control,
many patients per NumPy call.

Why by hand: SciPy's stiff solvers integrate one system with one step size; stacking patients into one
system would let the worst patient set everyone's step and blur per-patient error control. No maintained
NumPy library offers a batched Rosenbrock method, so this module implements RODAS5P (Steinebach 2023) and RODAS4
(Hairer & Wanner 1996) over a batch (:mod:`~mscsim.solvers._rosenbrock`), with the analytic Jacobian from the
compiled model. Rosenbrock stages are linear combinations
of right-hand sides and solves with one matrix, so linear invariants (the cell mass balance) are kept to
round-off.

Output times are read off each accepted step's dense output (the method's continuous extension, exact at
the step's ends), as CVODE and Hairer's RODAS code do, so they never shorten a step; only the end of a segment (a
dose, the start or end of an infusion) is landed on. A patient's steps therefore do not depend on which output
times were asked for, and a dense output grid costs interpolation, not steps.

Layout: inside a segment the batch is the last, contiguous axis (states x patients), so each state, parameter
and stage entry is a contiguous row and every operation of the generated model code and of the sparse
elimination is one vector operation over the patients still running. The running patients are held compacted
and are re-packed only when some of them finish the segment. Everything a patient's numbers go through is
elementwise over the batch (no BLAS, no reductions across the batch axis; the error norm sums the states in a
fixed order), so a patient's results do not depend on which other patients share its batch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import MscsimError
from ._rosenbrock import DEFAULT, Tableau, dense_terms, dense_value, tableau
from ..model.compiled import CompiledModel
from ._driver import run_segments
from ._linalg import BatchedSolver, SparseBatchedSolver, SparsePattern
from .problem import Problem

_SAFETY, _FAC_MIN, _FAC_MAX = 0.9, 0.2, 6.0


def solve_batched(problem: Problem, *, rtol: float = 1e-8, atol_factor: float = 1e-13,
                  max_steps: int = 200_000, method: str = DEFAULT) -> np.ndarray:
    """Integrate all patients together; returns states at ``t_eval``, shape (patients, times, states).
    ``method``: the Rosenbrock method (``rodas5p`` or ``rodas4``)."""
    model = problem.model
    t_eval = np.asarray(problem.t_eval, dtype=float)
    atol = problem.atol(atol_factor)
    P = np.asarray(problem.params, dtype=float)
    system = _System(model, problem.hold, tableau(method))

    def integrate(y, h_prev, seg, u, stops, out):
        return _integrate_segment(system, P, u, y, seg.t0, stops, t_eval, seg.out_idx, out, atol, rtol, h_prev,
                                  max_steps)

    # The W matrices are tiny (tens of states): a multi-threaded BLAS spends far more on waking threads than on
    # arithmetic (measured 100x slower per LAPACK call with 2 threads on a busy 2-core machine), so one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        return run_segments(problem, integrate)


class _System:
    """The model's right-hand side and W solves in batch-last form: generated code for compiled models, the
    (patients, states) methods transposed for any other model with ``rhs`` and ``jac``."""

    def __init__(self, model, hold=None, tab: Tableau = tableau(DEFAULT)):
        self.model = model
        self.tab = tab
        self.compiled = isinstance(model, CompiledModel)
        self.hold = None if hold is None or not np.any(hold) else np.nonzero(np.asarray(hold, dtype=bool))[0]
        if self.compiled:
            self.pattern = _pattern(model.n_states, tuple(model.jac_rows), tuple(model.jac_cols))
            if self.hold is not None:  # the Jacobian entries in held rows
                self.held_entries = np.nonzero(np.isin(model.jac_rows, self.hold))[0]

    def rhs(self, x, pT):
        if self.compiled:
            f = self.model.rhs_bl(x, pT)
        else:
            f = np.ascontiguousarray(self.model.rhs(x.T, None if pT is None else pT.T).T)
        if self.hold is not None:
            f[self.hold] = 0.0
        return f

    def w_solver(self, x, pT, h):
        """Factor W = I/(h*gamma) - J for the batch; returns an object whose ``solve`` works in place on (n, B)."""
        inv_hg = 1.0 / (h * self.tab.gamma)
        if self.compiled:
            jv = self.model.jac_values_bl(x, pT)
            if self.hold is not None:
                jv[self.held_entries] = 0.0
            return SparseBatchedSolver(self.pattern, jv, inv_hg)
        J = self.model.jac(x.T, None if pT is None else pT.T)
        if self.hold is not None:
            J[:, self.hold, :] = 0.0
        return _Transposed(BatchedSolver(np.eye(x.shape[0])[None] * inv_hg[:, None, None] - J))


class _Transposed:
    def __init__(self, solver):
        self.solver = solver

    def solve(self, b):
        b[...] = self.solver.solve(np.ascontiguousarray(b.T)).T
        return b


@lru_cache(maxsize=32)
def _pattern(n: int, rows: tuple, cols: tuple) -> SparsePattern:
    return SparsePattern(n, np.array(rows), np.array(cols))


def _integrate_segment(system, P, u, y, t0, stops, t_eval, out_idx, out, atol, rtol, h_prev, max_steps):
    """Advance every patient from t0 to ``stops[-1]`` (the segment's end, landed on exactly), each with its own
    steps; the output times before it are read off each accepted step's dense output, so they do not shorten
    the steps (as CVODE and Hairer's RODAS code do)."""
    B, n = y.shape
    model = system.model
    f0 = model.rhs(y, P) + u
    h = np.where(np.isnan(h_prev), _initial_step(y, f0, atol, rtol, stops[-1] - t0), h_prev)
    h_out = h.copy()
    # the output columns recorded at stop s (output times are the stops before t1; t1 may be one too)
    out_times = t_eval[out_idx]
    col_of_stop = [out_idx[out_times == s] for s in stops]
    first_col = np.array([c[0] if len(c) else -1 for c in col_of_stop])
    extra = [(s, c[1:]) for s, c in enumerate(col_of_stop) if len(c) > 1]
    n_stops = len(stops)
    t1 = stops[-1]
    # the running patients, compacted, batch-last
    ids = np.arange(B)
    yT = np.ascontiguousarray(y.T)
    pT = None if P is None else np.ascontiguousarray(P.T)
    uT = np.ascontiguousarray(np.broadcast_to(u, (B, n)).T)
    atolT = np.ascontiguousarray(atol.T)
    t = np.full(B, float(t0))
    k = np.zeros(B, dtype=np.intp)  # index of the next stop to record for each running patient
    steps = 0
    while ids.size:
        steps += 1
        if steps > max_steps:
            raise MscsimError(f"batched solver: more than {max_steps} steps between {t0} and {t1} h; "
                              "the model may be unstable for some patients' parameters")
        h_try = np.minimum(h, t1 - t)
        ynew, err_vec, ks = _step(system, yT, pT, uT, h_try)
        sc = np.maximum(np.abs(yT), np.abs(ynew))
        sc *= rtol
        sc += atolT
        np.divide(err_vec, sc, out=sc)
        sc *= sc
        ss = sc[0].copy()
        for i in range(1, n):  # sum over states in a fixed order, whatever the batch's shape
            ss += sc[i]
        err = np.sqrt(ss / n)
        err = np.where(np.isfinite(err), err, np.inf)
        ok = err <= 1.0
        fac = np.clip(_SAFETY * np.maximum(err, 1e-10) ** (-1.0 / (system.tab.order_embedded + 1)), _FAC_MIN,
                      _FAC_MAX)
        fac = np.where(ok, fac, np.minimum(fac, 1.0))
        clipped = h_try < h
        # a step shortened only to land on the segment's end keeps the longer proposal for the next step
        h = np.where(ok & clipped, np.maximum(h, h_try * fac), h_try * fac)
        if not ok.any():
            continue
        landed = ok & (h_try >= t1 - t)
        t_new = np.where(landed, t1, t + h_try)
        # output times inside the accepted steps, from the dense output (before y moves on)
        pending = ok & (stops[np.minimum(k, n_stops - 1)] <= t_new) & (k < n_stops - 1)
        if pending.any():
            k = _record_dense(system.tab, pending, k, stops, first_col, extra, t, h_try, t_new, yT, ynew, ks, ids,
                              out)
        t = np.where(ok, t_new, t)
        np.copyto(yT, ynew, where=ok[None, :])
        if landed.any():
            hit = np.nonzero(landed)[0]
            for c in col_of_stop[-1]:  # output times at t1 itself: the landed state, exactly
                out[ids[hit], c] = yT[:, hit].T
            y[ids[hit]] = yT[:, hit].T
            h_out[ids[hit]] = h[hit]
            keep = np.nonzero(~landed)[0]
            ids, t, k, h = ids[keep], t[keep], k[keep], h[keep]
            yT, uT, atolT = yT[:, keep], uT[:, keep], atolT[:, keep]
            pT = None if pT is None else pT[:, keep]
    return y, h_out


def _record_dense(tab, pending, k, stops, first_col, extra, t, h, t_new, y0, y1, ks, ids, out):
    """Write the output times that fall inside the accepted steps of the ``pending`` patients, from the method's
    dense output; returns the advanced next-stop indices. Elementwise over patients, like the steps.

    A long step can cover many output times, so every (patient, output time) pair of this step is laid out
    flat and interpolated in one pass."""
    sel = np.nonzero(pending)[0]
    last = len(stops) - 1  # the segment's end is recorded on landing, from the state itself
    first = k[sel]
    upto = np.minimum(np.searchsorted(stops, t_new[sel], side="right"), last)
    count = upto - first
    pid = np.repeat(sel, count)  # the running patient of each pair
    offset = np.arange(pid.size) - np.repeat(np.cumsum(count) - count, count)
    stop = np.repeat(first, count) + offset  # the output time of each pair
    theta = np.minimum((stops[stop] - t[pid]) / h[pid], 1.0)
    # D_r = sum_j H_rj k_j once per patient, then _rosenbrock.dense_value per pair
    every = sel.size == y0.shape[1]
    d = dense_terms(tab, ks if every else [None] + [ks[j][:, sel] for j in range(1, tab.dense_stages + 1)])
    local = np.repeat(np.arange(sel.size), count)  # the pair's column in d
    v = dense_value([np.take(dr, local, axis=1) for dr in d], theta, np.take(y0, pid, axis=1),
                    np.take(y1, pid, axis=1))
    rows, cols = ids[pid], first_col[stop]
    rec = cols >= 0
    if rec.all():
        out[rows, cols] = v.T
    else:
        out[rows[rec], cols[rec]] = v[:, rec].T
    for s, more in extra:  # output times asked for more than once (rare)
        w = stop == s
        for c in more:
            out[rows[w], c] = v[:, w].T
    k = k.copy()
    k[sel] = upto
    return k


def _step(system, y, pT, uT, h):
    """One Rosenbrock step for a batch-last batch ((n, B) states) with per-patient step ``h``:
    (y_new, error, stages); the stages feed the dense output.

    The same arithmetic as :func:`mscsim.solvers._rosenbrock.stages` (stage sums accumulated in the same
    order), with fewer temporaries."""
    solve = system.w_solver(y, pT, h).solve
    hinv = 1.0 / h
    tab = system.tab
    A, C, S, E = tab.A, tab.C, tab.stages, tab.explicit
    k = [None] * (S + 1)

    def f(x):
        r = system.rhs(x, pT)
        r += uT
        return r

    def combo(coef, i, upto):
        acc = coef[(i, 1)] * k[1]
        for j in range(2, upto + 1):
            acc += coef[(i, j)] * k[j]
        return acc

    k[1] = solve(f(y))
    yi = y
    for i in range(2, S + 1):
        if i <= E:
            yi = combo(A, i, i - 1)
            yi += y  # s + y: the same sum as y + s
        else:
            yi = yi + k[i - 1]
        ci = combo(C, i, i - 1)
        ci *= hinv
        r = f(yi)
        r += ci
        k[i] = solve(r)
    return yi + k[S], k[S], k


def _rosenbrock_step(model, y, p, u, h, method: str = DEFAULT):
    """One step of ``method`` for a (patients, states) batch with per-patient step ``h``; returns (y_new, error)."""
    system = _System(model, tab=tableau(method))
    B, n = y.shape
    uT = np.ascontiguousarray(np.broadcast_to(u, (B, n)).T)
    pT = None if p is None else np.ascontiguousarray(np.asarray(p).T)
    ynew, err, _ = _step(system, np.ascontiguousarray(y.T), pT, uT, np.asarray(h, dtype=float))
    return ynew.T, err.T


def _initial_step(y, f, atol, rtol, span):
    """Hairer's starting-step heuristic, per patient, capped by the segment length."""
    sc = atol + rtol * np.abs(y)
    d0 = np.sqrt(np.mean((y / sc) ** 2, axis=1))
    d1 = np.sqrt(np.mean((f / sc) ** 2, axis=1))
    h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.maximum(d1, 1e-300))
    return np.minimum(h0, span)
