"""The long fuzz run of issue 19: thousands of generated scenarios, designs, lot records and FCS files per family,
each run through ``mscsim`` as a user runs it and judged as tests/test_fuzz_inputs.py judges its few (tests/fuzzing.py).

    nice -n 10 python scripts/fuzz_inputs.py --cases 10000 --families scenario design lot fcs --out fuzz-report.json \
        [--max-minutes 120]

Cases are drawn from the same Hypothesis strategies with a fixed seed (``--seed``), so a run is repeatable. A finding
(an uncaught exception, a traceback, a hang, a negative state, a lot released on a corrupt file, an error message
that names no file) is recorded with the case's note and the first of each kind is saved under ``--keep``. Valid
inputs that resolve to an input already run (the same validated file contents) are not run twice (``--no-dedup`` runs
them all); the report counts both. The summary is printed and written as JSON, and rewritten every minute while a
family runs. ``--max-minutes`` stops a family when its time is spent (the report says how far it got).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis.errors import HypothesisException  # noqa: E402

from fuzzing import FAMILIES, Hang, run_case  # noqa: E402


class _OutOfTime(Exception):
    """The family's time budget is spent (``--max-minutes``): stop generating, keep what ran."""


def run_family(family: str, cases: int, work: Path, keep: Path, dedup: bool, rng_seed: int, progress,
               max_seconds: float = float("inf"), save=None) -> dict:
    tally: Counter = Counter()
    findings: list[dict] = []
    seen: set[str] = set()
    messages: Counter = Counter()
    started = time.monotonic()
    last_save = [started]

    def summary(done: bool) -> dict:
        return {"family": family, "seconds": round(time.monotonic() - started, 1), "finished": done,
                "counts": dict(tally), "fields_refused_most": dict(messages.most_common(15)),
                "findings": findings[:200]}

    @seed(rng_seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=FAMILIES[family]())
    def body(case):
        if time.monotonic() - started > max_seconds:
            raise _OutOfTime()
        if save is not None and time.monotonic() - last_save[0] > 60:
            last_save[0] = time.monotonic()
            save(summary(False))
        key = hashlib.sha256(json.dumps({k: v.hex() for k, v in sorted(case.files.items())}).encode()).hexdigest()
        tally["generated"] += 1
        if dedup and key in seen:
            tally["repeated input (not rerun)"] += 1
            return
        seen.add(key)
        try:
            outcome = run_case(case, work)
        except Hang:
            kind = "hang"
        except AssertionError as exc:
            kind = f"check failed: {str(exc).splitlines()[0][:120]}"
        except Exception:  # noqa: BLE001 - an uncaught exception is exactly what this run looks for
            kind = f"uncaught {traceback.format_exc().splitlines()[-1][:120]}"
        else:
            tally["exit 2 (clean error)" if outcome.status == 2 else "exit 0 (valid run)"] += 1
            if outcome.status == 2:
                messages[outcome.message.split(": field ")[-1].split("'")[1] if "field '" in outcome.message
                         else "other"] += 1
            if case.corrupt:
                tally["corrupt FCS: refused or not released"] += 1
            progress(family, tally)
            return
        tally["findings"] += 1
        findings.append({"kind": kind, "note": case.note})
        target = keep / f"{family}-{len(findings):04d}"
        if len(findings) <= 20:
            target.mkdir(parents=True, exist_ok=True)
            for name, data in case.files.items():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(data)
            (target / "finding.txt").write_text(f"{kind}\n{case.note}\n{case.argv}\n")
        progress(family, tally)

    try:
        body()
    except _OutOfTime:
        tally["stopped: time budget spent"] += 1
    except HypothesisException as exc:  # e.g. fewer distinct inputs than asked for
        tally[f"hypothesis: {type(exc).__name__}"] += 1
    return summary(True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10000, help="generated inputs per family")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--seed", type=int, default=20261205)
    p.add_argument("--work", default="fuzz-work", help="scratch folder for the cases")
    p.add_argument("--keep", default="fuzz-findings", help="where the first findings' inputs are saved")
    p.add_argument("--out", default="fuzz-report.json")
    p.add_argument("--no-dedup", action="store_true")
    p.add_argument("--max-minutes", type=float, default=float("inf"), help="time budget per family (the report "
                   "says how many cases ran within it)")
    args = p.parse_args()
    last = [0.0]

    def progress(family, tally):
        now = time.monotonic()
        if now - last[0] > 5:
            last[0] = now
            print(f"\r{family}: {tally['generated']}/{args.cases} generated, {tally['findings']} finding(s)",
                  end="", file=sys.stderr, flush=True)

    report = {"command": " ".join(sys.argv), "seed": args.seed, "cases_per_family": args.cases,
              "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "families": []}
    def save(partial: dict) -> None:  # the report so far, rewritten as the run goes (a stopped run keeps it)
        Path(args.out).write_text(json.dumps({**report, "families": report["families"] + [partial]}, indent=2))

    for family in args.families:
        result = run_family(family, args.cases, Path(args.work) / family, Path(args.keep), not args.no_dedup,
                            args.seed, progress, args.max_minutes * 60.0, save)
        print(f"\r{family}: {json.dumps(result['counts'])} in {result['seconds']} s", file=sys.stderr, flush=True)
        report["families"].append(result)
        Path(args.out).write_text(json.dumps(report, indent=2))
    total = sum(f["counts"].get("findings", 0) for f in report["families"])
    print(f"findings: {total}; report in {args.out}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
