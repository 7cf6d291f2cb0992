"""The steady-state start against integration, on every bundled disease and many varied patients.

For each disease preset, ``--patients`` virtual patients (covariates from the disease's bundled cohort, model
parameters with their between-patient variability) get their untreated chronic state two ways: solved directly
(``steady_state``: pseudo-transient continuation, stability checked) and integrated without cells, with the same
held states, for ``--days`` (default 20,000 d, long enough for the slowest mode, fibrosis at about 300 d, to
decay below 1e-10). Every state and every endpoint evaluated at baseline is compared; the old 1,000-day burn-in
is compared too, to show what it missed. Prints one row per disease and writes them as JSON with ``--json``.

    python scripts/check_steady_state.py --patients 10000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from mscsim import __version__, scenario_from_dict
from mscsim.analysis.validation import EXAMPLES
from mscsim.endpoints.evaluate import endpoint_values
from mscsim.simulation import resolve_setup
from mscsim.solvers.compiled import solve_compiled, steady_state
from mscsim.solvers.problem import Problem
from mscsim.trials.cohort import draw_cohort, load_cohort, to_model_covariates

PRESETS = {"knee_osteoarthritis": ("knee_oa_ia_5e7", "knee_oa_adults"),
           "acute_gvhd": ("acute_gvhd_iv_2e6_per_kg", "sr_agvhd_children"),
           "perianal_fistula": ("perianal_fistula_120e6", "crohn_perianal_adults"),
           "lumbar_disc_degeneration": ("lumbar_disc_intradiscal_25e6", "lumbar_ddd_adults"),
           "tendinopathy": ("tendinopathy_intratendinous_1e7", "tendinopathy_adults"),
           "diabetic_foot_ulcer": ("dfu_topical_sheet_weekly", "dfu_adults"),
           "lupus_nephritis": ("lupus_nephritis_iv_ucmsc_2e8", "lupus_nephritis_adults")}


def relative(a: np.ndarray, b: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """|a - b| / (|b| + floor), the floor a billionth of each state's typical magnitude (for states at 0)."""
    return np.abs(a - b) / (np.abs(b) + floor)


def check(disease: str, patients: int, days: float, seed: int, signal_atol: float = 1e-9) -> dict:
    import yaml

    preset, cohort_name = PRESETS[disease]
    data = yaml.safe_load((EXAMPLES / f"{preset}.yaml").read_text())
    data["population"] = {"size": patients, "variability": True}
    data["seed"] = seed
    setup = resolve_setup(scenario_from_dict(data))
    cohort = draw_cohort(load_cohort(cohort_name), seed, 0, patients)
    covariates = to_model_covariates(cohort).reset_index(drop=True)
    P = setup.problem(0, patients, covariates).params  # the patients' parameters (this also solves their baseline)
    model = setup.model
    x0 = model.initial_signals(P)
    hold = model.held_mask | model.cell_mask | ~np.abs(model.stoichiometry).any(axis=1)
    atol = Problem(model, P, np.array([0.0]), x0=x0).atol(1e-13)
    t = time.perf_counter()
    ss = steady_state(model, P, x0, atol, hold)
    t_ss = time.perf_counter() - t
    t = time.perf_counter()
    long = solve_compiled(Problem(model, P, np.array([0.0, 1000 * 24.0, days * 24.0]), x0=x0, hold=hold),
                          rtol=1e-10, signal_atol=signal_atol)
    t_int = time.perf_counter() - t
    floor = 1e-9 * np.maximum(model.signal_scale, 1.0)
    free = ~hold
    ok = ss.status == 0
    d_states = relative(ss.x[ok][:, free], long[ok, -1][:, free], floor[free])
    d_burn = relative(long[ok, 1][:, free], long[ok, -1][:, free], floor[free])
    names = model.state_names

    def endpoints(x):
        return endpoint_values(disease, {n: x[:, i][:, None] for i, n in enumerate(names)}, names)

    e_ss, e_long, e_burn = endpoints(ss.x[ok]), endpoints(long[ok, -1]), endpoints(long[ok, 1])
    d_end = {k: float(relative(e_ss[k], e_long[k], 1e-9).max()) for k in e_ss}
    d_end_burn = {k: float(relative(e_burn[k], e_long[k], 1e-9).max()) for k in e_ss}
    worst_state = int(np.argmax(d_states.max(axis=0)))
    return {
        "disease": disease, "patients": patients, "steady_state_found": int(ok.sum()),
        "status_counts": {str(k): int(v) for k, v in zip(*np.unique(ss.status, return_counts=True))},
        "max_rel_diff_states": float(d_states.max()),
        "worst_state": [n for n, f in zip(names, free) if f][worst_state],
        "max_rel_diff_endpoints": max(d_end.values()), "endpoints": d_end,
        "burn_in_1000d_max_rel_diff_states": float(d_burn.max()),
        "burn_in_1000d_max_rel_diff_endpoints": max(d_end_burn.values()),
        "iterations_median": float(np.median(ss.iterations[ok])), "iterations_max": int(ss.iterations[ok].max()),
        "seconds_steady_state": t_ss, "seconds_integration": t_int, "integration_days": days,
        "integration_rtol": 1e-10, "integration_signal_atol": signal_atol,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=20_000.0)
    ap.add_argument("--seed", type=int, default=20261205)
    ap.add_argument("--signal-atol", type=float, default=1e-9, help="the reference integration's absolute tolerance "
                    "of signal states, relative to their typical magnitude (the engine's is 1e-9; a small signal, "
                    "such as the efferocytosis signal of an untreated wound, needs a smaller one)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--diseases", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    args = ap.parse_args(argv)
    rows = []
    for disease in args.diseases:
        row = check(disease, args.patients, args.days, args.seed, args.signal_atol)
        rows.append(row)
        print(f"{disease}: {row['steady_state_found']}/{row['patients']} stable steady states; max rel. diff vs "
              f"{args.days:g}-d integration: states {row['max_rel_diff_states']:.2g} ({row['worst_state']}), "
              f"endpoints {row['max_rel_diff_endpoints']:.2g}; the 1,000-d burn-in: states "
              f"{row['burn_in_1000d_max_rel_diff_states']:.2g}, endpoints "
              f"{row['burn_in_1000d_max_rel_diff_endpoints']:.2g}; {row['iterations_median']:g} iterations "
              f"(max {row['iterations_max']}); {row['seconds_steady_state']:.1f} s vs {row['seconds_integration']:.1f} s",
              flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"version": __version__, "argv": sys.argv[1:], "rows": rows}, fh, indent=1)
    return 0 if all(r["max_rel_diff_states"] < 1e-6 and r["max_rel_diff_endpoints"] < 1e-6 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
