"""Run the checks marked ``slow``, which the default test command leaves out to keep the suite under 15 minutes.

Each compiles another model variant or integrates a slow reference solution (half a minute to a minute each on
the 2-vCPU machine with a cold model cache): the JAX solver on the knee-OA year, three more kinetics examples and
its slot window; the Radau references of the closing wound and of eight GVHD infusions; the lane-width
bit-identity; the wound mechanism switched off in the knee; the label on the GVHD tissue model; libRoadRunner
through the PEtab conditions. Needs the test extra (``pip install '.[test]'``)::

    python benchmarks/slow_checks.py            # every slow check
    python benchmarks/slow_checks.py -k wound   # extra arguments go to pytest

Exits with pytest's status.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    started = time.perf_counter()
    status = pytest.main([str(root / "tests"), "-m", "slow", "--durations=0", *argv])
    print(f"slow checks: {time.perf_counter() - started:.0f} s, pytest exit status {int(status)}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
