"""The compiled engine (Numba): generated from the same model, agreeing with the NumPy solver, bit-reproducible
whatever the chunk, lane width or thread count, failing one patient without losing the others, and cached on disk
so a second process does not compile again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from conftest import example
from mscsim import scenario_from_dict
from mscsim.simulation import resolve_setup, untreated
from mscsim.solvers.batched import solve_batched
from mscsim.solvers.compiled import STATUS, SolveFailure, kernels, solve_compiled


def _setup(name, **changes):
    return resolve_setup(scenario_from_dict(example(name, **changes)))


@pytest.fixture(scope="module")
def knee():
    """Four varied knee-OA patients, 30 days: the tissue model (nonlinear, W not diagonally dominant)."""
    setup = _setup("knee_oa_ia_5e7", duration_days=30, population={"size": 6, "variability": True})
    return setup, setup.problem()


@pytest.mark.parametrize("switches", [{}, {"msc_secretion": False, "efferocytosis": False}],
                         ids=["all_mechanisms", "secretion_off"])
def test_scalar_code_computes_what_the_array_code_does(switches):
    """rhs_w/jac_w (compiled) against rhs_bl/jac_values_bl (NumPy) on random states: the same expressions."""
    setup = _setup("knee_oa_ia_5e7", mechanisms=switches)
    m, K = setup.model, kernels(setup.model)
    rng = np.random.default_rng(3)
    X = np.ascontiguousarray(rng.uniform(0.0, 2.0, (m.n_states, K.W)) * (1.0 + m.signal_scale[:, None]))
    P = np.ascontiguousarray(np.repeat(setup.nominal[:, None], K.W, axis=1) * rng.uniform(0.5, 1.5, (1, K.W)))
    f = np.zeros((m.n_states, K.W))
    jv = np.zeros((len(m.jac_rows), K.W))
    K.rhs_w(X, P, f)
    K.jac_w(X, P, jv)
    np.testing.assert_allclose(f, m.rhs_bl(X, P), rtol=1e-12, atol=1e-12 * np.abs(f).max())
    np.testing.assert_allclose(jv, m.jac_values_bl(X, P), rtol=1e-12, atol=1e-12 * np.abs(jv).max())


@pytest.mark.parametrize("name", ["human_iv_2e6_per_kg", "knee_oa_ia_5e7"])
def test_compiled_agrees_with_the_numpy_solver(name):
    """The same RODAS4 with the same controller: equal to rounding (the kinetics) or to far below the tolerance."""
    setup = _setup(name, duration_days=30, population={"size": 5, "variability": True})
    prob = setup.problem()
    a, b = solve_compiled(prob), solve_batched(prob)
    scale = np.where(prob.model.cell_mask, prob.administered().max(), 10.0 * prob.model.signal_scale)
    assert float((np.abs(a - b) / (np.abs(b) + 1e-6 * scale)).max()) < 1e-9


def test_a_patients_numbers_do_not_depend_on_batch_or_threads(knee):
    """Bit-identical as one batch, in pieces of 2, 3 and 1, and with one thread."""
    import numba

    setup, prob = knee
    whole = solve_compiled(prob)
    parts = np.concatenate([solve_compiled(prob.take(sl)) for sl in (slice(0, 2), slice(2, 5), slice(5, 6))])
    assert np.array_equal(whole, parts)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = solve_compiled(prob)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(whole, single)
    assert len({float(x) for x in whole[:, -1, prob.model.index("m1")]}) == 6  # the patients differ


@pytest.mark.slow  # two fresh compilations of the knee kernels (~45 s on a cold cache): benchmarks/slow_checks.py
def test_lane_width_does_not_change_the_numbers(tmp_path):
    """Patients side by side in SIMD lanes (8, the default) or one at a time (1): the same bits (separate processes, since the
    width is fixed when the engine's module is generated)."""
    code = textwrap.dedent("""
        import sys, numpy as np
        sys.path.insert(0, "tests")
        from conftest import example
        from mscsim import scenario_from_dict
        from mscsim.simulation import resolve_setup
        from mscsim.solvers.compiled import solve_compiled
        setup = resolve_setup(scenario_from_dict(example("knee_oa_ia_5e7", duration_days=10,
                                                         population={"size": 3, "variability": True})))
        np.save(sys.argv[1], solve_compiled(setup.problem()))
    """)
    outs = []
    for lanes in ("1", "8"):
        path = tmp_path / f"lanes{lanes}.npy"
        env = dict(os.environ, MSCSIM_LANES=lanes)
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env, cwd=os.getcwd())
        outs.append(np.load(path))
    assert np.array_equal(outs[0], outs[1])


def test_a_failing_patient_is_reported_and_the_others_kept(knee):
    """Patient 2 gets a step cap it cannot meet: it is reported by index with the reason; the others' numbers are
    exactly what they are without it."""
    setup, prob = knee
    good = solve_compiled(prob)
    with pytest.raises(SolveFailure) as info:
        solve_compiled(prob, max_steps=40)  # a month of the tissue model needs more steps than this
    assert "patient" in str(info.value) and STATUS[1] in str(info.value)
    # one patient fails: TNF-alpha that grows instead of decaying runs away, and the steps never reach day 30
    P = prob.params.copy()
    P[2, prob.model.param_index("k_tnf")] *= -1.0
    bad = replace(prob, params=P)
    with pytest.raises(SolveFailure) as info:
        solve_compiled(bad, max_steps=20_000)
    status = info.value.status
    assert list(np.nonzero(status)[0]) == [2]
    assert "patient 2" in str(info.value)
    states = info.value.states
    assert np.isnan(states[2]).all()
    keep = [0, 1, 3, 4, 5]
    assert np.array_equal(states[keep], good[keep])


def test_a_chunk_keeps_the_other_patients_when_one_fails(knee):
    """What simulate_chunk does with a failure: the failed patient has solve_status != 0 and NaN endpoints, the
    others have numbers, and the failure is listed in the results' attributes."""
    from mscsim.simulation import add_run_status, label_chunk, solve_keeping_others

    setup, prob = knee
    P = prob.params.copy()
    P[1, prob.model.param_index("k_tnf")] *= -1.0  # TNF-alpha runs away
    capped = replace(setup, scenario=setup.scenario.model_copy(
        update={"solver": setup.scenario.solver.model_copy(update={"max_steps": 20_000})}))
    bad = replace(prob, params=P)
    states, status = solve_keeping_others(capped, bad)
    ref, status_u = solve_keeping_others(capped, untreated(bad))
    ds = label_chunk(capped, bad, states, ref)
    add_run_status(ds, np.maximum(status, status_u), bad.baseline_method)
    assert list(ds["solve_status"].values != 0) == [False, True, False, False, False, False]
    assert "patient 1" in ds.attrs["solve_failures"]
    assert np.isnan(ds["pain_vas"].values[1]).all()
    assert np.isfinite(ds["pain_vas"].values[[0, 2, 3, 4, 5]]).all()


def test_a_process_generates_a_models_kernel_source_once(knee, monkeypatch):
    """A trial calls the engine for every chunk: the second call finds the loaded module by the model's key instead
    of generating its source again (about 15 ms a call, a quarter of a cheap chunk)."""
    import mscsim.solvers.compiled as compiled

    setup, prob = knee
    first = kernels(setup.model)

    def regenerated(*args, **kwargs):
        raise AssertionError("kernel source generated again")

    monkeypatch.setattr(compiled, "kernel_source", regenerated)
    assert kernels(setup.model) is first
    assert np.isfinite(solve_compiled(untreated(prob))).all()


@pytest.mark.slow  # compiles the knee kernels for RODAS4 too (~30 s on a cold cache): benchmarks/slow_checks.py
def test_a_rodas4_run_finds_its_chronic_state_with_its_own_kernel_module(knee, monkeypatch):
    """The steady-state search is the same code in every method's kernel module: a ``solver.method: rodas4`` run
    uses the RODAS4 module for it (one module compiled, not two) and finds the same chronic state to the bit."""
    import mscsim.solvers.compiled as compiled

    setup, prob = knee
    default = setup.chronic_state(prob.params)[0]
    four = _setup("knee_oa_ia_5e7", duration_days=30, population={"size": 6, "variability": True},
                  solver={"method": "rodas4"})
    asked = []
    real = compiled.kernels

    def recording(model, method=compiled.DEFAULT):
        asked.append(method)
        return real(model, method)

    monkeypatch.setattr(compiled, "kernels", recording)
    x = four.chronic_state(prob.params)[0]
    assert asked and set(asked) == {"rodas4"}
    assert np.array_equal(x, default)


def test_untreated_comparator_and_treated_share_the_compiled_baseline(knee):
    setup, prob = knee
    a = solve_compiled(untreated(prob))
    assert np.array_equal(a[:, 0], prob.x0)


def test_second_process_uses_the_cache(tmp_path):
    """A fresh cache: the first process compiles (model and machine code) and files both under the model's key;
    a second process finds them (no new files, and never imports SymPy), and a corrupt entry is recompiled, not
    trusted."""
    code = textwrap.dedent("""
        import sys, json, time
        t = time.perf_counter()
        from mscsim import scenario_from_dict
        from mscsim.simulation import resolve_setup
        from mscsim.solvers.compiled import solve_compiled
        import yaml
        from mscsim.analysis.validation import EXAMPLES
        data = yaml.safe_load((EXAMPLES / "mouse_iv_eggenhofer2012.yaml").read_text())
        setup = resolve_setup(scenario_from_dict(data))
        out = solve_compiled(setup.problem())
        print(json.dumps({"sum": float(out[:, -1].sum()), "key": setup.model.key, "sympy": "sympy" in sys.modules}))
    """)
    env = dict(os.environ, MSCSIM_CACHE_DIR=str(tmp_path / "cache"))

    def run():
        done = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run()
    assert first.pop("sympy")  # the first process compiled the model with SymPy
    entry = tmp_path / "cache" / "models" / first["key"][:40]
    files = sorted(p.name for p in entry.rglob("*") if p.is_file())
    assert "model.json" in files and any(f.endswith(".nbi") for f in files)  # Numba's index beside the module
    second = run()
    assert second.pop("sympy") is False  # loading a cached model needs no SymPy (half a second of start-up)
    assert second == first
    assert sorted(p.name for p in entry.rglob("*") if p.is_file()) == files  # nothing compiled again
    (entry / "model.json").write_text("{not json")
    third = run()
    assert third.pop("sympy")
    assert third == first
    assert json.loads((entry / "model.json").read_text())["key"] == first["key"]  # rewritten whole


def test_an_unwritable_cache_falls_back_to_compiling(tmp_path):
    from mscsim.model import cache
    from mscsim.model.core import Model
    from mscsim.simulation import KINETICS

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    old = os.environ.get("MSCSIM_CACHE_DIR")
    os.environ["MSCSIM_CACHE_DIR"] = str(blocker / "cache")  # under a file: cannot be created
    try:
        cm = cache.load_compiled(Model.compose(list(KINETICS)))
    finally:
        if old is None:
            os.environ.pop("MSCSIM_CACHE_DIR")
        else:
            os.environ["MSCSIM_CACHE_DIR"] = old
    assert cm.n_states > 0 and cm.rhs(np.zeros((1, cm.n_states)), np.ones((1, len(cm.param_names)))).shape == (
        1, cm.n_states)
