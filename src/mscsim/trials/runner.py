"""Run a trial design: patients in chunks through the batched solver, each chunk streamed to Parquet.

A chunk (arm, first patient id, count) is a pure function of the design: the same patients, covariates, model
parameters, noise and adverse events whatever chunk size, worker count or machine computes it, because every
random number is keyed on (seed, patient id, stream) and the solver's arithmetic per patient does not depend on
the batch. Finished chunks are written atomically; a trial that is stopped resumes from them, and memory stays
flat however many patients a trial has. Chunks run in this process, in local processes (``workers``), or on a
Dask cluster (``scheduler``).
"""

from __future__ import annotations

import copyreg
import json
import math
import os
import shutil
import signal
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .. import __version__
from ..delivery.routes import is_local
from ..endpoints import endpoint_values, load_endpoints, response_codes
from ..errors import InputError, MscsimError
from ..model.compiled import CompiledModel
from ..simulation import Setup, resolve_setup, solve, untreated
from .cohort import draw_cohort, to_model_covariates
from .design import ArmSpec, DesignSpec, arm_scenario
from .observe import observe
from .safety import ExposureContext, adverse_events

CHUNK_DIR = "chunks"
RUN_FILE = "run.json"


class WorkerLost(MscsimError):
    """A worker process died (killed, out of memory): not the design's fault, so the finished chunks are kept."""


@dataclass(frozen=True)
class Chunk:
    arm: str
    start: int  # first global patient id
    count: int

    @property
    def stem(self) -> str:
        return f"{self.arm}_{self.start:010d}_{self.count}"


def simulated_per_arm(design: DesignSpec) -> dict[str, int]:
    """Patients simulated per arm: the trial's, or the larger pool that power analysis and the published comparison
    resample from."""
    pool = max(design.power.pool_per_arm if design.power and design.power.pool_per_arm else 0,
               design.prediction.pool_per_arm if design.prediction else 0)
    return {a.name: max(a.n, pool) + math.ceil((design.screen_reserve if design.inclusion or a.inclusion else 0.0)
                                               * a.n) for a in design.arms}


# The README's 1,000,000-patient Lee 2019 benchmark ran at about 1,400 patients/s per worker on the 2-vCPU
# development machine (357 s with 2 workers, RODAS5P, benchmarks/results/trial-1e6-2026-12-07-rodas5p.json);
# designs with longer follow-up or systemic delivery cost more, so the guide is set at half that. Only for the
# estimate a user sees before a run, and for refusing a run far beyond what was asked of ``mscsim trial``.
PATIENTS_PER_S_PER_WORKER = 700.0
IN_FLIGHT_PER_WORKER = 3  # chunks handed to each worker ahead of its results (keeps workers busy, memory bounded)
MAX_ESTIMATED_SECONDS = 2 * 3600.0


def estimate_seconds(design: DesignSpec, workers: int = 1) -> float:
    """Wall time of a run at the benchmark's speed (a rough guide: machines and designs differ)."""
    return sum(simulated_per_arm(design).values()) / (PATIENTS_PER_S_PER_WORKER * max(1, workers))


def check_size(design: DesignSpec, workers: int = 1, *, allow_large: bool = False, file: str | None = None) -> float:
    """Refuse a design estimated to run longer than MAX_ESTIMATED_SECONDS unless ``allow_large``; returns the
    estimate in seconds."""
    seconds = estimate_seconds(design, workers)
    if seconds > MAX_ESTIMATED_SECONDS and not allow_large:
        n = sum(simulated_per_arm(design).values())
        raise InputError("arms.n", n, f"a trial estimated to run within {MAX_ESTIMATED_SECONDS / 3600:g} h: "
                         f"{n:,} simulated patients (arms and resampling pools) would take about "
                         f"{seconds / 3600:.2g} h with {workers} worker(s) at the README's benchmark speed; add "
                         "workers or a Dask cluster, or pass --allow-large to run it anyway", file=file)
    return seconds


def arm_offsets(design: DesignSpec) -> dict[str, int]:
    """First global patient id of each arm (arms hold consecutive ids, in the order listed)."""
    out, k = {}, 0
    for name, m in simulated_per_arm(design).items():
        out[name] = k
        k += m
    return out


def plan_chunks(design: DesignSpec, chunk_size: int | None = None) -> list[Chunk]:
    size = chunk_size or design.solver.chunk_size
    offsets, counts = arm_offsets(design), simulated_per_arm(design)
    return [Chunk(arm, offsets[arm] + s, min(size, counts[arm] - s))
            for arm in counts for s in range(0, counts[arm], size)]


@dataclass(frozen=True)
class DrawChunk:
    """The first ``pool_per_arm`` patients of an arm under the parameter draws with the given keys."""

    arm: str
    keys: tuple[int, ...]

    @property
    def stem(self) -> str:
        return f"draws_{self.arm}_{self.keys[0]:08d}_{len(self.keys)}"


def plan_draw_chunks(design: DesignSpec, keys, chunk_size: int | None = None) -> list[DrawChunk]:
    """Draw chunks of about ``chunk_size`` patient rows (draws x pool_per_arm) per arm, in key order."""
    size = chunk_size or design.solver.chunk_size
    per = max(1, size // design.uncertainty.pool_per_arm)
    keys = [int(k) for k in keys]
    return [DrawChunk(arm.name, tuple(keys[i:i + per])) for arm in design.arms for i in range(0, len(keys), per)]


def run_draw_chunk(design: DesignSpec, chunk: DrawChunk) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One draw chunk: (observed endpoints of the arm's pool under each draw, long with 'draw'; failed draws)."""
    from ..uncertainty.draws import values_for
    from ..uncertainty.priors import run_posterior
    from .uncertain import arm_sets, design_space

    design, arm, _ = _setup(design, chunk.arm)
    spec = design.uncertainty
    space = design_space(design)
    posterior = run_posterior(spec.posterior, design.disease, space, max(chunk.keys) + 1)
    keys = np.array(chunk.keys)
    table, failed = arm_sets(design, arm, space, values_for(space, design.seed, keys, posterior), keys,
                             spec.pool_per_arm)
    return table, pd.DataFrame({"draw": keys, "arm": arm.name, "failed": failed})


def _run(design: DesignSpec, chunk) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A patient chunk or a draw chunk."""
    return run_draw_chunk(design, chunk) if isinstance(chunk, DrawChunk) else run_chunk(design, chunk)


def _run_and_store(design: DesignSpec, chunk, out: Path) -> None:
    """A chunk run and stored by a local worker itself: its tables never travel back to the parent (no pickling
    there and back, no writing in the parent, which shares the cores with the workers)."""
    _store(out, chunk, _run(design, chunk))


# The resolved scenario of each arm (compiled model, parameters), once per process, keyed by the design's digest:
# the parent resolves them before the first chunk and hands them to its workers (see ``_map``).
_SETUPS: dict[tuple[str, str], Setup] = {}


def _setup(design: DesignSpec, arm_name: str) -> tuple[DesignSpec, ArmSpec, Setup]:
    """The resolved scenario of one arm, from this process's cache or resolved (and compiled) now."""
    arm = next(a for a in design.arms if a.name == arm_name)
    key = (design.digest(), arm_name)
    if key not in _SETUPS:
        _SETUPS[key] = resolve_setup(arm_scenario(design, arm))
    return design, arm, _SETUPS[key]


_COMPUTED = [0]  # chunks this process has computed


def chunks_computed() -> int:
    """How many chunks this process has computed (which process ran the work, for a cluster's tests)."""
    return _COMPUTED[0]


def resolve_arms(design: DesignSpec) -> dict[str, Setup]:
    """Every arm's setup (the model compiled once per composition); names and values were checked when the design
    was loaded, so this is where the work starts."""
    return {a.name: _setup(design, a.name)[2] for a in design.arms}


def _reduce_compiled(model: CompiledModel):
    """Pickle a compiled model by its fields: its generated functions are rebuilt from ``source`` on arrival."""
    return CompiledModel, tuple(getattr(model, f.name) for f in fields(model))


# a worker process gets each arm's compiled model with its chunks instead of compiling it again (tens of seconds
# for the tissue model); the exec'd functions a CompiledModel caches cannot be pickled, its fields can
copyreg.pickle(CompiledModel, _reduce_compiled)


def _install(digest: str, setups: dict[str, Setup]) -> None:
    """Worker initialiser: the parent's resolved arms, and Ctrl-C left to the parent (which stops the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_thread_per_worker()
    for arm, setup in setups.items():
        _SETUPS[(digest, arm)] = setup


def one_thread_per_worker() -> None:
    """A worker process is already one of several: the compiled engine runs its patients on one thread there
    (the numbers do not depend on the thread count)."""
    import numba

    numba.set_num_threads(1)


def _output_days(setup: Setup) -> np.ndarray:
    from ..simulation import output_times

    return output_times(setup.scenario) / 24.0


def run_chunk(design: DesignSpec, chunk: Chunk) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate one chunk: (observed endpoints, long; one row per patient with covariates, AEs, dropout). The design
    arrives as the validated object (pickled to a worker), never through a lossy text round trip."""
    design, arm, setup = _setup(design, chunk.arm)
    _COMPUTED[0] += 1
    ids = np.arange(chunk.start, chunk.start + chunk.count)
    cohort = draw_cohort(design.cohort, design.seed, chunk.start, chunk.count)
    prob = setup.problem(chunk.start, chunk.count, to_model_covariates(cohort).reset_index(drop=True))
    if not arm.has_cells:
        prob = untreated(prob)
    try:
        states = solve(setup, prob, first_patient=chunk.start)
    except MscsimError as exc:
        raise MscsimError(f"arm '{arm.name}', patients {chunk.start}-{chunk.start + chunk.count - 1}: {exc}") from None
    return observed(design, arm, setup, ids, cohort, states)


def observed(design: DesignSpec, arm: ArmSpec, setup: Setup, ids: np.ndarray, cohort: pd.DataFrame,
             states: np.ndarray, *, coefficients: dict | None = None, params=None, safety: bool = True
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the trial records for simulated patients (states: patients x output times x model states): endpoints at
    the visits through the observation model, responses, and per patient covariates, dropout and adverse events.
    ``coefficients`` and ``params`` replace the endpoint coefficients and the trial-level responses (one parameter
    set drawn from their uncertainty)."""
    model = setup.model
    names = model.state_names
    days = _output_days(setup)
    at = [int(np.argmin(np.abs(days - d))) for d in [0.0, *design.visits_days]]
    values = endpoint_values(design.disease, {s: states[:, :, k] for k, s in enumerate(names)}, names, coefficients)
    eps = load_endpoints(design.disease)
    responses = {name: response_codes(r, values[r.of], days, design.visits_days)
                 for name, r in eps.spec.responses.items() if name in design.endpoints}
    modelled = {name: v[:, at] for name, v in values.items()}
    enrolled = meets_inclusion(design, {name: v[:, 0] for name, v in modelled.items()}, arm)
    long, per_patient = observe(design, arm, ids, modelled, responses, params)
    long = long[long["patient"].isin(ids[enrolled])].reset_index(drop=True)  # screen failures are not followed
    if not safety:
        return long, per_patient
    count = len(ids)
    weight = cohort["weight_kg"].to_numpy(dtype=float) if "weight_kg" in cohort else \
        np.full(count, setup.body_weight())
    lung = states[:, :, model.index("msc_lung")].max(axis=1) / weight
    doses = setup.patient_doses(count, to_model_covariates(cohort).reset_index(drop=True)) \
        if arm.has_cells else np.zeros(count)
    route = arm.delivery_route or "intravenous"
    ctx = ExposureContext(route=route, cells_per_administration=doses, weight_kg=weight,
                          n_administrations=len(arm.regimen.times_days) if arm.regimen else 1,
                          donor=arm.product.donor if arm.product else "autologous", disease=design.disease,
                          unregulated=arm.unregulated)
    aes = adverse_events(ctx, ids, design.seed, lung if arm.has_cells and not is_local(route) else None)
    # the per-patient table, its columns assembled first and joined once (inserted a column at a time and merged,
    # it cost ~5 ms of a 60 ms saline chunk); per_patient's rows follow ids, as cohort's do
    meaning = {v: k for k, v in load_endpoint_codes().items()}
    extra = {"enrolled": enrolled,
             "in_trial": ids < arm_offsets(design)[arm.name] + arm.n,  # set again by ``screen`` once all are in
             "dose_cells": doses, "peak_lung_cells_per_kg": lung,
             **{f"{name}_modelled": [meaning[int(c)] for c in codes] for name, codes in responses.items()},
             **{col: per_patient[col].to_numpy() for col in per_patient.columns if col != "patient"},
             **{f"ae_{col}": aes[col].to_numpy() for col in aes.columns}}
    patients = pd.concat([pd.DataFrame({"patient": ids, "arm": arm.name}), cohort.reset_index(drop=True),
                          pd.DataFrame(extra)], axis=1)
    return long, patients


def meets_inclusion(design: DesignSpec, baseline: dict[str, np.ndarray], arm: ArmSpec | None = None) -> np.ndarray:
    """Whether each patient meets the design's enrolment criteria (and ``arm``'s own) on the disease endpoints at
    baseline."""
    n = len(next(iter(baseline.values()))) if baseline else 0
    ok = np.ones(n, dtype=bool)
    for crit in [*design.inclusion, *(arm.inclusion if arm is not None else [])]:
        v = np.asarray(baseline[crit.endpoint], dtype=float)
        if crit.min is not None:
            ok &= v >= crit.min
        if crit.max is not None:
            ok &= v <= crit.max
    return ok


def screen(design: DesignSpec, patients: pd.DataFrame) -> pd.DataFrame:
    """The trial's patients once screening is done: in each arm, the first ``n`` enrolled patients (a screen
    failure is replaced by the arm's next simulated patient); the rest of the enrolled are the resampling pool."""
    out = patients.copy()
    if "enrolled" not in out:
        out["enrolled"] = True
    enrolled = out["enrolled"].astype(bool)
    rank = enrolled.astype(int).groupby(out["arm"]).cumsum()
    size = out["arm"].map({a.name: a.n for a in design.arms})
    out["in_trial"] = enrolled & (rank <= size)
    return out


def screening_record(design: DesignSpec, patients: pd.DataFrame) -> list[dict]:
    """Per arm: patients screened (simulated), screen failures, enrolled in the trial, and those the design asked
    for (fewer enrolled than asked means the simulated patients ran out of replacements)."""
    rows = []
    for arm in design.arms:
        p = patients[patients["arm"] == arm.name]
        rows.append({"arm": arm.name, "screened": int(len(p)), "screen_failures": int((~p["enrolled"]).sum()),
                     "in_trial": int(p["in_trial"].sum()), "asked": arm.n})
    return rows


def load_endpoint_codes() -> dict[str, int]:
    from ..endpoints import RESPONSE_CODES

    return dict(RESPONSE_CODES)


# --- execution -------------------------------------------------------------------------------------------


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:  # an interruption or a full disk leaves no partial file
        tmp.unlink(missing_ok=True)
        raise


def _chunk_paths(out: Path, chunk) -> tuple[Path, Path]:
    d = out / CHUNK_DIR
    if isinstance(chunk, DrawChunk):
        return d / f"{chunk.stem}.endpoints.parquet", d / f"{chunk.stem}.failed.parquet"
    return d / f"{chunk.stem}.endpoints.parquet", d / f"{chunk.stem}.patients.parquet"


def _is_done(out: Path, chunk: Chunk) -> bool:
    return all(p.exists() for p in _chunk_paths(out, chunk))


def _store(out: Path, chunk: Chunk, result: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    long, patients = result
    ep, pp = _chunk_paths(out, chunk)
    _write_atomic(patients, pp)  # the endpoints file is written last: its presence marks the chunk done
    _write_atomic(long, ep)


def _check_run_file(out: Path, design: DesignSpec, chunk_size: int, notice: Callable[[str], None] | None = None
                    ) -> None:
    """Make ``out`` this run's chunk store. An interrupted run of the same design resumes from it; one of another
    design or mscsim version (a corrected design, say) is replaced, with a notice; a different chunk size is
    refused, since a rerun with the earlier size resumes."""
    run_file = out / RUN_FILE
    record = {"design_digest": design.digest(), "name": design.name, "seed": design.seed,
              "chunk_size": chunk_size, "mscsim_version": __version__}
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text())
        except (OSError, ValueError):
            old = {}
        changed = [k for k in ("design_digest", "mscsim_version") if old.get(k) != record[k]]
        if changed:
            kept = len(list((out / CHUNK_DIR).glob("*.endpoints.parquet")))
            what = "another design" if "design_digest" in changed else f"mscsim {old.get('mscsim_version')}"
            if notice:
                notice(f"{out} held {kept} finished chunk(s) of an earlier run of {what} "
                       f"({old.get('name', '?')}); they cannot be resumed by this design and were removed")
            shutil.rmtree(out)
        elif old.get("chunk_size") != chunk_size:
            raise InputError("--chunk-size", chunk_size, f"the chunk size of the interrupted run kept in {out} "
                             f"({old.get('chunk_size')}), to resume it; or remove {out} to start afresh")
    if not run_file.exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / CHUNK_DIR).mkdir(exist_ok=True)
        tmp = out / f".{RUN_FILE}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, run_file)
    (out / CHUNK_DIR).mkdir(exist_ok=True)


def execute(design: DesignSpec, out: str | Path, *, workers: int = 1, scheduler: str | None = None,
            chunk_size: int | None = None, progress: Callable[[int, int], None] | None = None,
            max_chunks: int | None = None, notice: Callable[[str], None] | None = None, draw_keys=None) -> list:
    """Run every chunk of the design not already stored in ``out``; returns the full chunk plan (patient chunks,
    then the draw chunks of ``draw_keys``, the keys of the parameter draws, when the design has uncertainty).

    Every arm is resolved (names, values, the compiled model) before the chunk store is touched. A run that fails
    removes the store if it created it (a failure is deterministic: rerunning the same design would fail again);
    an interrupted one (Ctrl-C, SIGTERM) keeps its finished chunks, so the same command resumes.
    ``max_chunks`` stops after that many new chunks (a deliberate interruption, used to test resuming)."""
    out = Path(out)
    size = chunk_size or design.solver.chunk_size
    chunks = plan_chunks(design, size)
    if draw_keys is not None and len(draw_keys):
        chunks = chunks + plan_draw_chunks(design, draw_keys, size)
    setups = resolve_arms(design)
    created = not out.exists()
    _check_run_file(out, design, size, notice)
    created = created or not any((out / CHUNK_DIR).iterdir())
    pending = [c for c in chunks if not _is_done(out, c)]
    if max_chunks is not None:
        pending = pending[:max_chunks]
    done = len(chunks) - len([c for c in chunks if not _is_done(out, c)])
    if progress:
        progress(done, len(chunks))
    results = _map(design, setups, pending, workers, scheduler, out)
    try:
        for chunk, result in results:
            if result is not None:  # None: a local worker stored it
                _store(out, chunk, result)
            done += 1
            if progress:
                progress(done, len(chunks))
    except (KeyboardInterrupt, WorkerLost) as exc:
        kept = sum(_is_done(out, c) for c in chunks)
        raise type(exc)(f"{exc}{'; ' if str(exc) else ''}{kept} of {len(chunks)} chunk(s) are kept in {out}; run "
                        "the same command again to resume") from None
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        results.close()
    return chunks


def _map(design: DesignSpec, setups: dict[str, Setup], chunks: list[Chunk], workers: int, scheduler: str | None,
         out: Path) -> Iterable[tuple[Chunk, tuple[pd.DataFrame, pd.DataFrame] | None]]:
    """(chunk, result) pairs as they finish, from this process, local processes or a Dask cluster; local worker
    processes store their chunks in ``out`` themselves (result None), a Dask cluster's come back to be stored."""
    if not chunks:
        return
    if scheduler:
        yield from _map_dask(design, setups, chunks, scheduler)
        return
    if workers <= 1:
        for c in chunks:
            yield c, _run(design, c)
        return
    yield from _map_local(design, setups, chunks, workers, out)


def _map_local(design: DesignSpec, setups: dict[str, Setup], chunks: list[Chunk], workers: int, out: Path):
    """Chunks on local worker processes started with 'forkserver' (or 'spawn'), never 'fork': forking a process
    whose libraries run threads (JAX, a BLAS) can deadlock the child. Each worker gets the resolved arms once."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from itertools import islice

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["mscsim.trials.runner"])  # workers start with the libraries imported
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_install,
                               initargs=(design.digest(), setups))
    try:
        # a bounded window of chunks in flight: a finished chunk's result leaves this process as soon as it is
        # stored, so the parent's memory does not grow with the trial (submitting every chunk at once would keep
        # every result alive in its future until the end)
        todo = enumerate(chunks)
        running: dict = {}  # future -> (place in the plan, chunk)

        def submit(k: int) -> None:
            for i, c in islice(todo, k):
                running[pool.submit(_run_and_store, design, c, out)] = (i, c)

        submit(IN_FLIGHT_PER_WORKER * workers)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: running[f][0]):
                _, chunk = running.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    raise WorkerLost("a worker process stopped unexpectedly (killed, or out of memory)") from None
                submit(1)
                yield chunk, result
    except BaseException:
        # stop at once: pending chunks are cancelled and running ones abandoned (their results would be thrown
        # away); leaving the pool normally would wait for every chunk already handed out. ProcessPoolExecutor has
        # no public way to stop its workers before Python 3.14 (terminate_workers), hence _processes.
        procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
        raise
    pool.shutdown(wait=True)
    if method == "forkserver":
        _stop_forkserver()


def _stop_forkserver() -> None:
    """Stop the forkserver once a trial's chunks are done: it holds the preloaded libraries (about 250 MB) while
    the parent assembles the trial, and the next trial in this process starts a new one. CPython's ForkServer has
    only a private stop method (``_stop``, 3.8-3.14); where it is missing the server stays, as before."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if callable(stop):
        try:
            stop()
        except OSError:
            pass


def _map_dask(design: DesignSpec, setups: dict[str, Setup], chunks: list[Chunk], scheduler: str):
    from itertools import islice

    try:
        from dask.distributed import Client, as_completed
    except ImportError as exc:
        raise InputError("--scheduler", scheduler, f"a Dask scheduler address with dask.distributed installed: "
                         f"pip install 'mscsim[cluster]' ({exc})") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise InputError("--scheduler", scheduler, f"the address of a running Dask scheduler, e.g. "
                         f"tcp://127.0.0.1:8786 ({exc})") from None
    with client:
        client.run(_install_dask, design.digest(), setups)
        # a bounded window of chunks in flight (as for local workers): each result is released on the cluster as
        # soon as it is stored here
        todo = iter(chunks)
        window = max(2, IN_FLIGHT_PER_WORKER * sum(client.nthreads().values()))
        running = {client.submit(_run, design, c, pure=False): c for c in islice(todo, window)}
        queue = as_completed(list(running))
        try:
            for fut in queue:
                chunk = running.pop(fut)
                result = fut.result()
                fut.release()
                for c in islice(todo, 1):
                    nxt = client.submit(_run, design, c, pure=False)
                    running[nxt] = c
                    queue.add(nxt)
                yield chunk, result
        except BaseException:
            client.cancel(list(running))
            raise


def _install_dask(digest: str, setups: dict[str, Setup]) -> None:
    """The resolved arms on a Dask worker (whose signals belong to the worker, not to this run)."""
    for arm, setup in setups.items():
        _SETUPS[(digest, arm)] = setup


# --- assembling the finished trial ---------------------------------------------------------------------


def collect_draws(out: str | Path, chunks: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every draw chunk's results: (observed endpoints, long with 'draw', in draw and patient order; failed draws)."""
    out = Path(out)
    chunks = [c for c in chunks if isinstance(c, DrawChunk)]
    if not chunks:
        return pd.DataFrame(), pd.DataFrame(columns=["draw", "arm", "failed"])
    long = pd.concat([pd.read_parquet(_chunk_paths(out, c)[0]) for c in chunks], ignore_index=True)
    failed = pd.concat([pd.read_parquet(_chunk_paths(out, c)[1]) for c in chunks], ignore_index=True)
    if len(long):
        long = long.sort_values(["draw", "patient", "endpoint", "visit_day"], kind="stable").reset_index(drop=True)
    return long, failed.sort_values(["draw", "arm"], kind="stable").reset_index(drop=True)


ENDPOINT_KEYS = ["patient", "endpoint", "visit_day"]  # the order of the endpoints table
LABEL_COLUMNS = ("arm", "endpoint")  # few distinct values, millions of rows: held as categories in memory


def _patient_chunks(out: Path, chunks: list) -> list[Chunk]:
    """The finished patient chunks in patient order (an error naming one that is not finished)."""
    chunks = sorted((c for c in chunks if not isinstance(c, DrawChunk)), key=lambda c: c.start)
    missing = [c.stem for c in chunks if not _is_done(out, c)]
    if missing:
        raise MscsimError(f"{len(missing)} chunk(s) not finished (e.g. {missing[0]}); run the trial again to resume")
    return chunks


def collect(out: str | Path, chunks: list[Chunk], columns: tuple[str, ...] | None = None,
            write_to: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every patient chunk's results, in patient order (endpoints long table, patients table).

    Chunks hold disjoint, consecutive ranges of patient ids, so each is put in order on its own and they are
    joined in id order: the same rows as one sort of the whole table (its keys are unique). The endpoints table
    is filled chunk by chunk into arrays of its final size (no concatenation, which holds every piece and the
    whole at once), with ``arm`` and ``endpoint`` as categories in sorted order (a million-patient trial's six
    million labels as one byte each, and grouping by them without materialising strings); ``columns`` keeps
    only those columns of it (the analysis does not need ``modelled``). ``write_to``: the whole endpoints table,
    every column, is also written there as Parquet in the same pass, a row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    chunks = _patient_chunks(out, chunks)
    paths = [_chunk_paths(out, c)[0] for c in chunks]
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in paths]
    total = int(sum(sizes))
    if not total:  # nobody enrolled: the (empty) table as the chunks hold it
        long = pd.read_parquet(paths[0]) if paths else pd.DataFrame(columns=[*ENDPOINT_KEYS, "arm"])
        if write_to is not None:
            long.to_parquet(write_to, index=False)
        return long[[c for c in long.columns if columns is None or c in columns]], _collect_patients(out, chunks)
    arrays: dict[str, np.ndarray] = {}
    labels: dict[str, dict[str, int]] = {}
    writer, schema, pending, held = None, None, [], 0
    try:
        at = 0
        for path, size in zip(paths, sizes):
            if not size:
                continue
            table = pq.read_table(path).sort_by([(k, "ascending") for k in ENDPOINT_KEYS])
            if write_to is not None:
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(write_to, schema)
                pending.append(table.cast(schema))
                held += size
                if held >= ROWS_PER_GROUP:
                    writer.write_table(pa.concat_tables(pending))
                    pending, held = [], 0
            for c in table.column_names:
                if columns is not None and c not in columns and c not in ENDPOINT_KEYS:
                    continue
                if c in LABEL_COLUMNS:
                    enc = table.column(c).combine_chunks().dictionary_encode()
                    seen = labels.setdefault(c, {})
                    glob = np.array([seen.setdefault(str(u), len(seen)) for u in enc.dictionary.to_pylist()],
                                    dtype=np.int32)
                    col = glob[enc.indices.to_numpy(zero_copy_only=False)]
                else:
                    col = table.column(c).to_numpy()
                if c not in arrays:
                    arrays[c] = np.empty(total, dtype=col.dtype)
                arrays[c][at:at + size] = col
            at += size
        if pending:
            writer.write_table(pa.concat_tables(pending))
    finally:
        if writer is not None:
            writer.close()
    # copy=False: the columns stay the arrays just filled (a dict is otherwise copied into consolidated blocks,
    # briefly holding the table twice)
    long = pd.DataFrame({c: _as_category(v, labels[c]) if c in labels else v for c, v in arrays.items()}, copy=False)
    del arrays
    pa.default_memory_pool().release_unused()  # the chunks' Arrow buffers, back to the system before the analysis
    return long, _collect_patients(out, chunks)


ROWS_PER_GROUP = 262_144  # rows per Parquet row group of a trial's endpoints.parquet


def _collect_patients(out: Path, chunks: list[Chunk]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(_chunk_paths(out, c)[1]).sort_values("patient", kind="stable")
                      for c in chunks], ignore_index=True)


def _as_category(codes: np.ndarray, seen: dict[str, int]) -> pd.Categorical:
    """Codes in order of first appearance as a categorical whose categories are sorted (so grouping by it orders
    groups as grouping by the strings does)."""
    order = sorted(seen)
    remap = np.empty(len(seen), dtype=np.int32)
    for new, name in enumerate(order):
        remap[seen[name]] = new
    return pd.Categorical.from_codes(remap[codes], categories=pd.Index(order, dtype=object))
