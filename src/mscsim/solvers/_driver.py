"""The event loop shared by the batched solvers: walk the segments, apply doses, record, integrate.

A solver supplies only ``integrate(y, h_prev, seg, u, stops, out) -> (y, h_prev)``, which advances every
patient from ``seg.t0`` through the sorted ``stops`` (the segment's output times after t0, then t1) and
writes the outputs it lands on into ``out``.
"""

from __future__ import annotations

import numpy as np

from .problem import Problem


def run_segments(problem: Problem, integrate) -> np.ndarray:
    """States at ``problem.t_eval`` for every patient, shape (patients, times, states)."""
    B, n = problem.n_patients, problem.model.n_states
    t_eval = np.asarray(problem.t_eval, dtype=float)
    out = np.empty((B, len(t_eval), n))
    y = problem.initial_state()
    h_prev = np.full(B, np.nan)
    for seg in problem.segments():
        if seg.bolus is not None:
            y = y + seg.bolus
            h_prev = np.full(B, np.nan)  # the state jumped: choose the first step afresh
        if seg.t1 <= seg.t0:
            out[:, seg.out_idx] = y[:, None, :]
            continue
        u = np.zeros((B, n)) if seg.input is None else np.asarray(seg.input, dtype=float)
        stops = np.append(t_eval[seg.out_idx], seg.t1)
        stops = np.unique(stops[stops > seg.t0])
        record_at_start = seg.out_idx[t_eval[seg.out_idx] == seg.t0]
        if len(record_at_start):
            out[:, record_at_start] = y[:, None, :]
        y, h_prev = integrate(y, h_prev, seg, u, stops, out)
    return out
