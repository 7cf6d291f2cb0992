"""The exact solution of a linear model: dx/dt = A x + u, with A constant for each patient.

The whole-body cell kinetics (no tissue model: cells moving between compartments, dying and being cleared at
first-order rates) is linear in its states; the compiler proves it on the symbolic Jacobian
(:attr:`~mscsim.model.compile.CompiledModel.linear`: no entry depends on a state). Then each segment between doses
has a closed form from one eigendecomposition A = V diag(lambda) V^-1 per patient (LAPACK ``geev`` through NumPy):

    x(t0 + tau) = V [exp(lambda tau) * c + phi(lambda, tau) * d],   c = V^-1 x(t0),  d = V^-1 u,
    phi(lambda, tau) = (exp(lambda tau) - 1) / lambda   (tau where lambda = 0),

evaluated at every output time directly (no steps, nothing accumulated from one output to the next). The error is
round-off amplified by the eigenvector matrix's condition number, so a patient whose eigenvectors are
ill-conditioned (rates along a chain of compartments nearly equal: a nearly defective A) is integrated by the
compiled engine (a Rosenbrock method) instead, as is any patient whose closed form is not finite.

Why written here: SciPy's ``expm`` is exact too, but needs one Pade approximant of the augmented matrix per distinct
output interval (about 50 microseconds each for the 18-state kinetics, measured), where one eigendecomposition serves
every output time of every segment.
"""

from __future__ import annotations

import numpy as np

from ._driver import run_segments
from ._rosenbrock import DEFAULT
from .compiled import SolveFailure, _stop_columns, solve_compiled
from .problem import Problem

COND_MAX = 1e7  # 1-norm condition number of V above which a patient is integrated (round-off x cond ~ 1e-9)
BLOCK = 256  # patients per eigendecomposition block: bounds the memory of the (patients, states, outputs) arrays


def system_matrix(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """A for every patient (B, n, n), the Jacobian of the linear right-hand side (any state gives the same), with
    held states' rows zeroed (their derivatives are zero); and the held mask."""
    model = problem.model
    hold = problem.held()
    A = model.jac(problem.initial_state(), np.asarray(problem.params, dtype=float))
    A[:, hold, :] = 0.0
    return A, hold


def solve_linear(problem: Problem, *, rtol: float = 1e-8, atol_factor: float = 1e-13,
                 max_steps: int = 200_000, failures: str = "raise", method: str = DEFAULT) -> np.ndarray:
    """States at ``problem.t_eval`` for every patient (patients, times, states), exact for a linear model.

    ``rtol``, ``atol_factor``, ``max_steps``, ``failures`` and ``method`` apply to the patients handed to the compiled
    engine (see the module docstring); ``solve_linear.last_fallback`` is the mask of those patients."""
    if not problem.model.linear:
        raise ValueError("solve_linear needs a linear model (CompiledModel.linear); use solve_compiled")
    B = problem.n_patients
    out = np.empty((B, len(problem.t_eval), problem.model.n_states))
    fallback = np.zeros(B, dtype=bool)
    for start in range(0, B, BLOCK):
        rows = slice(start, min(B, start + BLOCK))
        block = problem.take(rows)
        states, bad = _solve_block(block)
        out[rows] = states
        fallback[rows] = bad
    solve_linear.last_fallback = fallback
    if fallback.any():
        idx = np.flatnonzero(fallback)
        out[idx] = solve_compiled(problem.take(idx), rtol=rtol, atol_factor=atol_factor, max_steps=max_steps,
                                  failures="nan", method=method)
        status = np.zeros(B, dtype=np.int64)
        status[idx] = solve_compiled.last_status
        if status.any() and failures == "raise":
            raise SolveFailure(status, out)
    return out


def _solve_block(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """The closed form for a block of patients, and the mask of those it cannot serve (to be integrated)."""
    A, hold = system_matrix(problem)
    lam, V = np.linalg.eig(A)
    ok = np.isfinite(lam).all(axis=1) & np.isfinite(V).all(axis=(1, 2))
    Vinv = np.zeros_like(V)
    cond = np.full(len(A), np.inf)
    if ok.any():
        # a singular V (a defective A) raises for the whole stack: invert one patient at a time where that happens
        try:
            Vinv[ok] = np.linalg.inv(V[ok])
        except np.linalg.LinAlgError:
            for i in np.flatnonzero(ok):
                try:
                    Vinv[i] = np.linalg.inv(V[i])
                except np.linalg.LinAlgError:
                    ok[i] = False
        norm1 = np.abs(V).sum(axis=1).max(axis=1) * np.abs(Vinv).sum(axis=1).max(axis=1)
        cond = np.where(ok, norm1, np.inf)
    good = ok & (cond <= COND_MAX)
    t_eval = np.asarray(problem.t_eval, dtype=float)

    def integrate(y, h_prev, seg, u, stops, out):
        tau = np.asarray(stops, dtype=float) - seg.t0  # (S,)
        z = lam[:, :, None] * tau[None, None, :]  # (B, n, S)
        Z = np.exp(z) * np.einsum("bij,bj->bi", Vinv, y)[:, :, None]
        u = np.where(hold[None, :], 0.0, np.broadcast_to(u, y.shape))
        if u.any():  # an infusion: the particular solution, phi = expm1(lambda tau) / lambda (tau at lambda = 0)
            d = np.einsum("bij,bj->bi", Vinv, u)[:, :, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                phi = np.where(lam[:, :, None] == 0, tau[None, None, :], np.expm1(z) / lam[:, :, None])
            Z += phi * d
        X = np.matmul(V, Z)  # (B, n, S); complex eigenpairs come in conjugate pairs: the sum is real
        X = X.real if np.iscomplexobj(X) else X
        X = X.transpose(0, 2, 1)  # (B, S, n)
        if hold.any():
            X[:, :, hold] = y[:, None, hold]
        cols = _stop_columns(t_eval, seg.out_idx, stops)
        which, slot = np.nonzero(cols >= 0)
        out[:, cols[which, slot]] = X[:, which]
        return X[:, -1].copy(), h_prev

    states = run_segments(problem, integrate)
    good &= np.isfinite(states).all(axis=(1, 2))
    return states, ~good
