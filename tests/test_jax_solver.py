"""The JAX RODAS4 solver (per-patient step control in one jitted loop) against the NumPy batched solver."""

import numpy as np
import pytest

pytest.importorskip("jax")

from conftest import EXPORT_EXAMPLES, TISSUE_EXAMPLE, example, marked_slow  # noqa: E402
from mscsim import scenario_from_dict, solve_batched  # noqa: E402
from mscsim.simulation import resolve_setup, untreated  # noqa: E402
from mscsim.solvers import jax_solver  # noqa: E402
from mscsim.solvers.jax_solver import solve_jax  # noqa: E402


def agree(a, b, scale, tol=1e-6):
    """max |a - b| / (|b| + tol * scale), as in test_solvers.py; ``scale`` is per state (broadcast)."""
    return float((np.abs(a - b) / (np.abs(b) + tol * scale)).max())


def floors(prob):
    """Per-state comparison scale, as test_solvers.py: the cells given for cell states; ten times the declared
    typical magnitude for signal states (both solvers hold those to 1e-9 of it, SIGNAL_ATOL)."""
    model = prob.model
    return np.where(model.cell_mask, prob.administered().max(), 10.0 * model.signal_scale)


def problem(name, size=3):
    data = example(name, population={"size": size, "variability": True})
    return resolve_setup(scenario_from_dict(data)).problem()


# each example is another JAX compilation (10-60 s on the 2-vCPU machine): the default command checks the plain
# human and mouse IV kinetics, the liver lesion and the intra-articular knee doses (the tissue model is checked by
# the shorter tests below); benchmarks/slow_checks.py runs the rest, the knee-OA year among them
JAX_SLOW = {TISSUE_EXAMPLE, "human_iv_111in_imaging", "human_iv_gvhd_twice_weekly",
            "human_intramyocardial_heart_lesion"}


@pytest.mark.parametrize("name", marked_slow(EXPORT_EXAMPLES, JAX_SLOW))
def test_jax_agrees_with_batched_on_every_example(name):
    prob = problem(name)
    bat = solve_batched(prob)
    traces = jax_solver.TRACE_COUNT
    out = solve_jax(prob)
    assert jax_solver.TRACE_COUNT - traces <= 1  # one compilation per call at most, whatever the segments
    assert out.shape == bat.shape and out.dtype == np.float64
    assert np.all(np.isfinite(out))
    # the same RODAS4 arithmetic on the same generated model code: agreement far inside the tolerance, also over
    # the year of nonlinear tissue feedback (the two differ only in how W is factored)
    assert agree(out, bat, floors(prob)) < 1e-6


def test_tissue_run_compiles_once_for_treated_and_untreated():
    """A disease run solves the patients treated and untreated from the same baseline: one kernel shape."""
    data = example(TISSUE_EXAMPLE, population={"size": 2, "variability": True})
    prob = resolve_setup(scenario_from_dict(data)).problem()
    traces = jax_solver.TRACE_COUNT
    treated = solve_jax(prob)
    after_first = jax_solver.TRACE_COUNT
    control = solve_jax(untreated(prob))
    assert after_first - traces <= 1 and jax_solver.TRACE_COUNT == after_first
    assert agree(control, solve_batched(untreated(prob)), floors(prob)) < 1e-6
    m1 = prob.model.index("m1")  # the treatment changes the lesion (not a copy of the control)
    assert np.abs(treated[:, -1, m1] - control[:, -1, m1]).max() > 1e-6 * np.abs(control[:, -1, m1]).max()


def test_batch_sizes_in_one_bucket_compile_once():
    """5 and 7 patients both pad to 8: the second call reuses the compiled kernel."""
    first = problem("mouse_iv_eggenhofer2012", size=5)
    out5 = solve_jax(first)
    traces = jax_solver.TRACE_COUNT
    second = problem("mouse_iv_eggenhofer2012", size=7)
    out7 = solve_jax(second)
    assert jax_solver.TRACE_COUNT == traces
    assert agree(out7, solve_batched(second), floors(second)) < 1e-6
    assert out5.shape[0] == 5 and out7.shape[0] == 7


def test_segments_and_chunks_of_one_call_share_one_compilation():
    """Eight infused doses (segments with different numbers of output times) in chunks of 8, 8 and 3 patients:
    every segment and chunk is padded to one shape, so the call traces the kernel at most once."""
    prob = problem("human_iv_gvhd_twice_weekly", size=19)
    stops = {jax_solver._n_stops(prob, seg) for seg in prob.segments()} - {0}
    assert len({jax_solver._bucket(s, jax_solver._MIN_STOPS) for s in stops}) > 1  # they would differ unpadded
    traces = jax_solver.TRACE_COUNT
    out = solve_jax(prob, max_chunk=8)
    assert jax_solver.TRACE_COUNT - traces <= 1
    assert agree(out, solve_batched(prob), floors(prob)) < 1e-6


def test_chunks_give_the_same_answer_as_one_batch():
    """Per-patient control: a patient's trajectory does not depend on who else is in its batch."""
    prob = problem("knee_ia_5e7_ultrasound", size=11)
    whole = solve_jax(prob)
    chunked = solve_jax(prob, max_chunk=4)
    assert agree(chunked, whole, floors(prob), tol=1e-6) < 1e-9


def test_scenario_can_choose_the_jax_solver():
    from conftest import example, run

    a = run(example("mouse_iv_eggenhofer2012", solver={"kind": "jax"}))
    b = run(example("mouse_iv_eggenhofer2012"))
    scale = float(b["administered"].max())
    for name in ("msc_lung", "debris_liver", "cleared"):
        err = abs(a[name] - b[name]) / (abs(b[name]) + 1e-6 * scale)
        assert float(err.max()) < 1e-6


@pytest.mark.slow  # another compilation (window of 8 slots), ~30 s: benchmarks/slow_checks.py
def test_a_window_of_slots_refilled_from_the_queue_gives_the_same_answer():
    """19 patients stepped 8 at a time (a slot whose patient finishes takes the next) against all at once."""
    prob = problem("human_iv_gvhd_twice_weekly", size=19)
    whole = solve_jax(prob)
    windowed = solve_jax(prob, window=8)
    assert agree(windowed, whole, floors(prob)) < 1e-12


def test_a_failing_patient_is_reported_and_the_others_kept():
    from dataclasses import replace

    from mscsim.solvers.compiled import SolveFailure

    prob = problem("knee_ia_5e7_ultrasound", size=5)
    good = solve_jax(prob)
    P = prob.params.copy()
    k = prob.model.param_index("k_death_target")
    P[3, k] = -1e3 * abs(P[3, k])  # cells that multiply instead of dying: the solution overflows
    with pytest.raises(SolveFailure) as info:
        solve_jax(replace(prob, params=P), max_steps=5000)
    assert list(np.nonzero(info.value.status)[0]) == [3]
    keep = [0, 1, 2, 4]
    assert agree(info.value.states[keep], good[keep], floors(prob)) < 1e-12


def test_held_states_stay_put():
    """A held state keeps its start value (to the rounding of the dense output's interpolation); the others follow
    the NumPy solver with the same state held."""
    from dataclasses import replace

    prob = problem("knee_ia_5e7_ultrasound", size=2)
    hold = np.zeros(prob.model.n_states, bool)
    hold[prob.model.index("msc_target")] = True
    held = replace(prob, hold=hold)
    out = solve_jax(held)
    k = prob.model.index("msc_target")
    np.testing.assert_allclose(out[:, 1:, k], np.broadcast_to(out[:, 1:2, k], out[:, 1:, k].shape), rtol=1e-14)
    assert agree(out, solve_batched(held), floors(prob)) < 1e-6


def test_sensitivities_match_finite_differences():
    """d(states)/d(parameter) by forward-mode differentiation through the whole solve, against central finite
    differences of the same solver, to 1e-5 relative: the gradient a calibration uses."""
    from dataclasses import replace

    from mscsim.solvers.jax_solver import sensitivities

    data = example("mouse_iv_eggenhofer2012", population={"size": 2, "variability": True}, duration_days=3)
    prob = resolve_setup(scenario_from_dict(data)).problem()
    names = ["k_death_lung", "k_phago_lung"]
    out, grad = sensitivities(prob, names)
    assert grad.shape == out.shape + (2,)
    scale = floors(prob)[None, None, :]
    for j, name in enumerate(names):
        k = prob.model.param_index(name)
        step = 1e-4 * prob.params[:, k]
        up, down = prob.params.copy(), prob.params.copy()
        up[:, k] += step
        down[:, k] -= step
        fd = (solve_jax(replace(prob, params=up), rtol=1e-10, atol_factor=1e-14)
              - solve_jax(replace(prob, params=down), rtol=1e-10, atol_factor=1e-14)) / (2 * step[:, None, None])
        # normalised sensitivities p*dx/dp against the state's own size over the run: an adaptive solver's finite
        # differences carry noise of about rtol*|x|/step, so where a derivative is tiny (debris in blood in the first
        # minute: -3.69e-5, -3.85e-5, -4.16e-5 for relative steps 1e-3, 1e-4, 1e-5) a pointwise test would test them
        g = grad[..., j]
        size = np.abs(out).max(axis=1, keepdims=True) + scale
        p = prob.params[:, k][:, None, None]
        assert float((np.abs(g - fd) * p / size).max()) < 1e-5, name
        # where the parameter moves a state by more than the solver's noise, the two agree to rounding level
        big = np.abs(fd) * p / size > 1e-4
        assert float(np.median(np.abs(g - fd)[big] / np.abs(fd)[big])) < 1e-6, name
        assert np.abs(g).max() > 0
