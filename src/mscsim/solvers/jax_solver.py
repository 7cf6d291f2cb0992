"""JAX batched stiff solver: a Rosenbrock method (RODAS5P by default, or RODAS4) with per-patient step-size control
inside one jitted loop (CPU or GPU), and the forward sensitivities of its outputs with respect to model parameters.

Why by hand: diffrax, the maintained JAX ODE library, integrates one system per solve; a cohort is solved with
``jax.vmap`` over per-patient solves (the comparison target, see ``benchmarks/bench_scale.py``). Under ``vmap``
the adaptive loop becomes one batched ``while_loop`` whose every iteration evaluates every patient until the
slowest has finished, and the implicit stages run Newton iterations with their own control flow. This module
writes the loop itself, with the arithmetic of :mod:`mscsim.solvers.batched` (same tableau, error norm,
controller, dense output) on the same generated model source called with ``xp = jax.numpy``:

- **Per-patient step control**: every patient carries its own time, step and next output.
- **A window of slots over a queue**: the loop works on a fixed window of patient slots; when a slot's patient has
  finished the segment (or failed), the slot takes the next patient of the chunk, so finished patients do not
  keep their slots busy while others finish (compaction without changing array shapes, so nothing recompiles).
- **Per-patient W factorisation**: W = I/(h*gamma) - J is factored without pivoting on the model's sparsity
  pattern (unrolled, elementwise over the window, as :class:`mscsim.solvers._linalg.SparseBatchedSolver`), with
  each patient's H-matrix test (the comparison matrix factored alongside: every pivot positive); a step where some
  patient fails the test also computes pivoted dense LU and takes it for those patients only.
- **Held states** (``Problem.hold``): their derivatives are zero.
- **A patient whose solve fails** (more than ``max_steps`` attempted steps in a segment) is reported by index and
  the others are kept (:class:`~mscsim.solvers.compiled.SolveFailure`).

Dose events are handled in Python between jitted calls. Shapes are bucketed (the chunk to a power of two, the
window, the segment's stops to one power of two for the call) so a call compiles once.

:func:`sensitivities` differentiates the whole solve (segments, doses, dense output) in forward mode
(``jax.jvp`` through ``lax.while_loop``), one direction per chosen parameter: d(outputs)/d(parameter) for each
patient, the gradient a calibration needs (checked against finite differences in the tests).

This module needs ``jax``; ``import mscsim`` does not import it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.scipy.linalg as jsl  # noqa: E402

from ._rosenbrock import DEFAULT, dense_terms, dense_value, stages, tableau  # noqa: E402
from ._driver import run_segments  # noqa: E402
from ._linalg import H_MARGIN, SparsePattern  # noqa: E402
from .batched import _initial_step  # noqa: E402
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


def solve_jax(problem: Problem, *, rtol: float = 1e-8, atol_factor: float = 1e-13, max_steps: int = 100_000,
              max_chunk: int = 8192, window: int | None = None, failures: str = "raise",
              method: str = DEFAULT) -> np.ndarray:
    """Integrate all patients with JAX; returns states at ``t_eval``, shape (patients, times, states), float64.

    ``max_steps`` caps a patient's attempted steps in one segment. Patients are integrated in chunks of at most
    ``max_chunk`` (rounded up to a power of two), each padded to that one size; ``window`` patients of a chunk are
    stepped at a time (default: the whole chunk up to 256 patients, a quarter of larger ones). ``failures`` and
    ``method`` as in :func:`~mscsim.solvers.compiled.solve_compiled`.
    """
    from .compiled import SolveFailure

    model = problem.model
    B, n = problem.n_patients, model.n_states
    t_eval = np.asarray(problem.t_eval, dtype=float)
    atol = problem.atol(atol_factor)
    P = np.asarray(problem.params, dtype=float)
    hold = tuple(bool(h) for h in problem.held())
    chunk = _bucket(min(B, max_chunk), _MIN_BUCKET)  # one bucket shape for every chunk, the last one too
    win = _window(chunk, window)
    kernel = _kernel(model.source, tuple(int(i) for i in model.jac_rows), tuple(int(i) for i in model.jac_cols), n,
                     hold, method)
    chunks = [slice(c, min(c + chunk, B)) for c in range(0, B, chunk)]
    padded = [_Padded(P[c], atol[c], chunk) for c in chunks]
    n_stops = _bucket(max(_n_stops(problem, seg) for seg in problem.segments()), _MIN_STOPS)
    status = np.zeros(B, dtype=np.int64)

    def integrate(y, h_prev, seg, u, stops, out):
        f0 = model.rhs(y, P) + u
        if any(hold):
            f0[:, np.asarray(hold)] = 0.0
        h0 = np.where(np.isnan(h_prev), _initial_step(y, f0, atol, rtol, stops[-1] - seg.t0), h_prev)
        h_prev = h_prev.copy()
        S = len(stops)
        stops_pad = jnp.asarray(np.concatenate([stops, np.full(n_stops - S, stops[-1])]))
        later = seg.out_idx[t_eval[seg.out_idx] > seg.t0]
        col = np.searchsorted(stops, t_eval[later])
        for c, pc in zip(chunks, padded):
            y_j, h_j, buf, failed = pc.run(kernel, win, y[c], h0[c], u[c], float(seg.t0), stops_pad, S, rtol,
                                           max_steps)
            status[c] = np.maximum(status[c], np.where(failed, 1, 0))
            y[c] = y_j
            h_prev[c] = h_j
            if len(later):
                out[c, later] = buf[:, col]
        return y, h_prev

    out = run_segments(problem, integrate)
    if status.any():
        out[status != 0] = np.nan
        if failures == "raise":
            raise SolveFailure(status, out)
    return out


def _window(chunk: int, window: int | None) -> int:
    if window is not None:
        return min(chunk, _bucket(window, _MIN_BUCKET))
    return chunk if chunk <= 256 else chunk // 4


def _n_stops(problem: Problem, seg) -> int:
    """How many stops ``run_segments`` gives a segment: its output times after t0, then t1 (0 for an instant)."""
    if seg.t1 <= seg.t0:
        return 0
    t = np.asarray(problem.t_eval, dtype=float)[seg.out_idx]
    return int(np.count_nonzero(np.unique(np.append(t, seg.t1)) > seg.t0))


class _Padded:
    """A chunk of patients padded to a bucket size, plus one spare row (the empty slots' patient)."""

    def __init__(self, P: np.ndarray, atol: np.ndarray, size: int):
        self.B, self.size = P.shape[0], size
        pad = size + 1 - self.B
        # padded patients reuse the first patient's parameters, so their (discarded) arithmetic stays finite
        self.P = jnp.asarray(np.concatenate([P, np.repeat(P[:1], pad, axis=0)]))
        self.atol = jnp.asarray(np.concatenate([atol, np.ones((pad, atol.shape[1]))]))

    def _pad(self, a: np.ndarray, fill: float) -> jnp.ndarray:
        return jnp.asarray(np.concatenate([a, np.full((self.size + 1 - self.B,) + a.shape[1:], fill)]))

    def run(self, kernel, window, y, h0, u, t0, stops_pad, n_stops, rtol, max_steps):
        y_j, h_j, buf, failed = kernel(
            self._pad(y, 0.0), jnp.asarray(t0, dtype=jnp.float64), self._pad(h0, 1.0), self.P, self._pad(u, 0.0),
            self.atol, stops_pad, jnp.asarray(n_stops, dtype=jnp.int64), jnp.asarray(rtol, dtype=jnp.float64),
            jnp.asarray(max_steps, dtype=jnp.int64), jnp.asarray(self.B, dtype=jnp.int64), window)
        B = self.B
        return (np.asarray(y_j)[:B], np.asarray(h_j)[:B], np.asarray(buf)[:B],
                np.asarray(failed)[:B])


@lru_cache(maxsize=16)
def _kernel(source: str, rows: tuple, cols: tuple, n: int, hold: tuple, method: str = DEFAULT):
    """The jitted segment integrator for one generated model (keyed by its source, Jacobian pattern, held
    states and the Rosenbrock method)."""
    tab = tableau(method)
    ns: dict = {}
    exec(compile(source, "<mscsim compiled model (jax)>", "exec"), ns)  # noqa: S102 - our own codegen
    rhs_fn, jac_fn = ns["rhs"], ns["jac_values"]
    rows_a, cols_a = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
    eye = jnp.eye(n)
    order = 1.0 / (tab.order_embedded + 1)
    pattern = SparsePattern(n, rows_a, cols_a)
    free = jnp.asarray([0.0 if h else 1.0 for h in hold])
    entry_free = jnp.asarray([0.0 if hold[r] else 1.0 for r in rows]) if len(rows) else jnp.zeros(0)
    off = set(int(s) for s in pattern.off_slots)

    def f_of(p, u):
        def f(x):
            return (rhs_fn(jnp, x, p) + u) * free

        return f

    def jac_of(y, p):
        if not len(rows):
            return jnp.zeros((y.shape[0], 0))
        return jac_fn(jnp, y, p) * entry_free

    def factor(jv, inv_hg):
        """W and its comparison matrix factored without pivoting (unrolled over the pattern's plan, elementwise
        over patients); ``ok``: W is an H-matrix (every comparison pivot positive)."""
        W = [jnp.zeros_like(inv_hg) for _ in range(pattern.n_slots)]
        for e, slot in enumerate(pattern.entry_slots):
            W[slot] = W[slot] - jv[:, e]
        for slot in pattern.diag_slots:
            W[slot] = W[slot] + inv_hg
        Mc = [-jnp.abs(w) if s in off else jnp.abs(w) for s, w in enumerate(W)]
        diag = [Mc[slot] for slot in pattern.diag_slots]
        for a, b, c in pattern.factor_ops:
            if c is None:
                W[a] = W[a] / W[b]
                Mc[a] = Mc[a] / Mc[b]
            else:
                W[a] = W[a] - W[b] * W[c]
                Mc[a] = Mc[a] - Mc[b] * Mc[c]
        ok = jnp.ones_like(inv_hg, dtype=bool)
        for d, slot in zip(diag, pattern.diag_slots):
            ok = ok & (Mc[slot] > H_MARGIN * d)
        return W, ok

    def sparse_solve(W):
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

    def dense_solve(jv, inv_hg):
        """Pivoted LU (LAPACK) on the dense W, for patients whose W is not an H-matrix."""
        J = jnp.zeros((jv.shape[0], n, n))
        if len(rows):
            J = J.at[:, rows_a, cols_a].set(jv)
        lu_piv = jsl.lu_factor(eye[None] * inv_hg[:, None, None] - J)

        def solve(b):
            return jsl.lu_solve(lu_piv, b[..., None])[..., 0]

        return solve

    def step(y, p, u, h, active):
        """One step for the window with per-patient step ``h``: (y_new, error estimate, stages)."""
        jv = jac_of(y, p)
        inv_hg = 1.0 / (h * tab.gamma)
        W, ok = factor(jv, inv_hg)
        ok = ok | ~active
        f = f_of(p, u)

        def sparse_only():
            return stages(tab, f, sparse_solve(W), y, h)

        def mixed():
            s = stages(tab, f, sparse_solve(W), y, h)
            d = stages(tab, f, dense_solve(jv, inv_hg), y, h)
            return jax.tree_util.tree_map(lambda a, b: jnp.where(ok[:, None], a, b), s, d)

        return jax.lax.cond(jnp.all(ok), sparse_only, mixed)

    def segment(Yq, t0, Hq, Pq, Uq, Aq, stops, n_stops, rtol, max_steps, n_real, window):
        """Advance patients 0..n_real-1 of the queue (rows of Yq; row Q is a spare) from t0 through ``stops``,
        ``window`` at a time. Returns their states and next steps, the outputs at the stops (patient, stop, state)
        and which patients failed."""
        global TRACE_COUNT
        TRACE_COUNT += 1  # runs only while tracing
        Q = Yq.shape[0] - 1
        S = stops.shape[0]
        n_slots_out = Q * S
        buf = jnp.zeros((n_slots_out + 1, n))  # flat (patient, stop) -> state; the last row is dropped writes
        t1 = stops[n_stops - 1]  # the segment's end: the only time a step is shortened to land on
        spare = jnp.full(window, Q)
        first = jnp.arange(window)
        pid = jnp.where(first < n_real, first, spare)
        busy = first < n_real
        state = dict(pid=pid, busy=busy, y=Yq[pid], t=jnp.full(window, t0), h=Hq[pid], k=jnp.zeros(window, jnp.int64),
                     steps=jnp.zeros(window, jnp.int64), nxt=jnp.minimum(n_real, window), Yq=Yq, Hq=Hq, buf=buf,
                     failed=jnp.zeros(Q + 1, bool))

        def cond(s):
            return jnp.any(s["busy"])

        def body(s):
            pid, busy, y, t, h, k = s["pid"], s["busy"], s["y"], s["t"], s["h"], s["k"]
            p, u, atol = Pq[pid], Uq[pid], Aq[pid]
            h_try = jnp.where(busy, jnp.minimum(h, t1 - t), 1.0)  # a harmless step for empty slots
            ynew, err_vec, ks = step(y, p, u, h_try, busy)
            sc = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(ynew))
            err = jnp.sqrt(jnp.mean((err_vec / sc) ** 2, axis=1))
            err = jnp.where(jnp.isfinite(err), err, jnp.inf)
            ok = err <= 1.0
            fac = jnp.clip(_SAFETY * jnp.maximum(err, 1e-10) ** (-order), _FAC_MIN, _FAC_MAX)
            fac = jnp.where(ok, fac, jnp.minimum(fac, 1.0))
            clipped = h_try < h
            # a step shortened only to land on the segment's end keeps the longer proposal for the next step
            h = jnp.where(busy, jnp.where(ok & clipped, jnp.maximum(h, h_try * fac), h_try * fac), h)
            acc = busy & ok
            landed = acc & (h_try >= t1 - t)
            t_new = jnp.where(landed, t1, t + h_try)
            # output times inside the accepted step, from the dense output, as solve_batched's _record_dense
            upto = jnp.where(acc, jnp.minimum(jnp.searchsorted(stops, t_new, side="right"), n_stops - 1), k)
            d = dense_terms(tab, ks)

            def pending(c):
                kk, _ = c
                return jnp.any(kk < upto)

            def record(c):
                kk, buf = c
                m = kk < upto
                theta = jnp.minimum((stops[jnp.minimum(kk, S - 1)] - t) / h_try, 1.0)[:, None]
                v = dense_value(d, theta, y, ynew)
                slot = jnp.where(m & (pid < Q), pid * S + kk, n_slots_out)
                return kk + m.astype(kk.dtype), buf.at[slot].set(v, mode="drop")

            k, buf = jax.lax.while_loop(pending, record, (k, s["buf"]))
            y = jnp.where(acc[:, None], ynew, y)
            t = jnp.where(acc, t_new, t)
            steps = s["steps"] + busy.astype(jnp.int64)
            slot = jnp.where(landed & (pid < Q), pid * S + n_stops - 1, n_slots_out)
            buf = buf.at[slot].set(y, mode="drop")
            fail = busy & ~landed & (steps >= max_steps)
            finished = landed | fail
            # the finished patients' states go back to the queue; their slots take the next patients
            back = jnp.where(finished, pid, Q)
            Yq = s["Yq"].at[back].set(y, mode="drop")
            Hq = s["Hq"].at[back].set(h, mode="drop")
            failed = s["failed"].at[jnp.where(fail, pid, Q)].set(True, mode="drop")
            rank = jnp.cumsum(finished.astype(jnp.int64)) - 1
            cand = s["nxt"] + rank
            take = finished & (cand < n_real)
            new_pid = jnp.where(take, cand, Q)
            pid = jnp.where(finished, new_pid, pid)
            busy = jnp.where(finished, take, busy)
            y = jnp.where(take[:, None], Yq[new_pid], y)
            t = jnp.where(take, t0, t)
            h = jnp.where(take, Hq[new_pid], h)
            k = jnp.where(take, 0, k)
            steps = jnp.where(finished, 0, steps)
            nxt = s["nxt"] + jnp.sum(take)
            return dict(pid=pid, busy=busy, y=y, t=t, h=h, k=k, steps=steps, nxt=nxt, Yq=Yq, Hq=Hq, buf=buf,
                        failed=failed)

        s = jax.lax.while_loop(cond, body, state)
        return s["Yq"][:Q], s["Hq"][:Q], s["buf"][:n_slots_out].reshape(Q, S, n), s["failed"][:Q]

    return jax.jit(segment, static_argnums=(11,))


# --- forward sensitivities -----------------------------------------------------------------------------------------

def sensitivities(problem: Problem, names: list[str], *, rtol: float = 1e-10, atol_factor: float = 1e-14,
                  max_steps: int = 200_000, method: str = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """(states, d states / d parameters): the solution at ``t_eval`` (patients, times, states) and its derivative
    with respect to each named model parameter of the same patient (patients, times, states, parameters), by
    forward-mode differentiation of the whole solve (one ``jax.jvp`` per parameter). Tight default tolerances:
    the derivative of the numerical solution approaches the solution's derivative as they tighten."""
    model = problem.model
    idx = [model.param_index(nm) for nm in names]
    P0 = jnp.asarray(problem.params, dtype=jnp.float64)

    def solve(P):
        return _solve_traced(problem, P, rtol, atol_factor, max_steps, method)

    out = None
    grads = []
    for j in idx:
        tangent = jnp.zeros_like(P0).at[:, j].set(1.0)
        primal, dual = jax.jvp(solve, (P0,), (tangent,))
        out = np.asarray(primal) if out is None else out
        grads.append(np.asarray(dual))
    return out, np.stack(grads, axis=-1)


def _solve_traced(problem: Problem, P, rtol, atol_factor, max_steps, method=DEFAULT):
    """The whole solve as JAX operations on the parameter array ``P`` (so it can be differentiated): the segment
    loop, doses and the initial step in ``jax.numpy``, each segment through the jitted kernel (one window, the
    whole batch)."""
    model = problem.model
    B, n = problem.n_patients, model.n_states
    t_eval = np.asarray(problem.t_eval, dtype=float)
    atol = jnp.asarray(problem.atol(atol_factor))
    hold = tuple(bool(h) for h in problem.held())
    kernel = _kernel(model.source, tuple(int(i) for i in model.jac_rows), tuple(int(i) for i in model.jac_cols), n,
                     hold, method)
    size = _bucket(B, _MIN_BUCKET)
    pad = size + 1 - B
    Pq = jnp.concatenate([P, jnp.repeat(P[:1], pad, axis=0)])
    Aq = jnp.concatenate([atol, jnp.ones((pad, n))])
    free = jnp.asarray([0.0 if h else 1.0 for h in hold])
    out = jnp.zeros((B, len(t_eval), n))
    y = jnp.asarray(problem.initial_state())
    h_prev = None
    n_stops = _bucket(max(_n_stops(problem, seg) for seg in problem.segments()), _MIN_STOPS)
    for seg in problem.segments():
        if seg.bolus is not None:
            y = y + jnp.asarray(seg.bolus)
            h_prev = None
        if seg.t1 <= seg.t0:
            out = out.at[:, seg.out_idx].set(y[:, None, :])
            continue
        u = jnp.zeros((B, n)) if seg.input is None else jnp.asarray(seg.input, dtype=jnp.float64)
        stops = np.append(t_eval[seg.out_idx], seg.t1)
        stops = np.unique(stops[stops > seg.t0])
        at_start = seg.out_idx[t_eval[seg.out_idx] == seg.t0]
        if len(at_start):
            out = out.at[:, at_start].set(y[:, None, :])
        if h_prev is None:
            f0 = (_rhs_jnp(model, y, P) + u) * free
            sc = atol + rtol * jnp.abs(y)
            d0 = jnp.sqrt(jnp.mean((y / sc) ** 2, axis=1))
            d1 = jnp.sqrt(jnp.mean((f0 / sc) ** 2, axis=1))
            h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-300))
            h_prev = jnp.minimum(h0, stops[-1] - seg.t0)
        S = len(stops)
        stops_pad = jnp.asarray(np.concatenate([stops, np.full(n_stops - S, stops[-1])]))
        Yq = jnp.concatenate([y, jnp.zeros((pad, n))])
        Hq = jnp.concatenate([h_prev, jnp.ones(pad)])
        Uq = jnp.concatenate([u, jnp.zeros((pad, n))])
        Y, H, buf, _ = kernel(Yq, jnp.asarray(seg.t0, dtype=jnp.float64), Hq, Pq, Uq, Aq, stops_pad,
                              jnp.asarray(S, dtype=jnp.int64), jnp.asarray(rtol, dtype=jnp.float64),
                              jnp.asarray(max_steps, dtype=jnp.int64), jnp.asarray(B, dtype=jnp.int64), size)
        y, h_prev = Y[:B], H[:B]
        later = seg.out_idx[t_eval[seg.out_idx] > seg.t0]
        if len(later):
            out = out.at[:, later].set(buf[:B][:, np.searchsorted(stops, t_eval[later])])
    return out


def _rhs_jnp(model, x, p):
    return model._namespace["rhs"](jnp, x, p)
