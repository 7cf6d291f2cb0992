"""The JAX RODAS4 solver (per-patient step control in one jitted loop) against the NumPy batched solver."""

import numpy as np
import pytest

pytest.importorskip("jax")

from conftest import KINETICS_EXAMPLES as SCENARIO_EXAMPLES, example  # noqa: E402
from mscsim import scenario_from_dict, solve_batched  # noqa: E402
from mscsim.simulation import resolve_setup  # noqa: E402
from mscsim.solvers import jax_solver  # noqa: E402
from mscsim.solvers.jax_solver import solve_jax  # noqa: E402


def agree(a, b, scale, tol=1e-6):
    """|a - b| <= tol * (|b| + tol * scale), as in test_solvers.py."""
    return float((np.abs(a - b) / (np.abs(b) + tol * scale)).max())


def problem(name, size=3):
    data = example(name, population={"size": size, "variability": True})
    return resolve_setup(scenario_from_dict(data)).problem()


@pytest.mark.parametrize("name", SCENARIO_EXAMPLES)
def test_jax_agrees_with_batched_on_every_example(name):
    prob = problem(name)
    bat = solve_batched(prob)
    out = solve_jax(prob)
    assert out.shape == bat.shape and out.dtype == np.float64
    assert np.all(np.isfinite(out))
    assert agree(out, bat, prob.administered().max()) < 1e-6


def test_batch_sizes_in_one_bucket_compile_once():
    """5 and 7 patients both pad to 8: the second call reuses the compiled kernel."""
    first = problem("mouse_iv_eggenhofer2012", size=5)
    out5 = solve_jax(first)
    traces = jax_solver.TRACE_COUNT
    second = problem("mouse_iv_eggenhofer2012", size=7)
    out7 = solve_jax(second)
    assert jax_solver.TRACE_COUNT == traces
    assert agree(out7, solve_batched(second), second.administered().max()) < 1e-6
    assert out5.shape[0] == 5 and out7.shape[0] == 7


def test_chunks_give_the_same_answer_as_one_batch():
    """Per-patient control: a patient's trajectory does not depend on who else is in its batch."""
    prob = problem("knee_ia_5e7_ultrasound", size=11)
    whole = solve_jax(prob)
    chunked = solve_jax(prob, max_chunk=4)
    assert agree(chunked, whole, prob.administered().max(), tol=1e-6) < 1e-9


def test_scenario_can_choose_the_jax_solver():
    from conftest import example, run

    a = run(example("mouse_iv_eggenhofer2012", solver={"kind": "jax"}))
    b = run(example("mouse_iv_eggenhofer2012"))
    scale = float(b["administered"].max())
    for name in ("msc_lung", "debris_liver", "cleared"):
        err = abs(a[name] - b[name]) / (abs(b[name]) + 1e-6 * scale)
        assert float(err.max()) < 1e-6
