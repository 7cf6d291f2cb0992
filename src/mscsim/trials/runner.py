"""Run a trial design: patients in chunks through the batched solver, each chunk streamed to Parquet.

A chunk (arm, first patient id, count) is a pure function of the design: the same patients, covariates, model
parameters, noise and adverse events whatever chunk size, worker count or machine computes it, because every
random number is keyed on (seed, patient id, stream) and the solver's arithmetic per patient does not depend on
the batch. Finished chunks are written atomically; a trial that is stopped resumes from them, and memory stays
flat however many patients a trial has. Chunks run in this process, in local processes (``workers``), or on a
Dask cluster (``scheduler``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .. import __version__
from ..delivery.routes import is_local
from ..endpoints import endpoint_values, load_endpoints, stage_response
from ..errors import InputError, MscsimError
from ..simulation import Setup, resolve_setup, solve, untreated
from .cohort import draw_cohort, to_model_covariates
from .design import ArmSpec, DesignSpec, arm_scenario
from .observe import observe
from .safety import ExposureContext, adverse_events

CHUNK_DIR = "chunks"
RUN_FILE = "run.json"


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
    return {a.name: max(a.n, pool) for a in design.arms}


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


def run_draw_chunk(design_json: str, chunk: DrawChunk) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One draw chunk: (observed endpoints of the arm's pool under each draw, long with 'draw'; failed draws)."""
    from ..uncertainty.draws import values_for
    from ..uncertainty.priors import load_posterior
    from .uncertain import arm_sets, design_space

    design, arm, _ = _setup(design_json, chunk.arm)
    spec = design.uncertainty
    space = design_space(design)
    posterior = load_posterior(spec.posterior, space, max(chunk.keys) + 1) if spec.posterior else None
    keys = np.array(chunk.keys)
    table, failed = arm_sets(design, arm, space, values_for(space, design.seed, keys, posterior), keys,
                             spec.pool_per_arm)
    return table, pd.DataFrame({"draw": keys, "arm": arm.name, "failed": failed})


def _run(design_json: str, chunk) -> tuple[pd.DataFrame, pd.DataFrame]:
    return run_draw_chunk(design_json, chunk) if isinstance(chunk, DrawChunk) else run_chunk(design_json, chunk)


@lru_cache(maxsize=32)
def _setup(design_json: str, arm_name: str) -> tuple[DesignSpec, ArmSpec, Setup]:
    """The resolved scenario of one arm (compiled model, parameters), once per process."""
    design = DesignSpec.model_validate_json(design_json)
    arm = next(a for a in design.arms if a.name == arm_name)
    return design, arm, resolve_setup(arm_scenario(design, arm))


def _output_days(setup: Setup) -> np.ndarray:
    from ..simulation import output_times

    return output_times(setup.scenario) / 24.0


def run_chunk(design_json: str, chunk: Chunk) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate one chunk: (observed endpoints, long; one row per patient with covariates, AEs, dropout)."""
    design, arm, setup = _setup(design_json, chunk.arm)
    ids = np.arange(chunk.start, chunk.start + chunk.count)
    cohort = draw_cohort(design.cohort, design.seed, chunk.start, chunk.count)
    prob = setup.problem(chunk.start, chunk.count, to_model_covariates(cohort).reset_index(drop=True))
    if not arm.has_cells:
        prob = untreated(prob)
    states = solve(setup, prob)
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
    responses = {name: stage_response(values[r.of], days, r.day) for name, r in eps.spec.responses.items()
                 if name in design.endpoints}
    modelled = {name: v[:, at] for name, v in values.items()}
    long, per_patient = observe(design, arm, ids, modelled, responses, params)
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
    patients = cohort.reset_index(drop=True).copy()
    patients.insert(0, "patient", ids)
    patients.insert(1, "arm", arm.name)
    patients["in_trial"] = ids < arm_offsets(design)[arm.name] + arm.n
    patients["dose_cells"] = doses
    patients["peak_lung_cells_per_kg"] = lung
    for name, codes in responses.items():
        meaning = {v: k for k, v in load_endpoint_codes().items()}
        patients[f"{name}_modelled"] = [meaning[int(c)] for c in codes]
    patients = patients.merge(per_patient, on="patient")
    aes = aes.reset_index(drop=True)
    for col in aes.columns:
        patients[f"ae_{col}"] = aes[col].to_numpy()
    return long, patients


def load_endpoint_codes() -> dict[str, int]:
    from ..endpoints import RESPONSE_CODES

    return dict(RESPONSE_CODES)


# --- execution -------------------------------------------------------------------------------------------


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


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


def _check_run_file(out: Path, design: DesignSpec, chunk_size: int) -> None:
    """Refuse to resume into a folder that holds another design's (or another chunking's) chunks."""
    run_file = out / RUN_FILE
    record = {"design_digest": design.digest(), "name": design.name, "seed": design.seed,
              "chunk_size": chunk_size, "mscsim_version": __version__}
    if run_file.exists():
        old = json.loads(run_file.read_text())
        for key in ("design_digest", "chunk_size", "mscsim_version"):
            if old.get(key) != record[key]:
                raise InputError("--out", str(out), f"a new folder, or the folder of an interrupted run of the same "
                                 f"design, chunk size and mscsim version (its {key} is {old.get(key)!r}, "
                                 f"this run's is {record[key]!r}); remove it to start afresh")
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / CHUNK_DIR).mkdir(exist_ok=True)
        run_file.write_text(json.dumps(record, indent=2))
    (out / CHUNK_DIR).mkdir(exist_ok=True)


def execute(design: DesignSpec, out: str | Path, *, workers: int = 1, scheduler: str | None = None,
            chunk_size: int | None = None, progress: Callable[[int, int], None] | None = None,
            max_chunks: int | None = None, draw_keys=None) -> list:
    """Run every chunk of the design not already stored in ``out``; returns the full chunk plan (patient chunks,
    then the draw chunks of ``draw_keys``, the keys of the parameter draws, when the design has uncertainty).

    ``max_chunks`` stops after that many new chunks (a deliberate interruption, used to test resuming)."""
    out = Path(out)
    size = chunk_size or design.solver.chunk_size
    chunks = plan_chunks(design, size)
    if draw_keys is not None and len(draw_keys):
        chunks = chunks + plan_draw_chunks(design, draw_keys, size)
    _check_run_file(out, design, size)
    pending = [c for c in chunks if not _is_done(out, c)]
    if max_chunks is not None:
        pending = pending[:max_chunks]
    done = len(chunks) - len([c for c in chunks if not _is_done(out, c)])
    payload = design.model_dump_json()
    if progress:
        progress(done, len(chunks))
    for chunk, result in _map(payload, pending, workers, scheduler):
        _store(out, chunk, result)
        done += 1
        if progress:
            progress(done, len(chunks))
    return chunks


def _map(payload: str, chunks: list[Chunk], workers: int, scheduler: str | None
         ) -> Iterable[tuple[Chunk, tuple[pd.DataFrame, pd.DataFrame]]]:
    """(chunk, result) pairs as they finish, from this process, local processes or a Dask cluster."""
    if not chunks:
        return
    if scheduler:
        yield from _map_dask(payload, chunks, scheduler)
        return
    if workers <= 1:
        for c in chunks:
            yield c, _run(payload, c)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    for arm in dict.fromkeys(c.arm for c in chunks):  # compile before forking: workers inherit the model
        _setup(payload, arm)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_run, payload, c): c for c in chunks}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _map_dask(payload: str, chunks: list[Chunk], scheduler: str):
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
        futures = {client.submit(_run, payload, c, pure=False): c for c in chunks}
        for fut in as_completed(list(futures)):
            yield futures[fut], fut.result()


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


def collect(out: str | Path, chunks: list[Chunk]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every patient chunk's results, in patient order (endpoints long table, patients table)."""
    out = Path(out)
    chunks = [c for c in chunks if not isinstance(c, DrawChunk)]
    missing = [c.stem for c in chunks if not _is_done(out, c)]
    if missing:
        raise MscsimError(f"{len(missing)} chunk(s) not finished (e.g. {missing[0]}); run the trial again to resume")
    long = pd.concat([pd.read_parquet(_chunk_paths(out, c)[0]) for c in chunks], ignore_index=True)
    patients = pd.concat([pd.read_parquet(_chunk_paths(out, c)[1]) for c in chunks], ignore_index=True)
    return (long.sort_values(["patient", "endpoint", "visit_day"], kind="stable").reset_index(drop=True),
            patients.sort_values("patient", kind="stable").reset_index(drop=True))
