"""A batch of patients to integrate: model, parameters, initial state, dose events, infusions, output times.

Dosing is an event: solvers integrate to a dose time, add the dose, and go on. Infusions are constant
inputs over a window. The time axis is cut into segments at every event so each solver integrates a
smooth, autonomous system inside each segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MscsimError
from ..model.compiled import CompiledModel


@dataclass(frozen=True)
class Bolus:
    """Cells added at time ``t`` (hours): ``amount`` has shape (patients, states)."""

    t: float
    amount: np.ndarray


@dataclass(frozen=True)
class Infusion:
    """A constant input from ``t_start`` to ``t_end`` (hours); ``rate`` (patients, states) per hour."""

    t_start: float
    t_end: float
    rate: np.ndarray


@dataclass(frozen=True)
class Segment:
    t0: float
    t1: float
    bolus: np.ndarray | None  # added at t0, before integrating
    input: np.ndarray | None  # constant input over the segment
    out_idx: np.ndarray  # indices into t_eval with t0 <= t < t1 (or <= t1 for the last)


SIGNAL_ATOL = 1e-9  # absolute tolerance of signal states, relative to their declared typical magnitude


@dataclass(frozen=True)
class Problem:
    """Everything a solver needs to integrate a batch of independent patients."""

    model: CompiledModel
    params: np.ndarray  # (B, m) in internal units
    t_eval: np.ndarray  # (T,) hours, sorted, >= 0
    x0: np.ndarray | None = None  # (B, n), zeros by default
    boluses: tuple[Bolus, ...] = ()
    infusions: tuple[Infusion, ...] = ()
    scale: np.ndarray | None = None  # (B, n) typical magnitude of each state, for absolute tolerances
    baseline_method: np.ndarray | None = None  # (B,) how each patient's start state was found (a disease's chronic state)
    hold: np.ndarray | None = None  # (n,) bool: states held at their start values (their derivatives are zero)

    def held(self) -> np.ndarray:
        """The held-state mask (all False when none are held)."""
        n = self.model.n_states
        return np.zeros(n, dtype=bool) if self.hold is None else np.asarray(self.hold, dtype=bool)

    @property
    def n_patients(self) -> int:
        return self.params.shape[0]

    def take(self, rows) -> "Problem":
        """The same problem for a subset of its patients (``rows``: indices or a slice)."""
        def pick(a):
            return None if a is None else a[rows]

        return Problem(self.model, self.params[rows], self.t_eval, x0=pick(self.x0),
                       boluses=tuple(Bolus(b.t, b.amount[rows]) for b in self.boluses),
                       infusions=tuple(Infusion(i.t_start, i.t_end, i.rate[rows]) for i in self.infusions),
                       scale=pick(self.scale), baseline_method=pick(self.baseline_method), hold=self.hold)

    def initial_state(self) -> np.ndarray:
        n = self.model.n_states
        return np.zeros((self.n_patients, n)) if self.x0 is None else np.array(self.x0, dtype=float)

    def state_scale(self) -> np.ndarray:
        if self.scale is not None:
            return np.asarray(self.scale, dtype=float)
        total = sum((b.amount for b in self.boluses), np.zeros((self.n_patients, self.model.n_states)))
        for inf in self.infusions:
            total = total + inf.rate * (inf.t_end - inf.t_start)
        cells = self.model.cell_mask
        per_patient = np.maximum(total[:, cells].sum(axis=1, keepdims=True), 1.0)
        out = np.broadcast_to(per_patient, (self.n_patients, self.model.n_states)).copy()
        if not cells.all():  # signal states: their declared typical magnitude (or their dose, if larger)
            sig = np.maximum(self.model.signal_scale[None, ~cells], np.abs(total[:, ~cells]))
            out[:, ~cells] = sig
        return out

    def atol(self, atol_factor: float, signal_atol: float = SIGNAL_ATOL) -> np.ndarray:
        """Absolute tolerances (B, n): ``atol_factor`` x cells given for cell states; for signal states
        ``signal_atol`` x their typical magnitude (a signal decaying to nothing need not be tracked to 1e-13; a
        reference solution may ask for it)."""
        scale = self.state_scale()
        cells = self.model.cell_mask
        return np.where(cells[None, :], atol_factor * scale, max(atol_factor, signal_atol) * scale)

    def segments(self) -> list[Segment]:
        t_eval = np.asarray(self.t_eval, dtype=float)
        if t_eval.ndim != 1 or len(t_eval) == 0 or np.any(np.diff(t_eval) < 0) or t_eval[0] < 0:
            raise MscsimError("output times must be a non-empty, sorted list of times >= 0")
        t_end = float(t_eval[-1])
        cuts = {0.0, t_end}
        for b in self.boluses:
            if b.t > t_end:
                continue
            cuts.add(float(b.t))
        for inf in self.infusions:
            cuts.update(t for t in (inf.t_start, inf.t_end) if t <= t_end)
        cuts = sorted(cuts)
        segs = []
        for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            last = i == len(cuts) - 2
            bol = [x.amount for x in self.boluses if x.t == a]
            inp = [x.rate for x in self.infusions if x.t_start <= a and x.t_end >= b and x.t_end > x.t_start]
            mask = (t_eval >= a) & ((t_eval <= b) if last else (t_eval < b))
            segs.append(Segment(a, b, np.sum(bol, axis=0) if bol else None, np.sum(inp, axis=0) if inp else None,
                                np.nonzero(mask)[0]))
        final = [x.amount for x in self.boluses if x.t == t_end and (t_end > 0 or len(cuts) == 1)]
        if final or len(cuts) == 1:  # a dose at the last output time (or only t=0): right-continuous
            segs.append(Segment(t_end, t_end, np.sum(final, axis=0) if final else None, None,
                                np.nonzero(t_eval == t_end)[0]))
        return segs

    def administered(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Cells administered up to each output time, (B, T): the right-hand side of the mass balance (``mask``:
        the states to sum instead of the cells, e.g. an imaging label's)."""
        t = np.asarray(self.t_eval, dtype=float)
        mask = self.model.cell_mask if mask is None else mask
        out = np.zeros((self.n_patients, len(t)))
        for b in self.boluses:
            out += b.amount[:, mask].sum(axis=1)[:, None] * (t[None, :] >= b.t)
        for inf in self.infusions:
            dur = np.clip(t - inf.t_start, 0.0, inf.t_end - inf.t_start)
            out += inf.rate[:, mask].sum(axis=1)[:, None] * dur[None, :]
        return out
