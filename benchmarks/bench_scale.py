"""Patients per second and peak memory from 1e2 to 1e6 virtual patients, mscsim against the usual alternatives.

Run:  python benchmarks/bench_scale.py [--scenarios human_iv_2e6_per_kg knee_oa_ia_5e7]
          [--methods mscsim mscsim-jax roadrunner scipy diffrax] [--sizes 100 1000 10000 100000 1000000]
          [--max-seconds 300] [--days 365] [--chunk 4096] [--check 16] [--out benchmarks/results/scale]
          [--threads 1] [--jax-platform cpu|gpu|cuda]

Scenarios are bundled examples run for ``--days`` of follow-up (default one year) with between-patient
variability (``population.variability: true``). The knee-OA scenario is the 44-state tissue model: every
patient starts from their untreated chronic state. mscsim finds it as a user's run does (``Setup.problem``: the
stable steady state by pseudo-transient continuation in compiled code, integrating only where a patient has
none), inside its timed run. The other methods are given that same chronic state, computed by mscsim before
their clock starts (shown in their "setup s"): they integrate only the follow-up, so the comparison is of
integrators on the same problem, and mscsim's rows carry a cost theirs do not.

Methods, all at the same tolerances (rtol 1e-8, mscsim's per-state absolute tolerances) and the same patients:

- ``mscsim``: what a user's run does, chunk by chunk, on ``--threads`` threads: ``Setup.problem`` (parameter draws
  and the chronic state) then ``solve_compiled`` (the compiled engine: RODAS5P per patient in machine code,
  Numba), or, for a linear model (the human IV kinetics), ``solve_linear`` (the exact solution from each
  patient's eigendecomposition; RODAS5P for a patient whose eigenvectors are ill-conditioned).
- ``mscsim-integrated``: the compiled RODAS5P engine on a linear model too (the kinetics' integrator before
  ``solve_linear``; not run on a nonlinear model, where it is ``mscsim``).
- ``mscsim-rodas4``: ``mscsim`` with RODAS4 (``solver.method: rodas4``, the engine's method before 2026-12-07) in
  place of RODAS5P; on a linear model, the compiled RODAS4 engine (as ``mscsim-integrated``).
- ``mscsim-numpy``: ``Setup.problem`` then ``solve_batched`` (the same RODAS5P in NumPy, vectorised over the
  patients of a chunk): the engine before it was compiled.
- ``mscsim-jax``: ``solve_jax`` (the same RODAS5P in one jitted JAX loop) for the follow-up.
- ``roadrunner``: libRoadRunner (CVODE) running the exported SBML (``mscsim.io.sbml``) one patient at a time;
  before each run the patient's parameters and starting state are set on the model (vectorised setters,
  then ``reset()`` so the dose events fire on that state).
- ``scipy``: ``scipy.integrate.solve_ivp`` one patient at a time, a stiff method (``--scipy-method``, BDF by
  default) with the model's analytic Jacobian and its generated right-hand side.
- ``diffrax``: ``jax.vmap`` of diffrax ``Kvaerno5`` with a PID controller over the patients of a chunk, on the
  same generated right-hand side called with ``xp = jax.numpy`` (the JAX device: CPU here, a GPU elsewhere).

Each measurement (one method, one cohort size) runs in a fresh subprocess; its peak memory is that process's
peak resident set (``os.wait4``), so measurements do not bleed into each other. "seconds" is the wall time
from the first patient to the last (parameter draws, mscsim's chronic state, follow-up); one-time costs that do not grow
with the cohort (SymPy compilation of the model, SBML export and libRoadRunner's JIT compilation, JAX
tracing and XLA compilation, timed by JAX's own compile events; XLA executables go to a persistent cache shared
by the run's measurements, so a shape compiled once is loaded after) are shown apart as "setup s". Outputs are
computed at every output time for every patient and discarded chunk by chunk, except the first ``--check``
patients, which are compared with mscsim's own solver (as ``mscsim``) on the same patients: the largest
|a - b| / (|b| + 1e-6 scale) over those patients, output times and states, with the scale per state as in
tests/test_solvers.py (the cells given; ten times a signal's typical magnitude). mscsim's own row must show 0:
a patient's numbers do not depend on the batch it is solved in.

Sizes run in increasing order. After each measurement a method's time at the next size is predicted from its
largest completed one (in proportion to the patients); a size predicted to take longer than ``--max-seconds``
is not run ("not run: would take ~X s"), and a run that passes ``--max-seconds`` stops after the chunk or
patient in progress, reporting the rate it reached ("stopped: ..."). So slow methods are measured at the
largest size that fits, and a GPU machine can take the JAX paths to 1e6 with
``--methods mscsim-jax diffrax --jax-platform cuda``.

Writes ``<out>.json`` (machine, versions, date, every measurement) and ``<out>.csv``, and prints a Markdown
table per scenario. The BLAS (and XLA's CPU) threads are limited to ``--threads`` in every measurement.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

RTOL, ATOL_FACTOR = 1e-8, 1e-13
METHODS = ("mscsim", "mscsim-integrated", "mscsim-rodas4", "mscsim-burnin", "mscsim-numpy", "mscsim-jax", "roadrunner",
           "roadrunner-burnin", "scipy", "diffrax")
JAX_METHODS = ("mscsim-jax", "diffrax")
BURN_IN_METHODS = ("mscsim-burnin", "roadrunner-burnin")  # integrate the untreated 1,000 days, then the follow-up
DAYS = {"human_iv_2e6_per_kg": 28.0}  # follow-up per scenario unless --days says otherwise (others: one year)
LABELS = {"mscsim": "mscsim, as a user's run (compiled RODAS5P, Numba; exact solution for a linear model)",
          "mscsim-integrated": "mscsim solve_compiled (compiled RODAS5P, Numba) on the linear model",
          "mscsim-rodas4": "mscsim with RODAS4 (compiled, Numba; the method before 2026-12-07)",
          "mscsim-burnin": "mscsim solve_compiled, 1,000-day burn-in integrated",
          "roadrunner-burnin": "libRoadRunner (CVODE), 1,000-day burn-in integrated",
          "mscsim-numpy": "mscsim solve_batched (NumPy RODAS5P)", "mscsim-jax": "mscsim solve_jax (JAX RODAS5P)",
          "roadrunner": "libRoadRunner (CVODE), one patient at a time",
          "scipy": "SciPy solve_ivp({scipy_method}), one patient at a time",
          "diffrax": "diffrax vmap(Kvaerno5)+PID"}


# ----------------------------------------------------------------------------------------------------------------------
# the measurement process


def scenario_setup(name: str, n: int, days: float, rtol: float, baseline: str = "steady_state",
                   method: str = "rodas5p"):
    """The bundled example ``name`` with ``n`` variable patients and ``days`` of follow-up, resolved; ``baseline``
    is how the chronic state is found (``integration``: the untreated disease integrated for 1,000 days);
    ``method`` the Rosenbrock method."""
    import yaml

    from mscsim import scenario_from_dict
    from mscsim.analysis.validation import EXAMPLES
    from mscsim.simulation import resolve_setup

    data = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    data["population"] = {"size": n, "variability": True}
    data["duration_days"] = days
    data["solver"] = {**(data.get("solver") or {}), "rtol": rtol, "baseline": baseline, "method": method}
    return resolve_setup(scenario_from_dict(data))


def unburnt_problem(setup, start: int, count: int):
    """``Setup.problem`` without the chronic state: the same patients, doses and output times, starting from the
    declared start values (see ``given_start``)."""
    from dataclasses import fields

    from mscsim.simulation import Setup

    class Unburnt(Setup):
        def chronic_state(self, P):
            return None

    return Unburnt(**{f.name: getattr(setup, f.name) for f in fields(Setup)}).problem(start, count)


def chronic_starts(setup, n: int) -> np.ndarray | None:
    """Every patient's untreated chronic state as mscsim finds it (None for the kinetics-only model): the start
    state the other methods are given (see the module's docstring)."""
    if not setup.has_tissue:
        return None
    P = unburnt_problem(setup, 0, n).params
    return setup.chronic_state(P)[0]


def given_start(prob, starts, start: int, count: int):
    """``prob`` starting from the given chronic states of its patients (unchanged for the kinetics model)."""
    from dataclasses import replace

    return prob if starts is None else replace(prob, x0=starts[start:start + count])


class Mscsim:
    """Setup.problem (draws + chronic state) and solve_compiled, per chunk. ``mscsim-burnin``: the scenario's
    ``solver.baseline: integration``, so the chronic state is the untreated disease integrated for 1,000 days.
    ``mscsim-rodas4``: the same with RODAS4 (an integrated linear model too)."""

    batched = True

    def __init__(self, setup, args):
        from mscsim.solvers.compiled import kernels

        self.method = "rodas4" if args["method"] == "mscsim-rodas4" else "rodas5p"
        if args["method"] in ("mscsim-burnin", "mscsim-rodas4"):
            baseline = "integration" if args["method"] == "mscsim-burnin" else "steady_state"
            setup = scenario_setup(args["scenario"], args["n"], args["days"], args["rtol"], baseline, self.method)
        self.setup, self.rtol = setup, args["rtol"]
        kernels(setup.model, self.method)  # load the compiled engine (from the disk cache) before the clock starts
        kernels(setup.model)  # the steady-state search's
        if setup.model.linear:  # the integrator's machine code loaded (or compiled, once) outside the clock too
            from mscsim.solvers.compiled import solve_compiled

            solve_compiled(setup.problem(0, 1), rtol=self.rtol, atol_factor=ATOL_FACTOR, method=self.method)

    def run(self, start, count, deadline):
        if self.method == "rodas4" and self.setup.model.linear:
            return MscsimIntegrated.run(self, start, count, deadline)
        return own_solver(self.setup.problem(start, count), self.rtol, self.method)


class MscsimIntegrated(Mscsim):
    """The compiled engine on a linear model (``mscsim`` solves it exactly)."""

    def run(self, start, count, deadline):
        from mscsim.solvers.compiled import solve_compiled

        return solve_compiled(self.setup.problem(start, count), rtol=self.rtol, atol_factor=ATOL_FACTOR,
                              method=self.method)


def own_solver(prob, rtol, method="rodas5p"):
    """The solver a user's run takes (``mscsim.simulation.solve``): exact for a linear model, else the compiled
    Rosenbrock engine."""
    from mscsim.solvers.compiled import solve_compiled
    from mscsim.solvers.linear import solve_linear

    engine = solve_linear if prob.model.linear else solve_compiled
    return engine(prob, rtol=rtol, atol_factor=ATOL_FACTOR, method=method)


class MscsimNumpy:
    """Setup.problem (draws + chronic state) and solve_batched (NumPy), per chunk."""

    batched = True

    def __init__(self, setup, args):
        self.setup, self.rtol = setup, args["rtol"]

    def run(self, start, count, deadline):
        from mscsim.solvers.batched import solve_batched

        prob = self.setup.problem(start, count)
        return solve_batched(prob, rtol=self.rtol, atol_factor=ATOL_FACTOR)


class MscsimJax:
    """solve_jax for the follow-up from the given chronic state (chunks padded to a power-of-two bucket)."""

    batched = True

    def __init__(self, setup, args):
        from dataclasses import replace

        from mscsim.solvers.jax_solver import solve_jax

        self.setup, self.rtol, self.chunk = setup, args["rtol"], args["chunk"]
        self.solve, self.replace = solve_jax, replace
        self.starts = chronic_starts(setup, args["n"])

    def run(self, start, count, deadline):
        prob = given_start(unburnt_problem(self.setup, start, count), self.starts, start, count)
        return self.solve(prob, rtol=self.rtol, atol_factor=ATOL_FACTOR, max_chunk=self.chunk)


class RoadRunner:
    """libRoadRunner on the exported SBML, one patient at a time, parameters and start state set per patient.
    ``roadrunner-burnin``: each patient first integrates the untreated disease for 1,000 days from the declared
    start values (a copy of the SBML without the dose events, the states mscsim holds during the burn-in made
    boundary species), and the follow-up starts from where that ends, cells set to 0, as mscsim's own
    ``solver.baseline: integration`` does."""

    batched = False

    def __init__(self, setup, args):
        import libsbml
        import roadrunner

        from mscsim.io.sbml import exported_problem, sbml_document
        from mscsim.model.units import is_concentration

        roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)
        self.setup, self.rtol = setup, args["rtol"]
        model = setup.model
        text = sbml_document(setup)
        self.exported = exported_problem(setup)  # the patient the SBML's dose events were written for
        self.rr = roadrunner.RoadRunner(text)
        self.names = list(model.state_names)
        self.conc = np.array([is_concentration(model.model.state(s).units) for s in self.names])
        self.starts = chronic_starts(setup, args["n"])
        for rr in (self.rr,):
            rr.timeCourseSelections = ["time"] + [f"[{s}]" if c else s for s, c in zip(self.names, self.conc)]
        ids = list(self.rr.model.getGlobalParameterIds())
        missing = [p for p in model.param_names if p not in ids]
        if missing:
            raise RuntimeError(f"SBML lacks the model parameters {missing}")
        # the model's parameters, then those the dose events change (infusion rates) at their document values:
        # resetAll() fires the t = 0 events once and reset() fires them again, so those must be put back between
        doc = libsbml.readSBMLFromString(text)
        ruled = {r.getVariable() for r in doc.getModel().getListOfRules()}
        doc_values = {p.getId(): p.getValue() for p in doc.getModel().getListOfParameters()
                      if not p.getConstant() and p.getId() not in ruled}
        changed = [p for p in ids if p in doc_values and p not in model.param_names]
        self.pidx = np.array([ids.index(p) for p in list(model.param_names) + changed], dtype=np.int32)
        self.pextra = np.array([doc_values[p] for p in changed], dtype=float)
        species = list(self.rr.model.getFloatingSpeciesIds())
        self.sidx = np.array([species.index(s) for s in self.names], dtype=np.int32)
        self.tol_set = {}
        self.burn = None
        if args["method"] == "roadrunner-burnin" and setup.has_tissue:
            self.starts = None
            self.burn = self._burn_in_model(doc, model, changed)

    def _burn_in_model(self, doc, model, changed):
        """The untreated model: the SBML without its dose events, held states as boundary species."""
        import libsbml
        import roadrunner

        m = doc.getModel()
        while m.getNumEvents():
            m.removeEvent(0)
        hold = model.chronic_hold_mask
        for name, held in zip(self.names, hold):
            if held:
                m.getSpecies(name).setBoundaryCondition(True)
        rr = roadrunner.RoadRunner(libsbml.writeSBMLToString(doc))
        rr.timeCourseSelections = ["time"] + [f"[{s}]" if c else s for s, c in zip(self.names, self.conc)]
        ids = list(rr.model.getGlobalParameterIds())
        pidx = np.array([ids.index(p) for p in list(model.param_names) + changed], dtype=np.int32)
        floating = list(rr.model.getFloatingSpeciesIds())
        return {"rr": rr, "pidx": pidx, "hold": hold,
                "float": np.array([floating.index(s) for s, h in zip(self.names, hold) if not h], dtype=np.int32),
                "held": [(s, bool(self.conc[i]), i) for i, (s, h) in enumerate(zip(self.names, hold)) if h]}

    def _burn_in(self, p, x0, atol):
        """One patient's untreated chronic state: 1,000 days from the declared start, cells 0."""
        from mscsim.simulation import BURN_IN_DAYS

        b = self.burn
        rr, m, hold = b["rr"], b["rr"].model, b["hold"]
        self._tolerances(rr, self.rtol, atol, skip=hold)  # boundary species are not integrated
        rr.resetAll()
        m.setGlobalParameterValues(b["pidx"], np.concatenate([p, self.pextra]))
        free, c, fidx = ~hold, self.conc, b["float"]
        for setter, idx, values in ((m.setFloatingSpeciesInitConcentrations, fidx[c[free]], x0[free & c]),
                                    (m.setFloatingSpeciesInitAmounts, fidx[~c[free]], x0[free & ~c])):
            if idx.size:  # the setters refuse empty arrays
                setter(idx, np.ascontiguousarray(values, dtype=float))
        for name, conc, value in b["held"]:  # constant, at the start value (the vector setters lack a Python binding)
            m.setValue(f"init([{name}])" if conc else f"init({name})", float(x0[value]))
        rr.reset()
        end = np.asarray(rr.simulate(0.0, BURN_IN_DAYS * 24.0, 2))[-1, 1:]
        x = np.where(hold, x0, end)
        x[self.setup.model.cell_mask] = 0.0
        return x

    def _tolerances(self, rr, rtol, atol, skip=None):
        """Set ``rr``'s tolerances unless already set to these (``skip``: a mask of states it does not integrate)."""
        key = (id(rr), rtol, atol.tobytes())
        if self.tol_set.get(id(rr)) != key:
            rr.integrator.relative_tolerance = rtol
            for k, (s, a) in enumerate(zip(self.names, atol)):
                if skip is None or not skip[k]:
                    rr.integrator.setIndividualTolerance(s, float(a))
            self.tol_set[id(rr)] = key

    def _simulate(self, rr, p, x0, times):
        m = rr.model
        rr.resetAll()  # parameters (infusion rates too) back to the document's values, time to 0
        m.setGlobalParameterValues(self.pidx, np.concatenate([p, self.pextra]))
        c = self.conc
        m.setFloatingSpeciesInitConcentrations(self.sidx[c], x0[c])
        m.setFloatingSpeciesInitAmounts(self.sidx[~c], x0[~c])
        rr.reset()  # species to their (new) initial values; dose events at t = 0 fire on them
        return np.asarray(rr.simulate(times=times))

    def run(self, start, count, deadline):
        prob = given_start(unburnt_problem(self.setup, start, count), self.starts, start, count)
        check_doses_match(prob, self.exported)
        P, t = prob.params, np.asarray(prob.t_eval, dtype=float)
        atol = prob.atol(ATOL_FACTOR)
        x0 = self.setup.model.initial_signals(P) if self.burn else prob.initial_state()
        out = np.empty((count, len(t), len(self.names)))
        for i in range(count):
            start_i = self._burn_in(P[i], x0[i], atol[i]) if self.burn else x0[i]
            self._tolerances(self.rr, self.rtol, atol[i])
            res = self._simulate(self.rr, P[i], start_i, t)
            out[i] = res[:, 1:]
            if time.perf_counter() > deadline:
                return out[:i + 1]
        return out


def check_doses_match(prob, exported) -> None:
    """The SBML's dose events are the exported patient's: every patient here must get the same doses."""
    same = all(np.all(b.amount == e.amount[0]) for b, e in zip(prob.boluses, exported.boluses)) and \
        all(np.all(i.rate == e.rate[0]) for i, e in zip(prob.infusions, exported.infusions)) and \
        len(prob.boluses) == len(exported.boluses) and len(prob.infusions) == len(exported.infusions)
    if not same:
        raise RuntimeError("patients' doses differ from the exported patient's; the SBML baseline needs one dose")


class Scipy:
    """solve_ivp per patient and segment, stiff method, analytic Jacobian, the generated right-hand side."""

    batched = False

    def __init__(self, setup, args):
        self.setup, self.rtol, self.method = setup, args["rtol"], args["scipy_method"]
        self.starts = chronic_starts(setup, args["n"])

    def _solve(self, p, y, segments, t_eval, atol, rtol, out):
        from scipy.integrate import solve_ivp

        model = self.setup.model
        n = model.n_states
        rows, cols = model.jac_rows, model.jac_cols
        P = p[None, :]

        def jac(t, yy, u):
            J = np.zeros((n, n))
            J[rows, cols] = model.jac_values(yy[None, :], P)[0]
            return J

        def fun(t, yy, u):
            return model.rhs(yy[None, :], P)[0] + u

        for seg in segments:
            if seg.bolus is not None:
                y = y + seg.bolus
            ts = t_eval[seg.out_idx]
            if seg.t1 <= seg.t0:
                out[seg.out_idx] = y
                continue
            u = np.zeros(n) if seg.input is None else seg.input
            te = np.unique(np.append(ts, seg.t1))
            sol = solve_ivp(fun, (seg.t0, seg.t1), y, method=self.method, jac=jac, rtol=rtol, atol=atol, t_eval=te,
                            args=(u,))
            if not sol.success:
                raise RuntimeError(f"solve_ivp failed on [{seg.t0}, {seg.t1}] h: {sol.message}")
            out[seg.out_idx] = sol.y.T[np.searchsorted(te, ts)]
            y = sol.y[:, -1].copy()
        return y

    def run(self, start, count, deadline):
        from types import SimpleNamespace

        prob = given_start(unburnt_problem(self.setup, start, count), self.starts, start, count)
        P, t = prob.params, np.asarray(prob.t_eval, dtype=float)
        atol, x0 = prob.atol(ATOL_FACTOR), prob.initial_state()
        segs = prob.segments()
        out = np.empty((count, len(t), self.setup.model.n_states))
        for i in range(count):
            def mine(ss):  # patient i's slice of each segment's dose and input
                return [SimpleNamespace(t0=s.t0, t1=s.t1, out_idx=s.out_idx,
                                        bolus=None if s.bolus is None else s.bolus[i],
                                        input=None if s.input is None else s.input[i]) for s in ss]

            self._solve(P[i], x0[i], mine(segs), t, atol[i], self.rtol, out[i])
            if time.perf_counter() > deadline:
                return out[:i + 1]
        return out


class Diffrax:
    """vmap over a chunk's patients of diffrax Kvaerno5 + PID controller; segments (doses) handled in Python.
    Each chunk is padded to the chunk size (copies of its first patient) so that every chunk reuses one
    compilation."""

    batched = True

    def __init__(self, setup, args):
        import diffrax
        import jax

        from mscsim.solvers import jax_solver  # noqa: F401 - enables float64 in JAX

        import jax.numpy as jnp

        _equinox_weakref_workaround()

        self.setup, self.rtol, self.chunk = setup, args["rtol"], args["chunk"]
        self.starts = chronic_starts(setup, args["n"])
        self.jax, self.jnp, self.dfx = jax, jnp, diffrax
        ns: dict = {}
        exec(compile(setup.model.source, "<mscsim model (diffrax)>", "exec"), ns)  # noqa: S102 - our own codegen
        rhs = ns["rhs"]
        self.term = diffrax.ODETerm(lambda t, y, args: rhs(jnp, y, args[0]) + args[1])
        self.cache = {}

    def _fn(self, rtol, n_out):
        key = (rtol, n_out)
        if key not in self.cache:
            dfx, jax = self.dfx, self.jax
            term, solver = self.term, self.dfx.Kvaerno5()

            def one(y0, p, u, atol, t0, t1, ts):
                ctrl = dfx.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.3)
                sol = dfx.diffeqsolve(term, solver, t0, t1, None, y0, args=(p, u), saveat=dfx.SaveAt(ts=ts),
                                      stepsize_controller=ctrl, max_steps=200_000)
                return sol.ys

            self.cache[key] = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None, None)))
        return self.cache[key]

    def _solve(self, prob, rtol):
        jnp = self.jnp
        B, n = prob.n_patients, prob.model.n_states
        size = max(self.chunk, B)
        pad = lambda a: np.concatenate([a, np.repeat(a[:1], size - B, axis=0)])  # noqa: E731
        t_eval = np.asarray(prob.t_eval, dtype=float)
        out = np.empty((B, len(t_eval), n))
        y = prob.initial_state()
        atol = jnp.asarray(pad(prob.atol(ATOL_FACTOR)))
        P = jnp.asarray(pad(prob.params))
        for seg in prob.segments():
            if seg.bolus is not None:
                y = y + seg.bolus
            if seg.t1 <= seg.t0:
                out[:, seg.out_idx] = y[:, None, :]
                continue
            u = np.zeros((B, n)) if seg.input is None else np.asarray(seg.input, dtype=float)
            at_start = seg.out_idx[t_eval[seg.out_idx] == seg.t0]
            out[:, at_start] = y[:, None, :]
            later = seg.out_idx[t_eval[seg.out_idx] > seg.t0]
            ts = np.append(t_eval[later], seg.t1)
            ys = np.asarray(self._fn(rtol, len(ts))(jnp.asarray(pad(y)), P, jnp.asarray(pad(u)), atol,
                                                     float(seg.t0), float(seg.t1), jnp.asarray(ts)))[:B]
            out[:, later] = ys[:, :-1]
            y = ys[:, -1]
        return out

    def run(self, start, count, deadline):
        prob = given_start(unburnt_problem(self.setup, start, count), self.starts, start, count)
        return self._solve(prob, self.rtol)


def _equinox_weakref_workaround() -> None:
    """JAX 0.7.0/0.7.1 weak-references primitive parameters, which equinox <= 0.13.0's internal ``Flatten`` does not
    allow ("cannot create weak reference to 'Flatten' object" from every implicit diffrax solver; equinox issue
    #1114; later equinox releases exclude those JAX versions). Give the class a weakref slot."""
    import equinox.internal._primitive as prim

    if not hasattr(prim.Flatten, "__weakref__"):
        class Flatten(prim.Flatten):
            __slots__ = ("__weakref__",)

        prim.Flatten = Flatten


RUNNERS = {"mscsim": Mscsim, "mscsim-integrated": MscsimIntegrated, "mscsim-rodas4": Mscsim, "mscsim-burnin": Mscsim,
           "mscsim-numpy": MscsimNumpy, "mscsim-jax": MscsimJax,
           "roadrunner": RoadRunner, "roadrunner-burnin": RoadRunner, "scipy": Scipy, "diffrax": Diffrax}


class CompileClock:
    """Wall time spent in JAX tracing, lowering and XLA compilation (the union of JAX's compile-event spans, so
    nested traces are not counted twice)."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.spans: list[tuple[float, float]] = []
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event, duration, **kwargs):
        if event in self.EVENTS:
            end = time.perf_counter()
            self.spans.append((end - duration, end))

    def seconds(self, since: float = -math.inf) -> float:
        total, reach = 0.0, since
        for a, b in sorted(self.spans):
            a = max(a, reach)
            if b > a:
                total += b - a
                reach = b
        return total


def measure(task: dict) -> dict:
    """One measurement (in its own process): ``task`` names scenario, method, patients, chunk, tolerances."""
    t_setup = time.perf_counter()
    clock = None
    if task["method"] in JAX_METHODS:
        import jax

        if task.get("jax_cache"):  # XLA executables persist across this run's measurements (one compile per shape)
            jax.config.update("jax_compilation_cache_dir", task["jax_cache"])
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        clock = CompileClock()
    setup = scenario_setup(task["scenario"], task["n"], task["days"], task["rtol"])
    n, check = task["n"], min(task["check"], task["n"])
    chunk = min(task["chunk"], n)  # a cohort smaller than a chunk is one batch of its own size
    runner = RUNNERS[task["method"]](setup, dict(task, chunk=chunk))
    kept = []
    t0 = time.perf_counter()
    setup_s = t0 - t_setup
    deadline = t0 + task["max_seconds"]
    done = 0
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        out = runner.run(start, count, deadline)
        if done < check:
            kept.append(np.array(out[:check - done]))
        done += out.shape[0]
        del out
        if time.perf_counter() > deadline and done < n:
            break
    wall = time.perf_counter() - t0
    compile_s = clock.seconds(since=t0) if clock else 0.0
    result = {"patients_done": done, "wall_s": wall, "compile_s": compile_s, "run_s": wall - compile_s,
              "setup_s": setup_s + compile_s}
    if clock:
        import jax

        d = jax.devices()[0]
        result["device"] = f"{d.platform}: {getattr(d, 'device_kind', d)}"
    np.save(task["check_file"], np.concatenate(kept) if kept else np.empty((0,)))
    return result


def state_scale(setup, prob) -> np.ndarray:
    """Each state's floor in "max rel. diff": the cells given for cell states, ten times a signal's typical
    magnitude."""
    return np.where(setup.model.cell_mask, prob.administered().max(), 10.0 * setup.model.signal_scale)


def reference(task: dict) -> dict:
    """mscsim's own solver on the first ``check`` patients (the yardstick), with each state's scale."""
    for baseline, file in (("steady_state", task["check_file"]), ("integration", task["burn_check_file"])):
        setup = scenario_setup(task["scenario"], task["check"], task["days"], task["rtol"], baseline)
        prob = setup.problem(0, task["check"])
        out = own_solver(prob, task["rtol"])
        np.save(file, out)
    np.save(task["scale_file"], state_scale(setup, prob))
    return {"n_states": setup.model.n_states, "n_times": len(prob.t_eval), "burn_in": setup.has_tissue,
            "linear": setup.model.linear}


def child_main(task_file: str) -> None:
    task = json.loads(Path(task_file).read_text())
    try:
        result = reference(task) if task["method"] == "reference" else measure(task)
        result["status"] = "ok"
    except Exception as exc:  # reported in the table, the other measurements go on
        import traceback

        result = {"status": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(task["result_file"]).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------------------------------
# the driver


def child_env(threads: int, jax_platform: str | None) -> dict:
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = str(threads)  # the compiled engine's threads over patient slices
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    if jax_platform:
        env["JAX_PLATFORMS"] = jax_platform
    return env


def run_child(task: dict, workdir: Path, env: dict, hard_limit: float) -> tuple[dict, float, float]:
    """Run one task in a fresh interpreter; returns (result, peak RSS in MiB, wall seconds of the process)."""
    tag = f"{task['scenario']}-{task['method']}-{task['n']}"
    task = dict(task, result_file=str(workdir / f"{tag}.json"))
    task_file = workdir / f"{tag}.task.json"
    task_file.write_text(json.dumps(task))
    log = open(workdir / f"{tag}.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(task_file)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    killed = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > hard_limit and not killed:
            proc.kill()
            killed = True
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    wall = time.perf_counter() - t0
    rss_mib = usage.ru_maxrss / 1024.0  # Linux: KiB
    path = Path(task["result_file"])
    if killed:
        result = {"status": "killed", "message": f"killed after {wall:.0f} s (hard limit)"}
    elif path.exists():
        result = json.loads(path.read_text())
    else:
        tail = (workdir / f"{tag}.log").read_text()[-2000:]
        result = {"status": "error", "message": f"exit status {proc.returncode}: {tail.strip()[-300:]}"}
    return result, rss_mib, wall


def max_rel_diff(got: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> float:
    k = min(len(got), len(ref))
    if k == 0 or got.ndim != 3:
        return float("nan")
    a, b = got[:k], ref[:k]
    return float((np.abs(a - b) / (np.abs(b) + 1e-6 * scale)).max())


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 ** 2:.1f} GiB"
    except OSError:
        pass
    versions = {}
    for pkg in ("mscsim", "numpy", "scipy", "sympy", "jax", "jaxlib", "libroadrunner", "diffrax", "equinox"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "memory": mem, "os": platform.platform(),
            "python": platform.python_version(), "versions": versions,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def fmt_s(x: float) -> str:
    return "" if x is None or not math.isfinite(x) else (f"{x:.3g}" if x < 10 else f"{x:,.0f}")


def fmt_rate(x: float) -> str:
    if x is None or not math.isfinite(x):
        return ""
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def markdown(rows: list[dict], scenario: str, meta: dict) -> str:
    head = (f"\n{scenario}: {meta.get('n_states')} states, {meta.get('n_times')} output times, "
            f"{meta.get('days'):g} days{', from the chronic state' if meta.get('burn_in') else ''}\n\n"
            "| method | patients | seconds | patients/s | peak memory | max rel. diff | setup s | note |\n"
            "|---|---:|---:|---:|---:|---:|---:|---|\n")
    lines = []
    for r in rows:
        if r["scenario"] != scenario:
            continue
        mem = f"{r['peak_mib']:,.0f} MiB" if r.get("peak_mib") else ""
        diff = "" if r.get("max_rel_diff") is None or not math.isfinite(r["max_rel_diff"]) else \
            f"{r['max_rel_diff']:.1e}"
        lines.append(f"| {r['label']} | {r['n']:,} | {fmt_s(r.get('seconds'))} | {fmt_rate(r.get('patients_per_s'))} | "
                     f"{mem} | {diff} | {fmt_s(r.get('setup_s'))} | {r.get('note', '')} |")
    return head + "\n".join(lines) + "\n"


# (ours, theirs, what the ratio means, target) for the README's table; targets from the engine's issue
RATIOS = (
    ("mscsim-burnin", "roadrunner-burnin", "same work: both integrate the 1,000-day burn-in, then the follow-up", 5.0),
    ("mscsim", "roadrunner-burnin", "end to end: mscsim's steady-state start against libRoadRunner's burn-in", 20.0),
    ("mscsim", "roadrunner", "mscsim (steady state inside its clock) against libRoadRunner given that state", None),
    ("mscsim", "mscsim-numpy", "the compiled engine against the same RODAS5P in NumPy", None),
    ("mscsim", "mscsim-rodas4", "RODAS5P against RODAS4 in the compiled engine (the method before 2026-12-07)", None),
    ("mscsim-integrated", "roadrunner", "the compiled RODAS5P engine on the kinetics against libRoadRunner", None),
    ("mscsim-integrated", "mscsim-rodas4", "RODAS5P against RODAS4 in the compiled engine, on the kinetics", None),
    ("mscsim", "mscsim-integrated", "the exact solution against the compiled RODAS5P engine", None),
    ("mscsim", "scipy", "against SciPy solve_ivp", None),
    ("mscsim", "diffrax", "against diffrax vmap(Kvaerno5)", None),
    ("mscsim-jax", "diffrax", "mscsim's JAX solver against diffrax on the same device", None),
    ("mscsim-jax", "roadrunner", "mscsim's JAX solver against libRoadRunner", None),
)
KINETICS_TARGET = 10.0  # human IV: mscsim against libRoadRunner


def speedups(rows: list[dict], scenario: str, burn_in: bool = True) -> list[str]:
    """The ratios of patients/s at each method's largest completed cohort, with the target where there is one."""
    best = {}
    for r in rows:
        if r["scenario"] == scenario and r.get("status") == "ok" and r.get("patients_per_s"):
            if r["method"] not in best or r["n"] >= best[r["method"]]["n"]:
                best[r["method"]] = r
    lines = []
    for ours, theirs, what, target in RATIOS:
        if ours in best and theirs in best:
            if not burn_in and ours == "mscsim" and theirs == "roadrunner":
                what, target = "the kinetics: mscsim against libRoadRunner", KINETICS_TARGET
            if not burn_in and ours == "mscsim" and theirs == "mscsim-numpy":
                what = "the exact solution against the same model's RODAS5P in NumPy"
            if not burn_in and ours == "mscsim" and theirs == "mscsim-rodas4":
                continue  # the kinetics: mscsim-integrated / mscsim-rodas4 is the methods' comparison
            a, b = best[ours], best[theirs]
            ratio = a["patients_per_s"] / b["patients_per_s"]
            goal = "" if target is None else f"; target {target:g}x: {'met' if ratio >= target else 'NOT met'}"
            lines.append(f"{ours} / {theirs}: {ratio:.1f}x ({what}; {fmt_rate(a['patients_per_s'])} patients/s at "
                         f"{a['n']:,} vs {fmt_rate(b['patients_per_s'])} at {b['n']:,}{goal})")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--scenarios", nargs="+", default=["human_iv_2e6_per_kg", "knee_oa_ia_5e7"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e2, 1e3, 1e4, 1e5, 1e6])
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="time budget of one measurement: larger sizes predicted to exceed it are not run")
    ap.add_argument("--days", type=float, default=None,
                    help="follow-up (duration_days); default 28 days for human IV, one year for the others")
    ap.add_argument("--chunk", type=int, default=4096, help="patients per batch (batched methods)")
    ap.add_argument("--check", type=int, default=16, help="patients compared with mscsim's batched solver")
    ap.add_argument("--rtol", type=float, default=RTOL)
    ap.add_argument("--scipy-method", default="BDF", choices=["BDF", "Radau", "LSODA"])
    ap.add_argument("--threads", type=int, default=1, help="BLAS / XLA CPU threads per measurement")
    ap.add_argument("--jax-platform", default=None, help="JAX_PLATFORMS for the JAX methods (cpu, cuda, ...)")
    ap.add_argument("--jax-cache", default=None,
                    help="persistent JAX compilation cache directory (default: one for this run, so each shape is "
                         "compiled once and later measurements load it)")
    ap.add_argument("--out", default="benchmarks/results/scale", help="writes <out>.json and <out>.csv")
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return

    info = machine()
    info["settings"] = {k: v for k, v in vars(args).items() if k != "child"}
    print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['memory']}, {info['os']}, "
          f"Python {info['python']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
    print(f"date: {info['date']}; threads per measurement: {args.threads}; max {args.max_seconds:g} s per "
          f"measurement", flush=True)
    sizes = sorted({int(s) for s in args.sizes})
    env = child_env(args.threads, None)
    jax_env = child_env(args.threads, args.jax_platform)
    rows, metas = [], {}
    hard = 3 * args.max_seconds + 600
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        for scenario in args.scenarios:
            days = args.days if args.days is not None else DAYS.get(scenario, 365.0)
            base = {"scenario": scenario, "days": days, "rtol": args.rtol, "chunk": args.chunk,
                    "check": args.check, "max_seconds": args.max_seconds, "scipy_method": args.scipy_method,
                    "jax_cache": args.jax_cache or str(work / "jax_cache")}
            ref_task = dict(base, method="reference", n=args.check, check_file=str(work / f"{scenario}-ref.npy"),
                            burn_check_file=str(work / f"{scenario}-ref-burn.npy"),
                            scale_file=str(work / f"{scenario}-scale.npy"))
            res, _, wall = run_child(ref_task, work, env, hard)
            if res["status"] == "ok":
                ref, scale = np.load(ref_task["check_file"]), np.load(ref_task["scale_file"])
                ref_burn = np.load(ref_task["burn_check_file"])
                metas[scenario] = dict(res, days=days)
                print(f"\n{scenario}: reference ({args.check} patients, mscsim batched) in {wall:.0f} s", flush=True)
            else:
                ref = ref_burn = scale = None
                metas[scenario] = {"days": days}
                print(f"\n{scenario}: reference failed: {res.get('message')}", flush=True)
            for method in args.methods:
                if method in BURN_IN_METHODS and not metas[scenario].get("burn_in"):
                    continue  # no chronic state to find: the kinetics-only model starts from zero
                if method == "mscsim-integrated" and not metas[scenario].get("linear"):
                    continue  # a nonlinear model: mscsim's own row is this engine
                label = LABELS[method].format(scipy_method=args.scipy_method)
                rate = None  # patients/s of the largest completed measurement
                for n in sizes:
                    row = {"scenario": scenario, "method": method, "label": label, "n": n}
                    if rate is not None and n / rate > args.max_seconds:
                        row.update(status="skipped", note=f"not run: would take ~{fmt_s(n / rate)} s")
                        rows.append(row)
                        print(f"  {method:<11} {n:>9,}  {row['note']}", flush=True)
                        continue
                    task = dict(base, method=method, n=n, check_file=str(work / f"{scenario}-{method}-{n}.npy"))
                    res, rss, wall = run_child(task, work, jax_env if method in JAX_METHODS else env, hard)
                    row.update(status=res["status"], peak_mib=rss, process_s=wall)
                    if res["status"] != "ok":
                        row["note"] = res.get("message", res["status"])[:200]
                        rows.append(row)
                        print(f"  {method:<11} {n:>9,}  {res['status']}: {row['note']}", flush=True)
                        break  # larger sizes would fail the same way
                    done = res["patients_done"]
                    row.update(seconds=res["run_s"], patients_done=done, setup_s=res["setup_s"],
                               compile_s=res["compile_s"], patients_per_s=done / res["run_s"] if res["run_s"] else None,
                               device=res.get("device"))
                    if ref is not None:
                        yardstick = ref_burn if method in BURN_IN_METHODS else ref
                        row["max_rel_diff"] = max_rel_diff(np.load(task["check_file"]), yardstick, scale)
                    if done < n:
                        row["status"] = "stopped"
                        row["note"] = (f"stopped: {done:,} of {n:,} patients in {res['run_s']:.0f} s; "
                                       f"would take ~{fmt_s(n / row['patients_per_s'])} s")
                    elif res.get("device"):
                        row["note"] = res["device"]
                    rate = row["patients_per_s"]
                    rows.append(row)
                    print(f"  {method:<11} {n:>9,}  {fmt_s(row['seconds'])} s  {fmt_rate(rate)} patients/s  "
                          f"{rss:,.0f} MiB  diff {row.get('max_rel_diff', float('nan')):.1e}  "
                          f"setup {fmt_s(row['setup_s'])} s  {row.get('note', '')}", flush=True)
    ratios = {scenario: speedups(rows, scenario, metas[scenario].get("burn_in", False))
              for scenario in args.scenarios}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "scenarios": metas, "rows": rows,
                                                    "speedups": ratios}, indent=1))
    keys = ["scenario", "method", "label", "n", "status", "patients_done", "seconds", "patients_per_s", "peak_mib",
            "max_rel_diff", "setup_s", "compile_s", "process_s", "device", "note"]
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.csv')}")
    for scenario in args.scenarios:
        print(markdown(rows, scenario, metas.get(scenario, {})))
        for line in ratios[scenario]:
            print(f"- {line}")


if __name__ == "__main__":
    main()
