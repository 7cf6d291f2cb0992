"""The exact solution of the linear kinetics (solvers.linear): proved linear, exact, batch-independent, and
integrated by RODAS4 where the eigenvectors are ill-conditioned."""

from dataclasses import replace

import numpy as np
import pytest
from scipy.linalg import expm

from conftest import SCENARIO_EXAMPLES, SLOW_REFERENCE, example, marked_slow
from mscsim import scenario_from_dict, solve_reference
from mscsim.simulation import resolve_setup, solve
from mscsim.solvers.compiled import solve_compiled
from mscsim.solvers.linear import solve_linear
from test_solvers import agree, reference_solution


def kinetics_problem(n=3, **changes):
    setup = resolve_setup(scenario_from_dict(example("human_iv_2e6_per_kg", population={"size": n,
                                                                                       "variability": True},
                                                     **changes)))
    return setup, setup.problem()


def test_the_kinetics_are_proved_linear_and_the_tissue_model_is_not():
    setup, prob = kinetics_problem()
    assert prob.model.linear
    knee = resolve_setup(scenario_from_dict(example("knee_oa_ia_5e7")))
    assert not knee.model.linear
    assert "moler2003" in setup.solver_citations and "moler2003" not in knee.solver_citations


def test_exact_solution_matches_the_matrix_exponential_through_the_infusion():
    """Against SciPy's expm of the augmented matrix [[A, u], [0, 0]] (an independent exact method), segment by
    segment: the 30-minute infusion, then 28 days; to 1e-10 relative, with a floor of 1e-12 of the cells given
    (minutes into the infusion a state holding one cell of 1.4e8 is a difference of large eigen-terms: its
    error, 1e-9 cells, is round-off of the dose, far below the integrators' absolute tolerance, 1e-13 of it)."""
    _, prob = kinetics_problem()
    got = solve_linear(prob)
    model, t = prob.model, np.asarray(prob.t_eval)
    A = model.jac(prob.initial_state(), prob.params)
    (inf,) = prob.infusions
    n = model.n_states
    for i in range(prob.n_patients):
        x_end = None
        for lo, hi, rate in ((0.0, inf.t_end, inf.rate[i]), (inf.t_end, t[-1], np.zeros(n))):
            M = np.zeros((n + 1, n + 1))
            M[:n, :n], M[:n, n] = A[i], rate
            x_start = np.append(np.zeros(n) if x_end is None else x_end, 1.0)
            inside = (t >= lo) & (t <= hi)
            exact = np.stack([expm(M * (s - lo)) @ x_start for s in t[inside]])[:, :n]
            given = inf.rate[i].sum() * inf.t_end
            assert np.all(np.abs(got[i, inside] - exact) <= 1e-10 * np.abs(exact) + 1e-12 * given)
            x_end = (expm(M * (hi - lo)) @ x_start)[:n]


@pytest.mark.parametrize("name", marked_slow([n for n in SCENARIO_EXAMPLES if "disease" not in example(n)],
                                             SLOW_REFERENCE))
def test_linear_examples_agree_with_the_reference_solver(name):
    """Every bundled kinetics example (a linear model) against SciPy Radau, as the RODAS4 engine is checked."""
    setup, prob, ref = reference_solution(name)  # the same Radau solution test_solvers checks RODAS4 against
    if not prob.model.linear:
        pytest.skip("not a linear composition")
    scale = np.where(prob.model.cell_mask, prob.administered().max(), 100.0 * prob.model.signal_scale)
    assert agree(solve(setup, prob), ref, scale) < 1e-6


def test_a_patients_numbers_do_not_depend_on_its_batch_or_block(monkeypatch):
    import mscsim.solvers.linear as linear

    _, prob = kinetics_problem(n=11)
    whole = solve_linear(prob)
    parts = np.concatenate([solve_linear(prob.take(slice(a, b))) for a, b in ((0, 4), (4, 5), (5, 11))])
    monkeypatch.setattr(linear, "BLOCK", 3)
    blocks = solve_linear(prob)
    assert np.array_equal(whole, parts) and np.array_equal(whole, blocks)
    assert len({float(x) for x in whole[:, -1, prob.model.index("msc_liver")]}) == 11  # the patients differ


def test_a_defective_system_is_integrated_by_rodas4_instead():
    """A chain of two compartments with the same rate (liver cells dying as fast as liver debris is degraded) has
    a Jordan block: no eigenvector basis. That patient goes to the compiled RODAS4 engine; the others stay exact,
    and every patient still agrees with the reference solver."""
    _, prob = kinetics_problem()
    model = prob.model
    P = prob.params.copy()
    P[1, model.param_index("k_degrade")] = P[1, model.param_index("k_death_organ")] * P[1, model.param_index("m_death")]
    prob = replace(prob, params=P)
    got = solve_linear(prob)
    assert list(solve_linear.last_fallback) == [False, True, False]
    scale = np.where(model.cell_mask, prob.administered().max(), 100.0 * model.signal_scale)
    assert agree(got, solve_reference(prob), scale) < 1e-6
    assert np.array_equal(got[1], solve_compiled(prob.take([1]))[0])


def test_solve_linear_refuses_a_nonlinear_model():
    knee = resolve_setup(scenario_from_dict(example("knee_oa_ia_5e7", duration_days=5)))
    with pytest.raises(ValueError, match="linear"):
        solve_linear(knee.problem())
