"""Throughput of the batched CPU solver on the human IV scenario (2e6 cells/kg, 28 days).

Run:  python benchmarks/bench_batched.py [--sizes 1 100 10000]
Prints patients per second for each cohort size (virtual patients with between-patient variability,
solved as one batch), and the machine it ran on. Record the figures in the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from mscsim import scenario_from_dict
from mscsim.analysis.validation import EXAMPLES
from mscsim.simulation import resolve_setup, solve

import yaml


def bench(n: int, repeats: int) -> tuple[float, float]:
    data = yaml.safe_load((EXAMPLES / "human_iv_2e6_per_kg.yaml").read_text())
    data["population"] = {"size": n, "variability": True}
    data["solver"] = {"chunk_size": n}
    setup = resolve_setup(scenario_from_dict(data))
    prob = setup.problem()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        solve(setup, prob)
        best = min(best, time.perf_counter() - t0)
    return best, n / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 10_000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"{'patients':>9} {'seconds':>9} {'patients/s':>11}")
    for n in args.sizes:
        sec, rate = bench(n, args.repeats if n <= 1000 else 1)
        print(f"{n:>9} {sec:>9.3f} {rate:>11.1f}")


if __name__ == "__main__":
    main()
