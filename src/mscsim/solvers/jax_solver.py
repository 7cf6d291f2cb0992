"""JAX batched stiff solver: RODAS4 with per-patient step-size control inside one jitted loop (CPU or GPU).

Why by hand: diffrax, the maintained JAX ODE library, integrates one system per solve; a cohort is solved
with ``jax.vmap`` over per-patient solves (the comparison target here is ``vmap`` of diffrax's
``Kvaerno5`` with a PID controller, see ``benchmarks/bench_jax.py``). Under ``vmap`` the adaptive loop
becomes one batched ``while_loop`` whose every iteration evaluates every patient until the slowest has
finished, and the implicit stages run Newton iterations with their own control flow. This module instead
writes the loop itself: every patient carries its own time ``t``, step ``h`` and next-output index, steps
are accepted or rejected per patient (patients that are done are masked), and each step is one RODAS4
step for the whole batch (no Newton iteration: six linear solves with one LU factorisation of
W = I/(h*gamma) - J per patient, unrolled over the model's sparsity pattern as in
:class:`mscsim.solvers._linalg.SparseBatchedSolver`, with pivoted dense LU as the fallback). The arithmetic is the same as :func:`mscsim.solvers.batched.solve_batched`
(same tableau, error norm, controller, and output times read off each accepted step's dense output rather
than shortening the steps), so the two agree to the tolerance; the
right-hand side and the analytic Jacobian come from the **same generated model source**, called with
``xp = jax.numpy``.

Dose events are handled in Python between jitted calls (a bolus is added to the state, an infusion sets a
constant input for a segment). Batch shapes are bucketed so that one call compiles at most once: every chunk
of patients is padded to one power of two (padded patients have zero state and are marked done) and every
segment's list of stop times to one power of two (the longest segment's), so ``jax.jit`` compiles once per
bucket, not once per cohort size, chunk or segment; a later call with the same buckets (the untreated
comparator of a run, the next chunk) reuses the compiled kernel.

The tissue model (44 states, nonlinear feedback between cytokines and immune cells) has Jacobians whose W is
not column diagonally dominant at the steps the controller takes, so its steps take the pivoted dense LU
branch; the kinetics take the sparse branch. (The NumPy solver tests the wider H-matrix condition per patient
and factors the tissue model's W without pivoting too; this module still uses the column test, batch-wide.) Both
are compiled; the generated model code is common-subexpression-eliminated (``compile_model``), which keeps
the tissue kernel's tracing and XLA compilation to about 18 s on the 2-vCPU development machine (28 s
without it).

This module needs ``jax``; ``import mscsim`` does not import it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.scipy.linalg as jsl  # noqa: E402

from ..errors import MscsimError  # noqa: E402
from . import _rodas4 as tab  # noqa: E402
from ._linalg import SparsePattern  # noqa: E402
from .batched import _initial_step  # noqa: E402
from ._driver import run_segments  # noqa: E402
from .problem import Problem  # noqa: E402

_SAFETY, _FAC_MIN, _FAC_MAX = 0.9, 0.2, 6.0
_MIN_BUCKET = 8
_MIN_STOPS = 16

#: number of times the segment kernel has been traced (compiled); tests use it to check bucketing
TRACE_COUNT = 0


def _bucket(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


def solve_jax(problem: Problem, *, rtol: float = 1e-8, atol_factor: float = 1e-13,
              max_steps: int = 100_000, max_chunk: int = 8192) -> np.ndarray:
    """Integrate all patients with JAX; returns states at ``t_eval``, shape (patients, times, states), float64.

    ``max_steps`` bounds the loop iterations per segment (each iteration is one attempted step for every
    patient still running). Patients are integrated in chunks of at most ``max_chunk`` (rounded up to a
    power of two), each padded to that one size, so a call compiles at most once.
    """
    model = problem.model
    B, n = problem.n_patients, model.n_states
    t_eval = np.asarray(problem.t_eval, dtype=float)
    atol = problem.atol(atol_factor)
    P = np.asarray(problem.params, dtype=float)
    kernel = _kernel(model.source, tuple(int(i) for i in model.jac_rows), tuple(int(i) for i in model.jac_cols), n)

    chunk = _bucket(min(B, max_chunk), _MIN_BUCKET)  # one bucket shape for every chunk, the last one too
    chunks = [slice(c, min(c + chunk, B)) for c in range(0, B, chunk)]
    padded = [_Padded(P[c], atol[c], chunk) for c in chunks]
    n_stops = _bucket(max(_n_stops(problem, seg) for seg in problem.segments()), _MIN_STOPS)

    def integrate(y, h_prev, seg, u, stops, out):
        f0 = model.rhs(y, P) + u
        h0 = np.where(np.isnan(h_prev), _initial_step(y, f0, atol, rtol, stops[-1] - seg.t0), h_prev)
        h_prev = h_prev.copy()
        S = len(stops)
        stops_pad = jnp.asarray(np.concatenate([stops, np.full(n_stops - S, stops[-1])]))
        later = seg.out_idx[t_eval[seg.out_idx] > seg.t0]
        col = np.searchsorted(stops, t_eval[later])
        for c, pc in zip(chunks, padded):
            y_j, h_j, buf, done = pc.run(kernel, y[c], h0[c], u[c], float(seg.t0), stops_pad, S, rtol, max_steps)
            if not bool(np.all(np.asarray(done))):
                raise MscsimError(f"JAX solver: more than {max_steps} steps between {seg.t0} and {seg.t1} h; "
                                  "the model may be unstable for some patients' parameters")
            y[c] = y_j
            h_prev[c] = h_j
            if len(later):
                out[c, later] = buf[:, col]
        return y, h_prev

    return run_segments(problem, integrate)


def _n_stops(problem: Problem, seg) -> int:
    """How many stops ``run_segments`` gives a segment: its output times after t0, then t1 (0 for an instant)."""
    if seg.t1 <= seg.t0:
        return 0
    t = np.asarray(problem.t_eval, dtype=float)[seg.out_idx]
    return int(np.count_nonzero(np.unique(np.append(t, seg.t1)) > seg.t0))


class _Padded:
    """A chunk of patients padded to a bucket size: padded patients have zero state and are done from the start."""

    def __init__(self, P: np.ndarray, atol: np.ndarray, size: int):
        self.B, self.size = P.shape[0], size
        pad = size - self.B
        # padded patients reuse the first patient's parameters, so their (discarded) arithmetic stays finite
        self.P = jnp.asarray(np.concatenate([P, np.repeat(P[:1], pad, axis=0)]))
        self.atol = jnp.asarray(np.concatenate([atol, np.ones((pad, atol.shape[1]))]))
        self.done0 = jnp.asarray(np.arange(size) >= self.B)

    def _pad(self, a: np.ndarray, fill: float) -> jnp.ndarray:
        return jnp.asarray(np.concatenate([a, np.full((self.size - self.B,) + a.shape[1:], fill)]))

    def run(self, kernel, y, h0, u, t0, stops_pad, n_stops, rtol, max_steps):
        y_j, h_j, buf, done, _ = kernel(
            self._pad(y, 0.0), jnp.full(self.size, t0), self._pad(h0, 1.0), self.done0, self.P, self._pad(u, 0.0),
            self.atol, stops_pad, jnp.asarray(n_stops, dtype=jnp.int64), jnp.asarray(rtol, dtype=jnp.float64),
            jnp.asarray(max_steps, dtype=jnp.int64))
        B = self.B
        return np.asarray(y_j)[:B], np.asarray(h_j)[:B], np.asarray(buf)[:B], done


@lru_cache(maxsize=16)
def _kernel(source: str, rows: tuple, cols: tuple, n: int):
    """The jitted segment integrator for one generated model (keyed by its source and Jacobian pattern)."""
    ns: dict = {}
    exec(compile(source, "<mscsim compiled model (jax)>", "exec"), ns)  # noqa: S102 - our own codegen
    rhs_fn, jac_fn = ns["rhs"], ns["jac_values"]
    rows_a, cols_a = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
    eye = jnp.eye(n)
    order = 1.0 / (tab.ORDER_EMBEDDED + 1)

    pattern = SparsePattern(n, rows_a, cols_a)
    col_of_entry = jnp.asarray(pattern.col_of_entry)

    def sparse_solver(jv, inv_hg):
        """Unrolled LU without pivoting on the structural non-zeros (as ``SparseBatchedSolver``): a few dozen
        vector operations over patients instead of a LAPACK call per patient."""
        W = [jnp.zeros_like(inv_hg) for _ in range(pattern.n_slots)]
        for e, slot in enumerate(pattern.entry_slots):
            W[slot] = W[slot] - jv[:, e]
        for slot in pattern.diag_slots:
            W[slot] = W[slot] + inv_hg
        for a, b, c in pattern.factor_ops:
            W[a] = W[a] / W[b] if c is None else W[a] - W[b] * W[c]

        def solve(rhs):
            x = [rhs[:, i] for i in range(n)]
            for i, k, slot in pattern.lower:
                x[i] = x[i] - W[slot] * x[k]
            for i, j, slot in pattern.backward:
                if i is None:
                    x[j] = x[j] / W[slot]
                else:
                    x[i] = x[i] - W[slot] * x[j]
            return jnp.stack(x, axis=-1)

        return solve

    def dense_solver(jv, inv_hg):
        """Pivoted LU (LAPACK) on the dense W, for batches where some patient's W is not diagonally dominant."""
        J = jnp.zeros((jv.shape[0], n, n))
        if len(rows):
            J = J.at[:, rows_a, cols_a].set(jv)
        lu_piv = jsl.lu_factor(eye[None] * inv_hg[:, None, None] - J)

        def solve(b):
            return jsl.lu_solve(lu_piv, b[..., None])[..., 0]

        return solve

    def stages(solve, y, p, u, h):
        def f(x):
            return rhs_fn(jnp, x, p) + u

        return tab.rodas4_stages(f, solve, y, h)

    def step(y, p, u, h, active):
        """One RODAS4 step for a batch with per-patient step ``h``: (y_new, error estimate).

        W = I/(h*gamma) - J is factored without pivoting on its sparsity pattern when it is column diagonally
        dominant for every running patient (compartmental models: always); otherwise the whole batch takes
        this step with pivoted dense LU.
        """
        jv = jac_fn(jnp, y, p) if len(rows) else jnp.zeros((y.shape[0], 0))
        inv_hg = 1.0 / (h * tab.GAMMA)
        off = jnp.abs(jv) @ col_of_entry.T
        diag = jnp.abs(jnp.stack([inv_hg - sum((jv[:, e] for e in range(len(rows)) if rows[e] == cols[e] == i),
                                               jnp.zeros_like(inv_hg)) for i in range(n)], axis=-1))
        dominant = jnp.all(diag > off, axis=1) | ~active
        return jax.lax.cond(jnp.all(dominant),
                            lambda: stages(sparse_solver(jv, inv_hg), y, p, u, h),
                            lambda: stages(dense_solver(jv, inv_hg), y, p, u, h))

    def segment(y, t, h, done, p, u, atol, stops, n_stops, rtol, max_steps):
        global TRACE_COUNT
        TRACE_COUNT += 1  # runs only while tracing
        Bp = y.shape[0]
        n_slots = stops.shape[0] * Bp
        buf = jnp.zeros((n_slots, n))  # flat (patient, stop) -> state: outputs recorded on landing
        k_stop = jnp.where(done, n_stops, 0)
        rows_b = jnp.arange(Bp)

        def cond(state):
            _, _, _, _, done, _, steps = state
            return jnp.any(~done) & (steps < max_steps)

        S = stops.shape[0]
        t1 = stops[n_stops - 1]  # the segment's end: the only time a step is shortened to land on

        def body(state):
            y, t, h, k_stop, done, buf, steps = state
            active = ~done
            h_try = jnp.minimum(h, t1 - t)
            h_try = jnp.where(active, h_try, 1.0)  # a harmless step for patients that are done
            ynew, err_vec, ks = step(y, p, u, h_try, active)
            sc = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(ynew))
            err = jnp.sqrt(jnp.mean((err_vec / sc) ** 2, axis=1))
            err = jnp.where(jnp.isfinite(err), err, jnp.inf)
            ok = err <= 1.0
            fac = jnp.clip(_SAFETY * jnp.maximum(err, 1e-10) ** (-order), _FAC_MIN, _FAC_MAX)
            fac = jnp.where(ok, fac, jnp.minimum(fac, 1.0))
            clipped = h_try < h
            # a step shortened only to land on the segment's end keeps the longer proposal for the next step
            h_new = jnp.where(ok & clipped, jnp.maximum(h, h_try * fac), h_try * fac)
            h = jnp.where(active, h_new, h)
            acc = active & ok
            landed = acc & (h_try >= t1 - t)
            t_new = jnp.where(landed, t1, t + h_try)
            # output times inside the accepted step, from the dense output, as solve_batched's _record_dense
            upto = jnp.where(acc, jnp.minimum(jnp.searchsorted(stops, t_new, side="right"), n_stops - 1), k_stop)
            d2, d3 = tab.dense_terms(ks)

            def pending(c):
                kk, _ = c
                return jnp.any(kk < upto)

            def record(c):
                kk, buf = c
                m = kk < upto
                theta = jnp.minimum((stops[jnp.minimum(kk, S - 1)] - t) / h_try, 1.0)[:, None]
                one = 1.0 - theta
                v = ((d3 * theta + d2) * one + ynew) * theta + y * one
                slot = jnp.where(m, rows_b * S + kk, n_slots)  # out of range: dropped
                return kk + m.astype(kk.dtype), buf.at[slot].set(v, mode="drop", unique_indices=True)

            k_stop, buf = jax.lax.while_loop(pending, record, (k_stop, buf))
            y = jnp.where(acc[:, None], ynew, y)
            t = jnp.where(acc, t_new, t)
            slot = jnp.where(landed, rows_b * S + n_stops - 1, n_slots)  # the end itself: the landed state
            buf = buf.at[slot].set(y, mode="drop", unique_indices=True)
            k_stop = jnp.where(landed, n_stops, k_stop)
            done = k_stop >= n_stops
            return y, t, h, k_stop, done, buf, steps + 1

        init = (y, t, h, k_stop, done, buf, jnp.asarray(0, dtype=max_steps.dtype))
        y, t, h, k_stop, done, buf, steps = jax.lax.while_loop(cond, body, init)
        return y, h, buf.reshape(Bp, stops.shape[0], n), done, steps

    return jax.jit(segment)
