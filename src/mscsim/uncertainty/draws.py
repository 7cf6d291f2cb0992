"""Parameter draws for bands: keyed like patients, and conditioned on the disease as trials enrol it.

A draw is a parameter set whose values come from generators keyed on (seed, stream, parameter name), candidate
``c`` being the c-th value of each; the same seed gives the same candidates in any chunking. With conditioning,
candidate c is kept only if the untreated reference patient it gives has the disease as trials enrol it (the
``enrolled`` windows of data/endpoints/<disease>.yaml, e.g. a knee-OA pain VAS of 30-85 mm at baseline): the
draws are the first ``N`` kept candidates, in candidate order, and each keeps its candidate index as its key.
This is rejection on an observation (approximate Bayesian computation with a uniform kernel): the priors are
wide, and a prior draw whose patient has no OA pain, or pain at the scale's end, says nothing about the patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..endpoints import endpoint_values, load_endpoints
from ..errors import MscsimError
from ..io.scenario import Scenario
from ..simulation import resolve_setup
from .evaluate import _stack, model_values
from .priors import ParameterSpace, Posterior, draw_values

BLOCK = 64  # candidates screened per batch (does not change which candidates are kept)
MAX_CANDIDATES_PER_DRAW = 40  # give up when fewer than 1 in 40 candidates describe the disease


@dataclass(frozen=True)
class Draws:
    """Parameter sets for bands: ``index`` (draws,) candidate keys, ``values`` (draws, k) in ``space`` order."""

    space: ParameterSpace
    index: np.ndarray
    values: np.ndarray
    candidates: int  # candidates screened to find them
    condition: str  # "enrolled" or "none"
    posterior: str | None = None  # the posterior file whose rows gave the parameters it holds (else priors)
    posterior_parameters: tuple[str, ...] = ()
    taus: np.ndarray | None = None  # (draws, 2) the posterior's between-trial SDs at these draws (new-trial bands)

    @property
    def acceptance(self) -> float:
        return len(self.index) / max(self.candidates, 1)


def reference_scenario(scenario: Scenario) -> Scenario:
    """The scenario's typical patient alone (no between-patient variability): whose baseline is checked."""
    return scenario.model_copy(update={"population": scenario.population.model_copy(
        update={"size": 1, "variability": False})})


def baseline_endpoints(scenario: Scenario, space: ParameterSpace, values: np.ndarray) -> dict[str, np.ndarray]:
    """Each endpoint of the untreated reference patient at baseline (after the burn-in), one value per parameter
    set (NaN where the burn-in fails)."""
    ref = reference_scenario(scenario)
    nominal = resolve_setup(ref)
    sets = [space.by_role(row) for row in values]
    problems = [resolve_setup(ref, model_values(ref, s["model"])).problem(0, 1, with_baseline=False) for s in sets]
    x0 = np.full((len(sets), nominal.model.n_states), np.nan)
    _burn_in(nominal, problems, list(range(len(sets))), x0)
    coeffs = {n: np.array([s["endpoint"][n] for s in sets]) for n in space.names if space[n].role == "endpoint"}
    states = {name: x0[:, k] for k, name in enumerate(nominal.model.state_names)}
    return endpoint_values(ref.disease, states, nominal.model.state_names, coeffs)


def _burn_in(nominal, problems, group, x0) -> None:
    try:
        x0[group] = _stack([problems[r] for r in group], nominal).x0
    except (MscsimError, FloatingPointError, np.linalg.LinAlgError):
        if len(group) > 1:
            half = len(group) // 2
            _burn_in(nominal, problems, group[:half], x0)
            _burn_in(nominal, problems, group[half:], x0)


def enrolled(scenario: Scenario, space: ParameterSpace, values: np.ndarray) -> np.ndarray:
    """Whether each parameter set's untreated reference patient lies in the disease's enrolled windows."""
    windows = load_endpoints(scenario.disease).spec.enrolled
    base = baseline_endpoints(scenario, space, values)
    ok = np.ones(len(values), dtype=bool)
    for name, w in windows.items():
        v = base[name]
        ok &= np.isfinite(v) & (v >= w.low - 1e-9) & (v <= w.high + 1e-9)
    return ok


def parameter_draws(scenario: Scenario, space: ParameterSpace, seed: int, draws: int, *,
                    posterior: Posterior | None = None, condition: str = "enrolled", progress=None) -> Draws:
    """``draws`` parameter sets: candidates 0, 1, 2, ... kept (with conditioning) while their reference patient
    has the disease as enrolled. Raises when too few candidates describe the disease."""
    if condition == "none" or not scenario.disease or not load_endpoints(scenario.disease).spec.enrolled:
        index = np.arange(draws)
        return Draws(space, index, draw_values(space, seed, 0, draws, posterior), draws, "none",
                     *_source(posterior, index))
    kept_idx: list[np.ndarray] = []
    kept_val: list[np.ndarray] = []
    n_kept, first = 0, 0
    limit = MAX_CANDIDATES_PER_DRAW * draws
    while n_kept < draws:
        if first >= limit:
            windows = load_endpoints(scenario.disease).spec.enrolled
            raise MscsimError(
                f"only {n_kept} of {first} parameter draws give an untreated patient with the disease as trials "
                f"enrol it ({', '.join(f'{k} {w.low:g}-{w.high:g}' for k, w in windows.items())} at baseline); the "
                "uncertainty distributions do not describe this patient: narrow them (uncertainty.priors), give a "
                "posterior, or use condition: none")
        count = BLOCK if posterior is None else min(BLOCK, len(posterior.table) - first)
        if count <= 0:
            raise MscsimError(f"the posterior file {posterior.path} has {len(posterior.table)} rows, of which only "
                              f"{n_kept} give the disease as enrolled; {draws} draws were asked for")
        values = draw_values(space, seed, first, count, posterior)
        ok = enrolled(scenario, space, values)
        kept_idx.append(np.arange(first, first + count)[ok])
        kept_val.append(values[ok])
        n_kept += int(ok.sum())
        first += count
        if progress is not None:
            progress(min(n_kept, draws), draws)
    index = np.concatenate(kept_idx)[:draws]
    return Draws(space, index, np.concatenate(kept_val)[:draws], int(index[-1]) + 1, "enrolled",
                 *_source(posterior, index))


def _source(posterior: Posterior | None, index: np.ndarray) -> tuple:
    if posterior is None:
        return None, (), None
    return posterior.path, tuple(posterior.names), posterior.taus_at(index)


def values_for(space: ParameterSpace, seed: int, index: np.ndarray, posterior: Posterior | None = None) -> np.ndarray:
    """The parameter sets of the given candidate keys (what a worker recomputes from the keys it is handed)."""
    index = np.asarray(index, dtype=int)
    if not len(index):
        return np.zeros((0, len(space)))
    lo, hi = int(index.min()), int(index.max()) + 1
    return draw_values(space, seed, lo, hi - lo, posterior)[index - lo]
