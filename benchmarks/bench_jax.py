"""Throughput of the JAX Rosenbrock (RODAS5P) solver against the NumPy batched solver and diffrax vmap(Kvaerno5).

Run:  python benchmarks/bench_jax.py [--scenario human_iv_2e6_per_kg] [--sizes 100 1000] [--repeats 2]
                                     [--days N] [--no-diffrax]
Scenarios: any bundled example; the default is human IV, 2e6 cells/kg, 28 days (the 17-state kinetics);
``knee_oa_ia_5e7`` is the knee-OA year on the 44-state tissue model, each patient starting from their own
untreated burn-in (computed once, before timing, by the NumPy solver as mscsim does). Virtual patients with
between-patient variability. Every solver uses the same generated model code, rtol = 1e-8 and mscsim's
per-state absolute tolerances (1e-13 of the cells given; 1e-9 of a signal's typical magnitude). Prints the
machine, the JAX device and a table of patients per second (best of the repeats, after the first call, so that
JAX compilation is excluded; the compile-inclusive first call is shown as "first s"), and the largest
disagreement with the NumPy solver at the final time, |a - b| / (|b| + 1e-6 * scale), with the scale per
state as in tests/test_solvers.py (the cells given; ten times a signal's typical magnitude).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import yaml

from mscsim import scenario_from_dict, solve_batched
from mscsim.analysis.validation import EXAMPLES
from mscsim.simulation import resolve_setup

import jax

from mscsim.solvers.jax_solver import solve_jax  # enables float64 in JAX

import jax.numpy as jnp  # noqa: E402

RTOL, ATOL_FACTOR = 1e-8, 1e-13


def make_problem(scenario: str, n: int, days: float | None):
    data = yaml.safe_load((EXAMPLES / f"{scenario}.yaml").read_text())
    data["population"] = {"size": n, "variability": True}
    if days is not None:
        data["duration_days"] = days
    return resolve_setup(scenario_from_dict(data)).problem()


def comparison_scale(problem) -> np.ndarray:
    """Per-state scale of the disagreement floor (as tests/test_solvers.py): cells given, or 10x a signal's scale."""
    model = problem.model
    return np.where(model.cell_mask, problem.administered().max(), 10.0 * model.signal_scale)


def diffrax_solver():
    """vmap over patients of diffrax Kvaerno5 + PID controller; segments (doses) handled in Python."""
    import diffrax

    cache = {}

    def get(model, n_out: int):
        key = (model.source, n_out)
        if key in cache:
            return cache[key]
        ns: dict = {}
        exec(compile(model.source, "<mscsim model (diffrax)>", "exec"), ns)  # noqa: S102 - our own codegen
        rhs = ns["rhs"]
        term = diffrax.ODETerm(lambda t, y, args: rhs(jnp, y, args[0]) + args[1])
        solver = diffrax.Kvaerno5()

        def one(y0, p, u, atol, t0, t1, ts):
            ctrl = diffrax.PIDController(rtol=RTOL, atol=atol, pcoeff=0.3, icoeff=0.3)
            sol = diffrax.diffeqsolve(term, solver, t0, t1, None, y0, args=(p, u), saveat=diffrax.SaveAt(ts=ts),
                                      stepsize_controller=ctrl, max_steps=100_000)
            return sol.ys

        fn = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None, None)))
        cache[key] = fn
        return fn

    def solve(problem):
        model = problem.model
        B, n = problem.n_patients, model.n_states
        t_eval = np.asarray(problem.t_eval, dtype=float)
        out = np.empty((B, len(t_eval), n))
        y = problem.initial_state()
        atol = jnp.asarray(problem.atol(ATOL_FACTOR))  # mscsim's per-state absolute tolerances
        P = jnp.asarray(problem.params)
        for seg in problem.segments():
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
            ys = np.asarray(get(model, len(ts))(jnp.asarray(y), P, jnp.asarray(u), atol, float(seg.t0),
                                                float(seg.t1), jnp.asarray(ts)))
            out[:, later] = ys[:, :-1]
            y = ys[:, -1]
        return out

    return solve


def timed(fn, prob, repeats: int):
    t0 = time.perf_counter()
    out = fn(prob)
    first = time.perf_counter() - t0
    best = first
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(prob)
        best = min(best, time.perf_counter() - t0)
    return out, first, best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="human_iv_2e6_per_kg", help="a bundled example, e.g. knee_oa_ia_5e7")
    ap.add_argument("--days", type=float, default=None, help="override the scenario's duration")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-diffrax", action="store_true")
    args = ap.parse_args()
    solvers = {"numpy solve_batched": lambda p: solve_batched(p, rtol=RTOL, atol_factor=ATOL_FACTOR),
               "jax solve_jax": lambda p: solve_jax(p, rtol=RTOL, atol_factor=ATOL_FACTOR)}
    if not args.no_diffrax:
        try:
            import diffrax

            solvers[f"diffrax {diffrax.__version__} vmap(Kvaerno5)+PID"] = diffrax_solver()
        except ImportError:
            print("diffrax not installed: skipped")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"Python {platform.python_version()}, NumPy {np.__version__}, JAX {jax.__version__}")
    print(f"JAX device: {jax.devices()[0]} ({jax.default_backend()})")
    for n in args.sizes:
        t0 = time.perf_counter()
        prob = make_problem(args.scenario, n, args.days)
        print(f"{args.scenario}: {prob.model.n_states} states, {len(prob.t_eval)} output times to "
              f"{prob.t_eval[-1] / 24:g} d; problem (with any burn-in) built in {time.perf_counter() - t0:.1f} s")
        print(f"{'solver':<40} {'patients':>9} {'first s':>9} {'best s':>9} {'patients/s':>11} {'max rel diff':>13}")
        scale = comparison_scale(prob)
        ref = None
        for name, fn in solvers.items():
            out, first, best = timed(fn, prob, 0 if name.startswith("numpy") and n > 100 else args.repeats)
            if ref is None:
                ref = out
            diff = float((np.abs(out[:, -1] - ref[:, -1]) / (np.abs(ref[:, -1]) + 1e-6 * scale)).max())
            print(f"{name:<40} {n:>9} {first:>9.2f} {best:>9.2f} {n / best:>11.1f} {diff:>13.2e}", flush=True)


if __name__ == "__main__":
    main()
