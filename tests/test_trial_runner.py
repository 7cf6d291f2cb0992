"""The virtual-trial runner end to end, with real runs of a small knee-OA design (nothing of the solver or the
model is mocked): the same design and seed give the same per-patient results whatever the number of workers and
the chunk size, and the same Parquet bytes in another process; a trial interrupted halfway (Ctrl-C) resumes to the
result of an uninterrupted run without recomputing the chunks it had finished; a run that fails leaves nothing; a bad design is refused with the field named, exit status 2 and nothing written; every
bundled design loads, and one runs through the CLI and writes every result file.

Only equalities between runs and structural facts are asserted, never the trial's numbers (the model's
parameters are recalibrated from time to time)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TRIAL_DESIGN, assert_same_trial_results, small_design, trial_tables, write_design
from mscsim.cli import main
from mscsim.trials import bundled_designs, design_from_dict, load_design
from mscsim.trials import runner, trial
from mscsim.trials.runner import CHUNK_DIR, plan_chunks, simulated_per_arm
from mscsim.trials.trial import RESULT_FILES, chunk_store

N_PER_ARM = 3  # the shared small design (conftest.small_design): 2 arms of 3 patients


def _cli(*args: str) -> int:
    return main(["trial", *map(str, args)])


@pytest.fixture(scope="module")
def two_workers(trial_reference, tmp_path_factory):
    """The same design run again as a user runs it, in a new process (the installed command's module) with two
    local worker processes (started by forkserver, not forked from this one), the reference's chunks."""
    out = tmp_path_factory.mktemp("two_workers") / "out"
    proc = subprocess.run([sys.executable, "-m", "mscsim.cli", "trial", str(trial_reference.design), "--out", str(out),
                           "--workers", "2", "--chunk-size", str(trial_reference.chunk_size)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "deadlock" not in proc.stderr
    return out


@pytest.fixture(scope="module")
def one_chunk_per_arm(trial_reference, tmp_path_factory):
    """The same design in one process, chunks larger than an arm (one chunk per arm)."""
    out = tmp_path_factory.mktemp("one_chunk_per_arm") / "out"
    assert _cli(trial_reference.design, "--out", out, "--chunk-size", 5) == 0
    return out


# --- a. reproducible whatever the workers and the chunking -------------------------------------------------------


def test_chunk_plans_cover_every_patient_once():
    design = design_from_dict(small_design())
    assert [len(plan_chunks(design, size)) for size in (1, 2, 5)] == [6, 4, 2]  # chunks of 2 are 2 + 1 per arm
    for size in (1, 2, 5):  # every patient in exactly one chunk
        ids = [i for c in plan_chunks(design, size) for i in range(c.start, c.start + c.count)]
        assert ids == list(range(2 * N_PER_ARM))


def test_two_workers_give_identical_results(trial_reference, two_workers):
    assert_same_trial_results(two_workers, trial_reference.out)


def test_the_same_trial_in_another_process_writes_the_same_parquet_bytes(trial_reference, two_workers):
    """Run to run, not only value to value: the reference ran inside this test process, the other in a fresh
    command with its own workers (another heap history, other processes); the Parquet files are byte-identical."""
    for name in ("endpoints.parquet", "patients.parquet"):
        assert (two_workers / name).read_bytes() == (trial_reference.out / name).read_bytes(), name


def test_one_chunk_per_arm_gives_identical_results(trial_reference, one_chunk_per_arm):
    assert_same_trial_results(one_chunk_per_arm, trial_reference.out)


# --- b. an interrupted trial resumes -----------------------------------------------------------------------------------


def _finished(store: Path, chunks) -> set[str]:
    """Stems of the chunks whose two files are both written (the runner's own test of a finished chunk)."""
    d = store / CHUNK_DIR
    return {c.stem for c in chunks
            if (d / f"{c.stem}.endpoints.parquet").exists() and (d / f"{c.stem}.patients.parquet").exists()}


# ``mscsim`` as a terminal starts it: Ctrl-C raises KeyboardInterrupt even when this test runs with SIGINT ignored
# (a background job inherits that). Set in the child itself, not by a ``preexec_fn``, which would make subprocess
# fork this JAX-threaded process instead of spawning.
_CTRL_C_LIKE_A_TERMINAL = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                           "from mscsim.cli import main; sys.exit(main(sys.argv[1:]))")


def _run_and_kill(design_path: Path, out: Path, chunk_size: int, chunks, timeout_s: float = 300.0) -> bool:
    """Start ``mscsim trial`` in a subprocess and press Ctrl-C (SIGINT to its process group) as soon as one chunk is
    finished; True if it was stopped with some but not all chunks done (False if it finished first). A stopped run
    says so on a line of its own (not glued to the progress line) and exits with status 130."""
    store = chunk_store(out)
    log_path = out.with_name(out.name + ".log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_LIKE_A_TERMINAL, "trial", str(design_path), "--out",
                                 str(out), "--chunk-size", str(chunk_size)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group, as a terminal's foreground job
        try:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and not _finished(store, chunks):
                assert time.monotonic() < deadline, f"no chunk finished within {timeout_s} s"
                time.sleep(0.02)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = log_path.read_text()
    if rc not in (0, 130):
        pytest.fail(f"mscsim trial failed (status {rc}):\n{log[-3000:]}")
    if rc == 130:
        lines = log.replace("\r", "\n").splitlines()
        assert any(ln.startswith("mscsim: interrupted; ") and "run the same command again to resume" in ln
                   for ln in lines), log[-2000:]
        assert "Traceback" not in log
    return rc == 130 and 0 < len(_finished(store, chunks)) < len(chunks)


def test_interrupted_trial_resumes_to_the_uninterrupted_result_without_recomputing(tmp_path, monkeypatch, trial_reference):
    chunk_size = trial_reference.chunk_size
    for n in (N_PER_ARM, 4 * N_PER_ARM):  # if the first run finishes before the kill, more chunks
        design_path = write_design(small_design(n=n), tmp_path / f"design_{n}.yaml")
        chunks = plan_chunks(design_from_dict(small_design(n=n)), chunk_size)
        out = tmp_path / f"trial_{n}"
        if _run_and_kill(design_path, out, chunk_size, chunks):
            break
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(chunk_store(out), ignore_errors=True)
    else:
        pytest.fail("the trial finished before it could be interrupted, twice")
    store = chunk_store(out)
    assert not out.exists()  # the results are written only once every chunk is in
    done = _finished(store, chunks)
    files = [store / CHUNK_DIR / f"{stem}.{kind}.parquet" for stem in done for kind in ("endpoints", "patients")]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}

    # resuming with another chunking is refused (its chunks would not line up), and touches nothing
    assert _cli(design_path, "--out", out, "--chunk-size", chunk_size + 1) == 2
    assert not out.exists() and _finished(store, chunks) == done

    computed: list[str] = []
    real_chunk, real_collect = runner.run_chunk, trial.collect

    def counting_chunk(payload, chunk):
        computed.append(chunk.stem)
        return real_chunk(payload, chunk)

    def checked_collect(where, plan, **kwargs):  # the moment before assembly, when the chunk files are still there
        assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == before
        return real_collect(where, plan, **kwargs)

    monkeypatch.setattr(runner, "run_chunk", counting_chunk)
    monkeypatch.setattr(trial, "collect", checked_collect)
    assert _cli(design_path, "--out", out, "--chunk-size", chunk_size) == 0
    assert not set(computed) & done  # the chunks finished before the kill were not recomputed ...
    assert sorted(computed) == sorted(c.stem for c in chunks if c.stem not in done)  # ... the others once each
    assert not store.exists()  # the chunk store is removed once the trial is assembled

    endpoints, patients = trial_tables(out)
    assert patients["patient"].tolist() == list(range(2 * n))  # every patient once, none duplicated
    assert not endpoints.duplicated(["patient", "endpoint", "visit_day"]).any()
    if n == N_PER_ARM:
        expected = trial_reference.out  # an uninterrupted run of the same design and chunking
    else:
        monkeypatch.undo()  # the reference run is a plain one: its collect must not check the resumed run's files
        expected = tmp_path / "uninterrupted"
        assert _cli(design_path, "--out", expected, "--chunk-size", chunk_size) == 0
    assert_same_trial_results(out, expected)


# --- c. bad designs ---------------------------------------------------------------------------------------------


def _set(path: str, value):
    def change(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key) if key.isdigit() else key]
        d[int(last) if last.isdigit() else last] = value
    return change


def _rename(old: str, new: str):
    def change(d):
        d[new] = d.pop(old)
    return change


BAD = [
    # (change to the design, the field the error names, text of what is allowed)
    (_set("arms.0.n", 1), "arms.0.n", "greater than or equal to 2"),
    (_set("endpoints.pain_vass", {}), "endpoints.pain_vass", "'pain_vas'"),
    (_set("arms.1.regimen.route", "intra_articulr"), "arms.1.regimen.route", "'intra_articular'"),
    (_set("arms.0.route", "intraarticular"), "arms.0.route", "'intra_articular'"),
    (_set("primary.visit_day", 365), "primary.visit_day", "one of visits_days [90.0, 180.0]"),
    (_set("published.0.arm", "placebo"), "published.0.arm", "'saline'"),
    (_rename("visits_days", "visit_days"), "visit_days", "known fields"),
    (_set("population", "no_such_cohort"), "population", "knee_oa_adults"),
    (_set("arms.1.regimen.dose.cells", -1), "arms.1.regimen.dose.cells", "greater than or equal to 1"),
    (_set("arms.1.regimen.dose.cells", float("nan")), "arms.1.regimen.dose.cells", "finite"),
    (_set("visits_days", [90, float("inf")]), "visits_days.1", "finite"),
    (_set("published.0.statistic", "rate"), "published.0.value", "a rate within [0, 1]"),
    (_set("published.0.ci_low", 5.0), "published.0.ci_low", "ci_low <= ci_high"),
    (_set("parameters", {"k_degrad": 0.01}), "parameters", "did you mean 'k_degrade'"),
    (_set("parameters", {"k_degrade": -1}), "parameters.k_degrade", "non-negative"),
    (_set("parameters", {"k_degrade": 5.0}), "parameters.k_degrade", "[0.001, 0.2]"),
    (_set("solver", {"rtol": 1e-20}), "solver.rtol", ">= 1e-13"),
]


@pytest.mark.parametrize("change,field,allowed", BAD, ids=[b[1] for b in BAD])
def test_bad_design_names_the_field_exits_2_and_writes_nothing(tmp_path, capsys, change, field, allowed):
    data = small_design()
    change(data)
    path = write_design(data, tmp_path / "bad.yaml")
    assert _cli(path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"field '{field}" in err and allowed in err and str(path) in err, err
    assert list(tmp_path.iterdir()) == [path]  # no output folder, no chunk store, no partial folder


def test_missing_or_unreadable_design_file_exits_2_and_writes_nothing(tmp_path, capsys):
    missing = tmp_path / "no_such_design.yaml"
    assert _cli(missing, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "field 'DESIGN'" in err and str(missing) in err and TRIAL_DESIGN in err  # names the bundled designs
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\narms: [unclosed\n")
    assert _cli(broken, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "valid YAML" in err and str(broken) in err
    assert sorted(tmp_path.iterdir()) == [broken]


def test_bad_runner_options_exit_2(tmp_path, capsys, trial_reference):
    assert _cli(trial_reference.design, "--out", tmp_path / "out", "--workers", 0) == 2
    assert "field '--workers'" in capsys.readouterr().err
    assert _cli(trial_reference.design, "--out", tmp_path / "out", "--chunk-size", 0) == 2
    assert "field '--chunk-size'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_installed_command_exits_with_status_2(tmp_path):
    data = small_design()
    data["arms"][0]["n"] = 0
    path = write_design(data, tmp_path / "bad.yaml")
    proc = subprocess.run([sys.executable, "-m", "mscsim.cli", "trial", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "field 'arms.0.n'" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == [path]


# --- d. bundled designs ------------------------------------------------------------------------------------------


def test_designs_are_bundled():
    assert TRIAL_DESIGN in bundled_designs() and len(bundled_designs()) >= 2


@pytest.mark.parametrize("name", bundled_designs())
def test_every_bundled_design_loads(name):
    design, path = load_design(name)
    assert design.name == name and path.stem == name
    assert load_design(path)[0] == design  # by path as by name
    arms = [a.name for a in design.arms]
    assert design.primary.endpoint in design.endpoints and design.primary.visit_day in design.visits_days
    assert design.control is None or design.control.name in arms
    assert {p.arm for p in design.published} <= set(arms)
    chunks = plan_chunks(design)
    per_arm = simulated_per_arm(design)
    assert sum(c.count for c in chunks) == sum(per_arm.values()) >= design.n_patients
    assert all(per_arm[a.name] >= a.n for a in design.arms)


def test_bundled_design_runs_through_the_cli_and_writes_every_result_file(trial_reference):
    out = trial_reference.out
    design = load_design(trial_reference.design)[0]
    for name in RESULT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not chunk_store(out).exists()  # removed once the trial is assembled
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(RESULT_FILES) <= set(manifest["files"]) | {"manifest.json"}
    assert manifest["design_digest"] == design.digest() and manifest["seed"] == design.seed
    assert manifest["n_simulated"] == manifest["n_in_trial"] == design.n_patients == 2 * N_PER_ARM
    assert manifest["design"]["name"] == TRIAL_DESIGN

    endpoints, patients = trial_tables(out)
    assert patients["patient"].tolist() == list(range(design.n_patients))
    assert patients["arm"].tolist() == [a.name for a in design.arms for _ in range(a.n)]
    assert patients["in_trial"].all()
    # one row per patient, endpoint and visit, in patient order
    assert len(endpoints) == design.n_patients * len(design.endpoints) * len(design.visits_days)
    assert set(endpoints["endpoint"]) == set(design.endpoints)
    assert set(endpoints["visit_day"]) == set(design.visits_days)
    assert endpoints["patient"].is_monotonic_increasing

    published = pd.read_csv(out / "published_vs_simulated.csv")
    assert {"endpoint", "visit_day", "arm", "published", "simulated"} <= set(published.columns)
    assert len(design.published) > 0
    assert {(r.endpoint, float(r.visit_day), r.arm) for r in published.itertuples()} == \
        {(p.endpoint, p.visit_day, p.arm) for p in design.published}
    assert published["published"].tolist() == [p.value for p in design.published]
    assert "published vs simulated" in trial_reference.stdout
    assert design.title in (out / "report.html").read_text()
    assert (out / "forest.png").read_bytes()[:4] == b"\x89PNG"


def test_an_out_folder_of_other_files_is_refused_before_any_work(trial_reference, tmp_path, monkeypatch):
    out = tmp_path / "other"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")

    def no_work(*args, **kwargs):
        raise AssertionError("a chunk was computed for an output folder that is then refused")

    monkeypatch.setattr(runner, "run_chunk", no_work)
    assert _cli(trial_reference.design, "--out", out, "--chunk-size", 5) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # no chunk store either


def test_a_run_that_fails_removes_what_it_created(tmp_path, capsys, trial_reference):
    """An override allowed out of its bounds that makes the model unphysical (more of the dose placed in the knee
    than was given) fails at the first chunk of the cell arm: exit 2 naming the design, and neither results nor a
    chunk store are left, so the corrected design starts clean."""
    data = small_design(parameters={"placement_landmark": 1.5}, allow_out_of_bounds=["placement_landmark"])
    path = write_design(data, tmp_path / "unphysical.yaml")
    assert _cli(path, "--out", tmp_path / "out", "--chunk-size", trial_reference.chunk_size) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mscsim: error: ") and str(path) in err and "went negative" in err
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_corrected_design_replaces_the_chunks_of_an_interrupted_one(tmp_path, capsys, trial_reference):
    """The chunk store of an interrupted run of another design cannot be resumed by this one: it is replaced, and
    the user is told, instead of blocking the corrected rerun."""
    out = tmp_path / "out"
    runner.execute(design_from_dict(small_design(seed=7)), chunk_store(out), chunk_size=trial_reference.chunk_size,
                   max_chunks=1)
    assert _finished(chunk_store(out), plan_chunks(design_from_dict(small_design(seed=7)),
                                                   trial_reference.chunk_size))
    assert _cli(trial_reference.design, "--out", out, "--chunk-size", trial_reference.chunk_size) == 0
    assert "earlier run of another design" in capsys.readouterr().err
    assert_same_trial_results(out, trial_reference.out)


def test_a_trial_estimated_past_the_limit_is_refused_before_it_runs_unless_allowed(tmp_path, capsys, monkeypatch):
    """Bad input at the boundary: ``mscsim trial`` of a design far past the time limit exits 2 with the file, the
    field, the count and the way out named, and writes nothing; ``--allow-large`` (``check_size(allow_large=True)``)
    lets it through with the same estimate, which falls with workers."""
    import mscsim.api

    n = 5_000_000  # per arm: 1e7 patients, about 4 h at the README's speed with one worker
    path = write_design(small_design(n=n), tmp_path / "huge.yaml")
    design = load_design(path)[0]
    one, two = runner.check_size(design, 1, allow_large=True), runner.check_size(design, 2, allow_large=True)
    assert one == pytest.approx(2 * n / runner.PATIENTS_PER_S_PER_WORKER) and one == pytest.approx(2 * two)
    assert one > runner.MAX_ESTIMATED_SECONDS
    monkeypatch.setattr(mscsim.api, "trial", lambda *a, **k: pytest.fail("the refused trial started"))
    assert main(["trial", str(path), "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"mscsim: error: {path}: field 'arms.n'"), line
    assert f"{2 * n:,} simulated patients" in line and "--allow-large" in line and "worker" in line
    assert not (tmp_path / "out").exists()
