"""Hostile inputs for the fuzz tests (tests/test_fuzz_inputs.py) and the long fuzz run (scripts/fuzz_inputs.py).

Four families, each a Hypothesis strategy of *cases* built by mutating a bundled, valid input: scenarios, trial
designs, lot records and the FCS files of a lot. Every case is run as a new user runs it, through ``mscsim.cli.main``
(in this process), and judged by :func:`run_case`:

- exit status 2 with one line on stderr that starts ``mscsim: error:`` and names the input file, or
- exit status 0 and outputs that hold up: no negative cell state in results.nc, finite trial endpoints, strict
  JSON from the QC, and never a released lot when the case corrupted an FCS file (``Case.corrupt``);
- never any other exit status, never an uncaught exception (a traceback), never more than ``Case.limit_s`` seconds of
  CPU time (a runaway loop) or ten times that of wall-clock time (a deadlock); CPU time, because on a shared, loaded
  machine a case can wait for a core longer than it runs (two 5-CPU-second cases once passed 240 s of wall clock).

Mutations are drawn from curated pools of hostile values (NaN, infinities, signs, zero, huge and tiny numbers, wrong
types, unknown names, unsorted or repeated lists, broken files). Large but valid sizes are left out of the pools on
purpose: they are refused by the size checks or would only make a case slow, not hostile.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from hypothesis import strategies as st

from mscsim.analysis.validation import EXAMPLES
from mscsim.cli import main

NAN, INF = float("nan"), float("inf")
FLOATS = [NAN, INF, -INF, -1.0, -1e-300, 0.0, -0.0, 5e-324, 1e-9, 0.5, 1.5, 2.0, 1e16, 1e300]
INTS = [-1, 0, 1, 2, 3, 10 ** 7, 10 ** 19, 2 ** 63, 10 ** 30]
OTHERS = [True, False, None, "", "abc", "nan", "1e6", "-inf", "\u00e9\u4e2d", [], {}, [1, 2], {"a": 1}, "x" * 300]
HOSTILE = FLOATS + INTS + OTHERS
UNITS = ["1/d", "1/h", "1/min", "mL", "cell", "kg", "%", "", "1/(d", "d**d", "kg*", "1e3", "__import__('os')"]


# --- a case and how it is judged ---------------------------------------------------------------------------------

@dataclass
class Case:
    """One generated input: files to write (name -> bytes), the command to run on them, and what it tests."""

    family: str
    files: dict[str, bytes]
    argv: list[str]  # with {dir} for the case's folder
    main_file: str  # the file an error must name
    corrupt: bool = False  # an FCS file was made untrustworthy: the lot must not be released
    limit_s: int = 240  # CPU seconds; the wall-clock limit is ten times this
    note: str = ""
    copy_lots: bool = False  # the example lot's FCS files beside the case's files


@dataclass
class Outcome:
    status: int
    message: str
    checks: list[str] = field(default_factory=list)


class Hang(BaseException):
    """A case ran past its limit (a BaseException, so no handler inside mscsim swallows it)."""


def _alarm(signum, frame):
    raise Hang()


def run_case(case: Case, root: Path) -> Outcome:
    """Write the case into ``root`` (emptied first), run it through the CLI and check the result; an
    AssertionError (or Hang, or the uncaught exception itself) is a finding."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if case.copy_lots:
        shutil.copytree(EXAMPLES / "lots", root / "lots")
    for name, data in case.files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    argv = [a.replace("{dir}", str(root)) for a in case.argv]
    err, out = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm), signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, case.limit_s)  # CPU time of this process: a runaway integration
    signal.alarm(10 * case.limit_s)  # wall clock: a wait that never ends
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            status = main(argv)
    finally:
        signal.alarm(0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGALRM, previous[0])
        signal.signal(signal.SIGPROF, previous[1])
    text = err.getvalue()
    if status in (130, 143):  # the fuzz run itself was interrupted (Ctrl-C, SIGTERM): stop it, not a finding
        raise KeyboardInterrupt
    assert "Traceback" not in text, text[-2000:]
    assert status in (0, 2), f"exit status {status}: {text[-2000:]}"
    outcome = Outcome(status, "")
    if status == 2:
        lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
        last = lines[-1]
        assert last.startswith("mscsim: error: "), text[-2000:]
        outcome.message = last
        named = str(root / case.main_file)
        assert named in last or case.main_file in last or str(root) in last, f"{last!r} names no input file"
        out_dir = root / "out"
        assert not out_dir.exists(), "an output folder was left behind by a failed run"
        assert not [p for p in root.iterdir() if p.name.startswith(".out.partial") or p.name == "out.chunks"], \
            "partial work was left behind by a failed run"
        return outcome
    _check_outputs(case, root / "out", outcome)
    return outcome


def _strict_json(path: Path):
    def refuse(token):
        raise AssertionError(f"{path.name} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _check_outputs(case: Case, out: Path, outcome: Outcome) -> None:
    manifest = _strict_json(out / "manifest.json")
    if case.family == "scenario":
        import xarray as xr

        with xr.open_dataset(out / "results.nc") as ds:
            adm = ds["administered"].values
            scale = np.maximum(adm.max(axis=1, keepdims=True), 1.0)
            for name, var in ds.data_vars.items():
                if var.attrs.get("kind") in ("viable", "debris", "cleared"):
                    v = var.values
                    assert np.isfinite(v).all(), f"non-finite {name}"
                    assert (v >= -1e-9 * scale).all(), f"negative {name}: {v.min()}"
        outcome.checks.append("states finite and non-negative")
    elif case.family == "design":
        import pandas as pd

        ep = pd.read_parquet(out / "endpoints.parquet")
        assert np.isfinite(ep["modelled"].to_numpy(dtype=float)).all(), "non-finite modelled endpoint"
        outcome.checks.append("endpoints finite")
    else:
        results = _strict_json(out / "qc_results.json")
        assert results["released"] == manifest["released"]
        if case.corrupt:
            assert not results["released"], f"a lot was released on a corrupt FCS file ({case.note})"
        outcome.checks.append("strict JSON" + (", not released on corrupt FCS" if case.corrupt else ""))


# --- mutating a mapping ------------------------------------------------------------------------------------------

def _paths(data, prefix=()) -> list[tuple]:
    """Every path into a nested mapping/list (containers and leaves)."""
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _parent(data, path):
    for part in path[:-1]:
        data = data[part]
    return data


def _hostile():
    """A hostile value, copied (the pools hold lists and dicts that later mutations must not change)."""
    return st.sampled_from(HOSTILE).map(copy.deepcopy)


@st.composite
def mutated(draw, base: dict, extra_paths: list[tuple] = ()) -> tuple[dict, str]:
    """``base`` with one or two changes (mostly hostile, some plausible); returns (data, description)."""
    data = copy.deepcopy(base)
    notes = []
    for _ in range(draw(st.integers(1, 2))):
        paths = _paths(data) + list(extra_paths)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["value"] * 3 + ["nudge"] * 6 + ["delete", "typo", "wrap", "reorder", "repeat"]))
        try:
            parent = _parent(data, path)
        except (KeyError, IndexError, TypeError):
            continue
        key = path[-1]
        if isinstance(parent, dict) and key not in parent:
            parent[key] = draw(_hostile())
            notes.append(f"add {'.'.join(map(str, path))}")
            continue
        if not isinstance(parent, (dict, list)) or (isinstance(parent, list) and not (
                isinstance(key, int) and -len(parent) <= key < len(parent))):  # a name into a list an earlier
            continue  # mutation made of a mapping (a 'wrap'), or an index out of range
        if op == "nudge" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            # a plausible change (most validate): the value scaled, as a what-if would
            factor = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, 1.1, 2.0, 10.0]))
            parent[key] = type(parent[key])(parent[key] * factor) if math.isfinite(parent[key] * factor) else 0
        elif op == "value":
            parent[key] = draw(st.one_of(_hostile(), st.floats(allow_nan=True, allow_infinity=True),
                                         st.text(max_size=20)))
        elif op == "delete":
            del parent[key]
        elif op == "typo" and isinstance(parent, dict) and isinstance(key, str) and len(key) > 1:
            parent[key[:-1]] = parent.pop(key)
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op in ("reorder", "repeat") and isinstance(parent[key], list) and parent[key]:
            parent[key] = parent[key][::-1] if op == "reorder" else parent[key] + parent[key][-1:]
        else:
            parent[key] = draw(_hostile())
        notes.append(f"{op} {'.'.join(map(str, path))}")
    return data, "; ".join(notes)


# --- breaking a file ---------------------------------------------------------------------------------------------

@st.composite
def file_bytes(draw, data: dict) -> tuple[bytes, str]:
    """The mapping as YAML, or (sometimes) a file broken at the byte level."""
    try:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        text = "{}"
    raw = text.encode()
    kind = draw(st.sampled_from(["plain"] * 24 + ["bad_utf8", "deep", "huge_int", "duplicate", "truncate", "alias",
                                                 "binary"]))
    if kind == "bad_utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\xff\xfe" + raw[at:]
    elif kind == "deep":
        raw += b"nested: " + b"[" * 200 + b"]" * 200 + b"\n"
    elif kind == "huge_int":
        raw += b"seed: " + b"9" * 5000 + b"\n"
    elif kind == "duplicate":
        first = text.splitlines()[0] if text.strip() else "a: 1"
        raw += (first + "\n").encode()
    elif kind == "truncate":
        raw = raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
    elif kind == "alias":
        raw = b"x: &a [1, 2]\n" + b"".join(f"y{i}: *a\n".encode() for i in range(150)) + raw
    elif kind == "binary":
        raw = bytes(draw(st.lists(st.integers(0, 255), min_size=1, max_size=64)))
    return raw, kind


# --- the four families -------------------------------------------------------------------------------------------

def _example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def scenario_bases() -> list[dict]:
    """Cheap kinetics-only scenarios (a day or two): an IV mouse, an IV human infusion, a guided knee injection, and
    the fields that came later: a labelled infusion (``label``), a lesion in an organ (``lesion``) and an
    intralesional injection with its guidance."""
    bases = []
    for name, days in (("mouse_iv_eggenhofer2012", 1), ("human_iv_2e6_per_kg", 1), ("knee_ia_5e7_ultrasound", 2),
                       ("human_iv_111in_imaging", 1), ("human_iv_liver_lesion", 1),
                       ("human_intramyocardial_heart_lesion", 1)):
        d = _example(name)
        d["duration_days"] = days
        d["outputs"] = {"points_per_day": 4}
        d.pop("description", None)
        bases.append(d)
    return bases


PARAMETER_NAMES = ["k_death_lung", "k_death_blood", "f_trap", "K_home", "k_degrade", "m_death", "placement_ultrasound",
                   "k_death_lungs", "kdeath_lung", "no_such_parameter"]


@st.composite
def scenario_cases(draw) -> Case:
    base = draw(st.sampled_from(scenario_bases()))
    extra = [("parameters",), ("allow_out_of_bounds",), ("outputs", "times_hours"), ("solver", "rtol"),
             ("population", "size"), ("patient", "weight_kg"), ("regimen", "times_days"), ("label",),
             ("lesion", "organ"), ("regimen", "route"), ("regimen", "guidance")]
    data, note = draw(mutated(base, extra))
    if draw(st.integers(0, 3)) == 0:  # a plausible switch of a later field: another label, organ, route or guidance
        field = draw(st.sampled_from(["label", "lesion", "route", "guidance"]))
        if field == "label":
            data["label"] = draw(st.sampled_from(["111In-oxine", "99mTc-HMPAO", "18F-FDG", None]))
        elif field == "lesion":
            data["lesion"] = {"organ": draw(st.sampled_from(
                ["liver", "kidney", "lung", "heart", "gut", "brain", "systemic", "spleen"]))}
        elif isinstance(data.get("regimen"), dict):
            choices = (["intravenous", "intralesional", "intra_arterial", "intra_articular", "intramuscular"]
                       if field == "route" else ["ultrasound", "fluoroscopy", "blind", "mri"])
            data["regimen"][field] = draw(st.sampled_from(choices))
        note += f"; switch {field}"
    if draw(st.integers(0, 2)) == 0:  # parameter overrides, bare or with units, in or out of bounds
        name = draw(st.sampled_from(PARAMETER_NAMES))
        value = draw(st.one_of(st.sampled_from(FLOATS), st.floats(-10, 10), st.floats(0.05, 1.0)))
        if draw(st.booleans()):
            value = {"value": value, "units": draw(st.sampled_from(UNITS))}
        data["parameters"] = {name: value}
        if draw(st.booleans()):
            data["allow_out_of_bounds"] = [draw(st.sampled_from(PARAMETER_NAMES))]
        note += f"; parameters {data['parameters']}"
    raw, kind = draw(file_bytes(data))
    return Case("scenario", {"scenario.yaml": raw}, ["simulate", "{dir}/scenario.yaml", "--out", "{dir}/out"],
                "scenario.yaml", note=f"{note} ({kind})")


def design_base() -> dict:
    """The conftest's small knee-OA design, made cheaper: 2 patients per arm, visits at days 1 and 2."""
    from conftest import small_design

    d = small_design(n=2, visits_days=[1, 2])
    d["primary"]["visit_day"] = 2
    for p in d["published"]:
        p["visit_day"] = 2
    d.pop("description", None)
    return d


@st.composite
def design_cases(draw) -> Case:
    base = design_base()
    extra = [("parameters",), ("allow_out_of_bounds",), ("published", 0, "ci_low"), ("published", 0, "value"),
             ("dropout", "rate_per_year"), ("solver", "rtol"), ("arms", 0, "n")]
    data, note = draw(mutated(base, extra))
    if draw(st.integers(0, 3)) == 0:
        data["parameters"] = {draw(st.sampled_from(PARAMETER_NAMES)): draw(st.sampled_from(FLOATS))}
        note += f"; parameters {data['parameters']}"
    raw, kind = draw(file_bytes(data))
    return Case("design", {"design.yaml": raw}, ["trial", "{dir}/design.yaml", "--out", "{dir}/out"], "design.yaml",
                limit_s=300, note=f"{note} ({kind})")


def lot_base() -> dict:
    return _example("lot_passing")


@st.composite
def lot_cases(draw) -> Case:
    data, note = draw(mutated(lot_base(), [("potency", "t_cell_suppression_pct"), ("flow", "compensation"),
                                           ("flow", "gates", "fsc_min"), ("viability",)]))
    raw, kind = draw(file_bytes(data))
    return Case("lot", {"lot.yaml": raw}, ["qc", "{dir}/lot.yaml", "--out", "{dir}/out"], "lot.yaml",
                copy_lots=True, note=f"{note} ({kind})")


# FCS keyword mutations: (keyword, values) and whether a change makes the file untrustworthy
_FCS_CORRUPTING = {
    "tot": ["0", "-5", "1e12", "2499", "2501", "", "abc"],
    "par": ["1", "7", "9", "0", "-1", "x"],
    "datatype": ["I", "D", "A", "Q", "X", ""],
    "byteord": ["4,3,2,1", "2,1", "3,1,2,4", ""],
    "mode": ["U", "C", "X", ""],
    "p4b": ["16", "64", "8", "abc", ""],
    "nextdata": ["58", "1000"],
}
_FCS_OTHER = {
    "p4r": ["16", "0", "-1", "nan", "1e300", "262144"],
    "p1r": ["1000", "262144"],
    "p4n": ["FITC-A", "renamed", ""],
    "p4s": ["IgG1", ""],
    "cyt": ["another cytometer"],
    "p4v": ["999"],
}


def _spill_variants(spill: str) -> dict[str, tuple[str | None, bool]]:
    parts = spill.split(",")
    n = int(parts[0])

    def entry(value):
        p = list(parts)
        p[1 + n] = value
        return ",".join(p)

    return {"nan entry": (entry("nan"), True), "inf entry": (entry("inf"), True),
            "zero diagonal": (entry("0"), True), "text entry": (entry("x"), True),
            "singular": (",".join(parts[:1 + n] + ["1"] * (n * n)), True),
            "too few values": (",".join(parts[:-1]), True),
            "unknown channel": (",".join([parts[0], "NOPE-A", *parts[2:]]), True),
            "repeated channel": (",".join([parts[0], parts[2], *parts[2:]]), True),
            "count inf": (",".join(["inf", *parts[1:]]), True), "count -1": (",".join(["-1", *parts[1:]]), True),
            "count 99": (",".join(["99", *parts[1:]]), True), "count 0": ("0", True),
            "removed": (None, True), "identity": (",".join(parts[:1 + n] + ["1" if i % (n + 1) == 0 else "0"
                                                                            for i in range(n * n)]), False)}


@st.composite
def fcs_cases(draw) -> Case:
    """The passing example lot with its first stained tube's FCS file damaged: a HEADER/TEXT keyword changed (the
    file rewritten consistently otherwise), the spillover matrix broken, the DATA segment replaced, constant, with
    NaN or with a few bytes flipped, the HEADER offsets moved, or the file truncated."""
    from mscsim.qc.synthetic import rewrite_fcs

    src = EXAMPLES / "lots" / "passing_identity.fcs"
    raw = src.read_bytes()
    import flowio

    fd = flowio.FlowData(str(src))
    events = np.reshape(np.array(fd.events, dtype="<f4"), (-1, int(fd.text["par"])))
    kind = draw(st.sampled_from(["keyword", "keyword", "other_keyword", "spillover", "data", "data", "offsets",
                                 "truncate"]))
    corrupt, note, keywords, data = False, kind, None, None
    if kind == "keyword":
        key = draw(st.sampled_from(sorted(_FCS_CORRUPTING)))
        value = draw(st.sampled_from(_FCS_CORRUPTING[key]))
        keywords = {key: value}
        corrupt = str(fd.text.get(key, "0")).strip() != value
        note = f"${key.upper()}={value!r}"
    elif kind == "other_keyword":
        key = draw(st.sampled_from(sorted(_FCS_OTHER)))
        keywords = {key: draw(st.sampled_from(_FCS_OTHER[key]))}
        note = f"{keywords}"
    elif kind == "spillover":
        name, (value, corrupt) = draw(st.sampled_from(sorted(_spill_variants(fd.text["spillover"]).items())))
        keywords = {"spillover": value}
        note = f"spillover {name}"
    elif kind == "data":
        how = draw(st.sampled_from(["garbage", "constant", "nan", "inf", "flip", "zeros", "swap"]))
        e = events.copy()
        if how == "garbage":
            data = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))).bytes(e.nbytes)
        elif how == "constant":
            data = np.tile(e[draw(st.integers(0, len(e) - 1))], (len(e), 1)).astype("<f4").tobytes()
        elif how == "zeros":
            data = np.zeros_like(e).tobytes()
        elif how == "swap":
            data = e.astype(">f4").tobytes()  # big-endian data under a little-endian $BYTEORD
        elif how in ("nan", "inf"):
            e[draw(st.integers(0, len(e) - 1)), draw(st.integers(0, e.shape[1] - 1))] = NAN if how == "nan" else INF
            data = e.tobytes()
        else:
            b = bytearray(e.tobytes())
            for _ in range(draw(st.integers(1, 8))):
                b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
            data = bytes(b)
        corrupt = how != "flip"
        note = f"data {how}"
    files = {}
    if kind in ("offsets", "truncate"):
        b = bytearray(raw)
        if kind == "offsets":
            at = draw(st.sampled_from([10, 18, 26, 34]))
            b[at:at + 8] = f"{draw(st.integers(0, 10 ** 7)):>8d}".encode()[:8]
        else:
            b = b[:draw(st.integers(0, len(b) - 1))]
        files["lots/passing_identity.fcs"] = bytes(b)
        corrupt = bytes(b) != raw
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "m.fcs"
            rewrite_fcs(src, target, keywords, data)
            files["lots/passing_identity.fcs"] = target.read_bytes()
    lot = (EXAMPLES / "lot_passing.yaml").read_bytes()
    files["lot.yaml"] = lot
    return Case("fcs", files, ["qc", "{dir}/lot.yaml", "--out", "{dir}/out"], "passing_identity.fcs",
                corrupt=corrupt, copy_lots=True, note=note)


FAMILIES = {"scenario": scenario_cases, "design": design_cases, "lot": lot_cases, "fcs": fcs_cases}


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
