"""A large virtual trial end to end: wall time and peak memory of `mscsim trial` on N virtual patients.

Run:  python benchmarks/bench_trial.py [--patients 100000] [--workers 2] [--design knee_oa_lee_2019]
      [--chunk-size 500] [--keep DIR]

The bundled design is scaled to N patients (split evenly between its arms; the power and prediction pools are
dropped, so N is the whole cohort) and run through the command line exactly as a user runs it, in a child
process. A sampler thread adds up the resident memory (VmRSS) of that process and all its worker processes every
0.2 s, so 'peak memory' is the peak of the whole process tree at once (not the sum of each process's own peak):
both the sum of resident sets (VmRSS, which counts a page shared by the forkserver's children once per process)
and the sum of proportional sets (Pss, each shared page divided among its sharers: what the tree holds).
Prints the figures and the machine; record them in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from mscsim.trials.design import DESIGN_DIR


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _memory_kib(pid: int) -> tuple[int, int]:
    """(resident, proportional) memory of one process in KiB: VmRSS counts every page it maps in full, also pages
    it shares with its forkserver siblings; Pss (smaps_rollup) divides a shared page among the processes sharing
    it, so the Pss of a process tree adds up to the memory the tree actually holds."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def tree_memory_kib(root: int) -> tuple[int, int]:
    """(sum of VmRSS, sum of Pss) of a process and all its descendants, now (Linux /proc)."""
    rss = pss = 0
    todo, seen = [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        r, p = _memory_kib(pid)
        rss, pss = rss + r, pss + p
        todo += _children(pid)
    return rss, pss


def scaled_design(name: str, patients: int) -> dict:
    data = yaml.safe_load((DESIGN_DIR / f"{name}.yaml").read_text())
    data.pop("power", None)
    data.pop("prediction", None)
    k = len(data["arms"])
    sizes = [patients // k + (1 if i < patients % k else 0) for i in range(k)]
    data["arms"] = [{**a, "n": n} for a, n in zip(data["arms"], sizes)]
    data["name"] = f"{data['name']}_x{patients}"
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--design", default="knee_oa_lee_2019")
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--keep", default=None, help="keep the trial's output folder here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mscsim-bench-trial-"))
    design = work / "design.yaml"
    design.write_text(yaml.safe_dump(scaled_design(args.design, args.patients), sort_keys=False))
    out = Path(args.keep) if args.keep else work / "out"
    cmd = [sys.executable, "-m", "mscsim.cli", "trial", str(design), "--out", str(out), "--workers",
           str(args.workers)] + (["--chunk-size", str(args.chunk_size)] if args.chunk_size else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[int, int]] = []

    def sample():
        while proc.poll() is None:
            samples.append(tree_memory_kib(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = []
    for line in proc.stdout:  # the progress line and the result, as the user sees them
        lines.append(line)
        sys.stderr.write(line)
    proc.wait()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mscsim trial failed with status {proc.returncode}")
    manifest = json.loads((out / "manifest.json").read_text())
    result = {
        "design": args.design, "patients": manifest["n_simulated"], "workers": args.workers,
        "chunk_size": args.chunk_size or manifest["design"]["solver"]["chunk_size"],
        "wall_s": round(wall, 1), "patients_per_s": round(manifest["n_simulated"] / wall, 1),
        "peak_tree_rss_mib": round(max(r for r, _ in samples) / 1024, 1) if samples else None,
        "peak_tree_pss_mib": round(max(p for _, p in samples) / 1024, 1) if samples else None,
        "median_tree_pss_mib": round(float(np.median([p for _, p in samples])) / 1024, 1) if samples else None,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                   f"Python {platform.python_version()}, NumPy {np.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
