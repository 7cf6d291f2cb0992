"""Work against precision: patients per second at each tolerance, and the error each tolerance actually gives.

Run:  python benchmarks/bench_work_precision.py [--scenario knee_oa_ia_5e7] [--n 1000]
          [--rtols 1e-5 1e-6 1e-7 1e-8 1e-9 1e-10] [--methods mscsim roadrunner] [--out benchmarks/results/wp]

``bench_scale.py`` compares methods at the same nominal tolerance (rtol 1e-8), but one integrator's rtol 1e-8 is
not another's: at it libRoadRunner's CVODE lands about 1e-5 from the solution, mscsim's RODAS5P about 1e-7. The
comparison that holds whatever the tolerance means is at the same achieved error (a work-precision diagram, as the
SciML benchmarks and Hairer and Wanner's test sets draw them). For each method and ``--rtols`` value this measures
patients/s on ``--n`` patients (bench_scale's measurement: a fresh process, one thread, the same patients, from
the same chronic state; mscsim finds it inside its clock, libRoadRunner is given it) and the error of its first
``--check`` patients against the same method's solution at rtol 1e-12 (each integrator's own error, on its own
representation of the model, the exported SBML or mscsim's generated code; the distance between the two
references is printed and recorded: on knee OA they agree to 1e-11 for the first weeks and differ by up to 1e-5
only where small signals are held to their absolute tolerances). Error is bench_scale's "max rel. diff": the
largest |a - b| / (|b| + 1e-6 scale) over patients, output times and states.

Then, for each point, the other method's patients/s at the same error, interpolated on its curve (log error
against log patients/s, between its two neighbouring tolerances; not extrapolated), and mscsim's patients/s over
libRoadRunner's at that error. Both methods keep the same absolute tolerances (bench_scale's: ``atol_factor`` x the
cells given, and 1e-9 of each signal's typical magnitude, the user's default), so where an error stops falling as
rtol shrinks, the absolute tolerance of some small signal is what bounds it. Writes ``<out>.json`` and
``<out>.csv``; ``--collect <out>.json`` prints the comparison of a finished run again.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import (ATOL_FACTOR, LABELS, child_env, machine, max_rel_diff, run_child,  # noqa: E402
                         scenario_setup, state_scale)

REFERENCE_RTOL = 1e-12


def measure(scenario: str, method: str, rtol: float, n: int, check: int, days: float, workdir: Path,
            max_seconds: float) -> dict:
    """One measurement in its own process (bench_scale's ``measure``): patients/s and the first patients' outputs."""
    tag = f"{method}-{rtol:g}-{n}"
    task = {"scenario": scenario, "method": method, "n": n, "days": days, "rtol": rtol, "chunk": 4096,
            "check": check, "max_seconds": max_seconds, "scipy_method": "BDF", "threads": 1,
            "check_file": str(workdir / f"{tag}.npy")}
    result, _, _ = run_child(task, workdir, child_env(1, None), hard_limit=max_seconds * 3 + 300)
    if result.get("status") != "ok":
        raise RuntimeError(f"{method} at rtol {rtol:g}: {result.get('message')}")
    done = result["patients_done"]
    return {"method": method, "rtol": rtol, "n": done, "seconds": result["run_s"],
            "patients_per_s": done / result["run_s"], "outputs": np.load(task["check_file"])}


def scales(scenario: str, check: int, days: float) -> np.ndarray:
    """Each state's floor in the error, as bench_scale's "max rel. diff" has it."""
    setup = scenario_setup(scenario, check, days, REFERENCE_RTOL)
    return state_scale(setup, setup.problem(0, check))


def at_error(curve: list[dict], error: float) -> float:
    """A method's patients/s at a given error, interpolated on log-log between its two neighbouring points (NaN
    outside the errors it was measured at)."""
    pts = sorted((math.log(r["error"]), math.log(r["patients_per_s"])) for r in curve if r["error"] > 0)
    x = math.log(error)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0)) if x1 > x0 else math.exp(max(y0, y1))
    return float("nan")


def report(rows: list[dict]) -> None:
    """For every row, the other method's patients/s at the same error (``peer_at_same_error``) and mscsim's
    patients/s over libRoadRunner's there (``ratio_at_same_error``); prints the table."""
    curves = {m: [r for r in rows if r["method"] == m] for m in ("mscsim", "roadrunner")}
    for r in rows:
        other = "roadrunner" if r["method"] == "mscsim" else "mscsim"
        peer = at_error(curves[other], r["error"]) if curves[other] else math.nan
        r["peer_at_same_error"] = peer
        ours, theirs = (r["patients_per_s"], peer) if r["method"] == "mscsim" else (peer, r["patients_per_s"])
        r["ratio_at_same_error"] = ours / theirs if math.isfinite(peer) else math.nan
    print("\n| method | rtol | patients/s | error vs its rtol-1e-12 solution | the other method at the same error | "
          "mscsim / libRoadRunner at that error |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        peer, ratio = r["peer_at_same_error"], r["ratio_at_same_error"]
        print(f"| {r['label']} | {r['rtol']:g} | {r['patients_per_s']:,.0f} | {r['error']:.1e} | "
              f"{f'{peer:,.0f}' if math.isfinite(peer) else 'outside its range'} | "
              f"{f'{ratio:.1f}x' if math.isfinite(ratio) else ''} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="knee_oa_ia_5e7")
    ap.add_argument("--n", type=int, default=1000, help="patients per measurement")
    ap.add_argument("--check", type=int, default=16, help="patients whose error is measured")
    ap.add_argument("--days", type=float, default=365.0)
    ap.add_argument("--rtols", type=float, nargs="+", default=[1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10])
    ap.add_argument("--methods", nargs="+", default=["mscsim", "roadrunner"], choices=["mscsim", "roadrunner"])
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--out", default="benchmarks/results/wp")
    ap.add_argument("--collect", default=None, help="only print the comparison of an earlier run's <out>.json")
    args = ap.parse_args()
    if args.collect:
        record = json.loads(Path(args.collect).read_text())
        print(f"{record['meta']['scenario']}: the two rtol-1e-12 solutions differ by "
              f"{record['meta']['references_differ_by']:.1e}")
        report(record["rows"])
        return
    with tempfile.TemporaryDirectory(prefix="mscsim-wp-") as tmp:
        work = Path(tmp)
        print(f"references: {args.check} patients at rtol {REFERENCE_RTOL:g}", flush=True)
        refs = {m: measure(args.scenario, m, REFERENCE_RTOL, args.check, args.check, args.days, work, 1e4)["outputs"]
                for m in args.methods}
        scale = scales(args.scenario, args.check, args.days)
        cross = None
        if len(refs) == 2:
            cross = max_rel_diff(refs["roadrunner"], refs["mscsim"], scale)
            print(f"the two references (mscsim RODAS5P, libRoadRunner CVODE at rtol {REFERENCE_RTOL:g}) differ by "
                  f"{cross:.1e} (the exported SBML and the generated code, each at its absolute tolerances)", flush=True)
        rows = []
        for method in args.methods:
            for rtol in args.rtols:
                r = measure(args.scenario, method, rtol, args.n, args.check, args.days, work, args.max_seconds)
                r["error"] = max_rel_diff(r.pop("outputs"), refs[method], scale)
                r["label"] = LABELS[method].split(",")[0]
                rows.append(r)
                print(f"{method} rtol {rtol:g}: {r['patients_per_s']:,.0f} patients/s, error {r['error']:.1e}",
                      flush=True)
    report(rows)
    meta = {"scenario": args.scenario, "n": args.n, "check": args.check, "days": args.days,
            "atol_factor": ATOL_FACTOR, "reference": f"each method at rtol {REFERENCE_RTOL:g}",
            "references_differ_by": cross, "machine": machine()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    with open(f"{args.out}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in rows[0]})
    print(f"\nwrote {args.out}.json and {args.out}.csv")


if __name__ == "__main__":
    main()
