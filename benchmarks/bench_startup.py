"""What a new process costs before and around its one patient: `mscsim simulate` end to end, as a user runs it.

Run:  python benchmarks/bench_startup.py [--scenario knee_oa_ia_5e7] [--repeats 5] [--cold] [--out FILE.json]

Every row is a fresh child process timed from outside (wall clock, `subprocess.run`), so it includes the
interpreter, the imports, loading the compiled model and its machine code, the simulation, and writing
results.nc, the tables and the figures (PNG, SVG, PDF):

- ``cold`` (with ``--cold``): `mscsim simulate` with an empty cache folder (``MSCSIM_CACHE_DIR``): the first-call
  cost, SymPy compiling the model and Numba its kernels; once.
- ``cached``: the same command again, the model and kernels now cached (the issue's target: under 5 s);
- ``--version`` and ``presets``: commands that must not load the simulator (target: under 1 s);
- ``mscsim-api-script``: a fresh Python process that runs the scenario through the Python API
  (``mscsim.simulate``) and writes results.nc only: the simulator's own per-process cost, without figures;
- ``libroadrunner-script`` (the peer, when libRoadRunner is installed): a fresh Python process that imports
  libRoadRunner, loads the same scenario exported as SBML (`mscsim export-sbml`, done once beforehand, outside
  the clock), simulates the same year with CVODE and writes the time course as CSV: what one patient costs a
  libRoadRunner user's script per process (no figures, no endpoints).

The rows run interleaved (cached, peer, cached, peer, ...) so that a machine's slow minute touches both.
Prints the medians and writes every run, the machine and the versions as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PEER = """
import sys
import numpy as np
import roadrunner
rr = roadrunner.RoadRunner(sys.argv[1])
rr.integrator.relative_tolerance = 1e-8
out = rr.simulate(0.0, float(sys.argv[2]), int(sys.argv[3]))
np.savetxt(sys.argv[4], np.asarray(out), delimiter=",", header=",".join(out.colnames), comments="")
"""


_API = """
import sys
from mscsim import simulate
simulate(sys.argv[1]).to_netcdf(sys.argv[2])
"""


def _mscsim(*args: str) -> list[str]:
    return [sys.executable, "-m", "mscsim.cli", *args]


def _timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return round(wall, 3)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="knee_oa_ia_5e7")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also time a first run with an empty cache")
    ap.add_argument("--out", type=Path, help="write the record (JSON) here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mscsim-startup-"))
    env = dict(os.environ)
    rows: dict[str, list[float]] = {}
    try:
        if args.cold:
            env["MSCSIM_CACHE_DIR"] = str(work / "cache")
            print("cold run (empty cache): compiling the model and its kernels ...", flush=True)
            rows["cold"] = [_timed(_mscsim("simulate", args.scenario, "--out", str(work / "cold")), env)]
            print(f"  {rows['cold'][0]:.1f} s", flush=True)
        else:  # the user's cache: make sure the model is in it, outside the clock
            _timed(_mscsim("simulate", args.scenario, "--out", str(work / "warm")), env)
        sample = work / ("cold" if args.cold else "warm") / "results.nc"
        peer = None
        try:
            import roadrunner  # noqa: F401

            sbml = work / "model.xml"
            _timed(_mscsim("export-sbml", args.scenario, "-o", str(sbml)), env)
            import xarray as xr

            with xr.open_dataset(sample) as ds:
                hours, points = float(ds["time"].values[-1]), int(ds.sizes["time"])
            peer = [sys.executable, "-c", _PEER, str(sbml), repr(hours), str(points), str(work / "peer.csv")]
        except ImportError:
            print("libRoadRunner not installed: no peer row", flush=True)
        for k in range(args.repeats):
            out = work / f"cached_{k}"
            rows.setdefault("cached", []).append(_timed(_mscsim("simulate", args.scenario, "--out", str(out)), env))
            shutil.rmtree(out, ignore_errors=True)
            rows.setdefault("mscsim-api-script", []).append(
                _timed([sys.executable, "-c", _API, args.scenario, str(work / "api.nc")], env))
            if peer is not None:
                rows.setdefault("libroadrunner-script", []).append(_timed(peer, env))
            rows.setdefault("--version", []).append(_timed(_mscsim("--version"), env))
            rows.setdefault("presets", []).append(_timed(_mscsim("presets"), env))
            print(f"  round {k + 1}/{args.repeats}: " + ", ".join(f"{n} {v[-1]:.2f} s" for n, v in rows.items()
                                                                   if n != "cold"), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import mscsim

    record = {
        "benchmark": "startup", "scenario": args.scenario, "repeats": args.repeats,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                   f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "mscsim": mscsim.__version__,
        "runs_s": rows, "median_s": {n: round(statistics.median(v), 2) for n, v in rows.items()},
    }
    print(f"machine: {record['machine']}, Python {record['python']}")
    for name, med in record["median_s"].items():
        spread = f" (range {min(rows[name]):.2f}-{max(rows[name]):.2f})" if len(rows[name]) > 1 else ""
        print(f"  {name:22s} median {med:6.2f} s{spread}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
