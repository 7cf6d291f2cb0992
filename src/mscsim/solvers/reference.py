"""Reference solver: SciPy's implicit Radau, one patient at a time, tight tolerances.

Slow but trusted: every other solver is checked against it.
"""

from __future__ import annotations

import numpy as np

from ..errors import MscsimError
from .problem import Problem


def solve_reference(problem: Problem, *, rtol: float = 1e-10, atol_factor: float = 1e-12) -> np.ndarray:
    """Integrate each patient separately; returns states at ``t_eval``, shape (patients, times, states)."""
    from scipy.integrate import solve_ivp  # here, not at the top: scipy.integrate costs every process ~0.25 s

    model = problem.model
    B, n, T = problem.n_patients, model.n_states, len(problem.t_eval)
    t_eval = np.asarray(problem.t_eval, dtype=float)
    out = np.empty((B, T, n))
    segments = problem.segments()
    atols = problem.atol(atol_factor)
    free = (~problem.held()).astype(float)  # held states: zero derivative
    for i in range(B):
        p = problem.params[i:i + 1]
        y = problem.initial_state()[i].copy()
        atol = atols[i]
        for seg in segments:
            if seg.bolus is not None:
                y = y + seg.bolus[i]
            u = np.zeros(n) if seg.input is None else seg.input[i]
            ts = t_eval[seg.out_idx]
            if seg.t1 <= seg.t0:
                out[i, seg.out_idx] = y
                continue

            def fun(t, yy, p=p, u=u):
                return (model.rhs(yy[None, :], p)[0] + u) * free

            def jac(t, yy, p=p):
                return model.jac(yy[None, :], p)[0] * free[:, None]

            sol = solve_ivp(fun, (seg.t0, seg.t1), y, method="Radau", jac=jac, rtol=rtol, atol=atol,
                            t_eval=np.unique(np.append(ts, seg.t1)))
            if not sol.success:
                raise MscsimError(f"reference solver failed for patient {i} on [{seg.t0}, {seg.t1}] h: {sol.message}")
            lookup = {t: k for k, t in enumerate(sol.t)}
            for j, t in zip(seg.out_idx, ts):
                out[i, j] = sol.y[:, lookup[t]]
            y = sol.y[:, -1].copy()
    return out
