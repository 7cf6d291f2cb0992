"""The JAX RODAS4 solver (per-patient step control in one jitted loop) against the NumPy batched solver."""

import numpy as np
import pytest

pytest.importorskip("jax")

from conftest import EXPORT_EXAMPLES, TISSUE_EXAMPLE, example  # noqa: E402
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


@pytest.mark.parametrize("name", EXPORT_EXAMPLES)
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
