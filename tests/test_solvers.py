"""The batched Rosenbrock solver (RODAS5P, RODAS4) against the SciPy reference, and against exact solutions."""

import functools

import numpy as np
import pytest
from scipy.linalg import expm

from conftest import SCENARIO_EXAMPLES, SLOW_REFERENCE, example, marked_slow
from mscsim import scenario_from_dict, solve_batched, solve_reference
from mscsim.simulation import resolve_setup


def agree(a, b, scale, tol=1e-6):
    """|a - b| <= tol * (|b| + tol * scale): relative to the value, with a floor of a millionth of the dose
    (so states that have decayed to 1e-12 of the dose do not dominate)."""
    err = np.abs(a - b) / (np.abs(b) + tol * scale)
    return float(err.max())


# The tissue (disease) examples are compared over a shorter span than their presets' (35 days to a year) and with two
# patients, not three: the reference solver (Radau at rtol 1e-10, one patient at a time) needs minutes per
# patient-year of the tissue model, and over four minutes for three patients of the GVHD preset's eight infusions.
# The span still holds two of the GVHD infusions, and the cells' stay in the knee and the fistula with the lesion's
# response to them (the knee's cells are gone by day 90, B08).
AGREEMENT_DAYS = {"acute_gvhd_iv_2e6_per_kg": 5.0, "knee_oa_ia_5e7": 90.0, "perianal_fistula_120e6": 90.0}
AGREEMENT_TOL = {"dfu_topical_sheet_weekly": 1e-4}  # see the test: a wound closing in finite time


def agreement_scenario(name: str) -> dict:
    data = example(name, population={"size": 3, "variability": True})
    if "disease" in data:
        days = AGREEMENT_DAYS.get(name, 90.0)
        data = example(name, population={"size": 2, "variability": True}, duration_days=days)
        data["regimen"]["times_days"] = [t for t in data["regimen"]["times_days"] if t <= days]
    return data


@functools.lru_cache(maxsize=None)
def reference_solution(name: str):
    """(setup, problem, SciPy Radau solution) of an example's agreement scenario, solved once per test session: the
    RODAS4 engines and the exact linear solution (test_linear_solver) are all checked against it, and the reference
    is the slow part (up to 40 s for a kinetics example with many doses)."""
    setup = resolve_setup(scenario_from_dict(agreement_scenario(name)))
    prob = setup.problem()
    ref = solve_reference(prob)
    ref.setflags(write=False)  # shared between tests: none may change it
    return setup, prob, ref


@pytest.mark.parametrize("name", marked_slow(SCENARIO_EXAMPLES, SLOW_REFERENCE))
def test_batched_agrees_with_reference_on_every_example(name):
    setup, prob, ref = reference_solution(name)
    bat = solve_batched(prob)
    # comparison floor: 1e-6 of the cells given for cell states; 1e-4 of the typical magnitude for signal states,
    # so that at the tissue tolerance (1e-5) a difference below the solvers' own absolute tolerance for a signal
    # (SIGNAL_ATOL = 1e-9 of its scale) is not a disagreement: a signal decayed to ~1e-6 of its scale (the
    # efferocytosis signal weeks after the tendon's cells) differs by ~4e-10 of its scale between the solvers
    model = prob.model
    scale = np.where(model.cell_mask, prob.administered().max(), 100.0 * model.signal_scale)
    # the kinetics are linear: 1e-6. The tissue model is a year of nonlinear feedback, where the batched solver's
    # rtol 1e-8 accumulates to about 1e-6 globally: 1e-5. A closing wound (the diabetic foot ulcer) is the one
    # exception, 1e-4: its open area falls as a square root to zero in finite time, so in the days it closes (area
    # 5e-3 of the enrolment area) the two solvers' relative difference grows to 3.3e-5 (1.7e-7 of the enrolment
    # area); every other state agrees to 4e-7.
    tol = AGREEMENT_TOL.get(name, 1e-5 if setup.has_tissue else 1e-6)
    assert agree(bat, ref, scale) < tol


def test_rodas4_remains_a_choice_that_agrees_with_the_reference():
    """``solver.method: rodas4`` (the engine's method before RODAS5P) is accepted by a scenario, cited as Hairer &
    Wanner (RODAS5P as Steinebach), and agrees with the Radau reference on the knee-OA tissue model as the default
    does, so the two methods agree with each other too."""
    setup, prob, ref = reference_solution("knee_oa_ia_5e7")
    model = prob.model
    scale = np.where(model.cell_mask, prob.administered().max(), 100.0 * model.signal_scale)
    r4, r5 = solve_batched(prob, method="rodas4"), solve_batched(prob)
    assert agree(r4, ref, scale) < 1e-5 and agree(r5, ref, scale) < 1e-5
    assert not np.array_equal(r4, r5)  # two methods, not one under two names
    data = agreement_scenario("knee_oa_ia_5e7")
    four = resolve_setup(scenario_from_dict({**data, "solver": {"method": "rodas4"}}))
    assert "hairer1996" in four.solver_citations and "steinebach2023" in setup.solver_citations
    with pytest.raises(Exception, match="rodas5p"):
        scenario_from_dict({**data, "solver": {"method": "rodas6"}})


def test_a_patients_numbers_do_not_depend_on_its_batch():
    """Bit-identical whatever the batch: the knee-OA tissue model (nonlinear, W not diagonally dominant) for 30
    days after the dose from each patient's burn-in state, solved as one batch and as batches of 2, 1 and 1."""
    from dataclasses import replace

    setup = resolve_setup(scenario_from_dict(example("knee_oa_ia_5e7", duration_days=30,
                                                     population={"size": 4, "variability": True})))
    prob = setup.problem()

    def part(sl):
        return replace(prob, params=prob.params[sl], x0=prob.x0[sl],
                       boluses=tuple(replace(b, amount=b.amount[sl]) for b in prob.boluses))

    whole = solve_batched(prob)
    parts = np.concatenate([solve_batched(part(sl)) for sl in (slice(0, 2), slice(2, 3), slice(3, 4))])
    assert np.array_equal(whole, parts)
    assert len({float(x) for x in whole[:, -1, prob.model.index("m1")]}) == 4  # the patients differ


def test_output_times_do_not_change_the_steps():
    """Output times are read off each step's dense output, so asking for more of them changes neither the steps
    nor the numbers at the times both runs ask for (bit for bit), and a coarse grid costs no extra steps."""
    from dataclasses import replace

    setup = resolve_setup(scenario_from_dict(example("human_iv_2e6_per_kg", population={"size": 3,
                                                                                       "variability": True})))
    prob = setup.problem()
    t = np.asarray(prob.t_eval)
    fine = np.union1d(t, np.linspace(t[0], t[-1], 997))  # many more, most between the example's own
    common = np.isin(fine, t)
    a, b = solve_batched(prob), solve_batched(replace(prob, t_eval=fine))
    assert np.array_equal(b[:, common], a)
    assert np.all(np.isfinite(b))


def test_w_solves_eliminate_h_matrices_without_pivoting_and_send_the_rest_to_lapack():
    """Three patients on one pattern: W diagonally dominant; W an H-matrix that is not diagonally dominant (a
    large entry above the diagonal); W with a 2x2 block [[1.1, -10], [-10, 1.1]] (not an H-matrix)."""
    from mscsim.solvers._linalg import SparseBatchedSolver, SparsePattern

    n = 4
    rows, cols = np.nonzero(np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1))
    J = np.zeros((3, n, n))
    J[:, np.arange(n), np.arange(n)] = -1.0
    J[0, rows[rows != cols], cols[rows != cols]] = 0.3
    J[1, np.arange(n - 1), np.arange(1, n)] = 100.0
    J[2, 0, 1] = J[2, 1, 0] = 10.0
    inv_hg = np.full(3, 0.1)
    solver = SparseBatchedSolver(SparsePattern(n, rows, cols), J[:, rows, cols].T, inv_hg)
    assert list(solver.slow) == [2]
    b = np.random.default_rng(1).standard_normal((n, 3))
    W = np.eye(n)[None] * inv_hg[:, None, None] - J
    expected = np.linalg.solve(W, b.T[..., None])[..., 0].T
    np.testing.assert_allclose(solver.solve(b.copy()), expected, rtol=1e-12, atol=1e-12)


def test_rodas4_matches_matrix_exponential_on_the_linear_kinetics():
    """The kinetics are linear in the states: the exact solution is expm(A t) x0."""
    setup = resolve_setup(scenario_from_dict(example("mouse_iv_eggenhofer2012")))
    prob = setup.problem()
    model = prob.model
    A = model.jac(np.zeros((1, model.n_states)), prob.params)[0]
    x0 = prob.boluses[0].amount[0]
    exact = np.stack([expm(A * t) @ x0 for t in prob.t_eval])
    bat = solve_batched(prob)[0]
    assert agree(bat, exact, x0.sum()) < 1e-6


class _StiffLinear:
    """x' = A x with eigenvalues -1000 and -1."""
    A = np.array([[-1000.0, 1.0], [0.0, -1.0]])

    def rhs(self, x, p):
        return x @ self.A.T

    def jac(self, x, p):
        return np.broadcast_to(self.A, (x.shape[0], 2, 2)).copy()


class _Nonlinear:
    """a' = -a b + sin b, b' = a - b^2 / 2: a nonlinear system, so every order condition of a method is tested (a
    linear problem tests only those of its stability function)."""

    def rhs(self, x, p):
        a, b = x[:, 0], x[:, 1]
        return np.stack([-a * b + np.sin(b), a - 0.5 * b * b], axis=1)

    def jac(self, x, p):
        a, b = x[:, 0], x[:, 1]
        J = np.zeros((x.shape[0], 2, 2))
        J[:, 0, 0], J[:, 0, 1], J[:, 1, 0], J[:, 1, 1] = -b, -a + np.cos(b), 1.0, -b
        return J


def _nonlinear_exact(t):
    from scipy.integrate import solve_ivp

    sol = solve_ivp(lambda _, y: _Nonlinear().rhs(y[None], None)[0], (0.0, t), [1.0, 1.0], method="DOP853",
                    rtol=1e-13, atol=1e-14)
    return sol.y[:, -1]


def _fixed_steps(model, method, n, T=1.0):
    from mscsim.solvers.batched import _rosenbrock_step

    x, h = np.array([[1.0, 1.0]]), np.array([T / n])
    for _ in range(n):
        x, _ = _rosenbrock_step(model, x, None, 0.0, h, method)
    return x[0]


def test_rodas4_converges_at_fourth_order_on_a_stiff_problem():
    """Fixed-step error falls about 16-fold when the step halves (order 4) on a stiff linear system; RODAS5P's
    error is smaller at every step size."""
    exact = expm(_StiffLinear.A) @ np.array([1.0, 1.0])
    errs = {m: [np.abs(_fixed_steps(_StiffLinear(), m, n) - exact).max() for n in (8, 16, 32)]
            for m in ("rodas4", "rodas5p")}
    e = errs["rodas4"]
    assert e[0] / e[1] > 10 and e[1] / e[2] > 10
    assert all(a < b for a, b in zip(errs["rodas5p"], e))


@pytest.mark.parametrize("method, order", [("rodas4", 4), ("rodas5p", 5)])
def test_rosenbrock_methods_converge_at_their_order_on_a_nonlinear_problem(method, order):
    """Halving a fixed step divides the error by about 2**order (16 for RODAS4, 32 for RODAS5P): the tableau's
    coefficients are the method's."""
    exact = _nonlinear_exact(1.0)
    errs = [np.abs(_fixed_steps(_Nonlinear(), method, n) - exact).max() for n in (8, 16, 32)]
    for a, b in zip(errs, errs[1:]):
        assert 0.8 * 2 ** order < a / b < 1.25 * 2 ** order


@pytest.mark.parametrize("method, order", [("rodas4", 3), ("rodas5p", 4)])
def test_dense_output_has_the_order_of_the_methods_continuous_extension(method, order):
    """Inside one step, the dense output's local error is O(h^(order + 1)): about 2**(order + 1) smaller when the
    step halves (RODAS4's extension is of order 3, RODAS5P's of order 4), and exact at both ends of the step."""
    from mscsim.solvers._rosenbrock import dense_terms, dense_value, tableau
    from mscsim.solvers.batched import _step, _System

    system = _System(_Nonlinear(), tab=tableau(method))
    y0 = np.array([[1.0], [1.0]])  # batch-last: (states, patients)
    errs = []
    for h in (0.2, 0.1, 0.05):
        y1, _, k = _step(system, y0.copy(), None, np.zeros((2, 1)), np.array([h]))
        d = dense_terms(system.tab, k)
        assert np.array_equal(dense_value(d, 1.0, y0, y1), y1)
        errs.append(np.abs(dense_value(d, 0.4, y0, y1)[:, 0] - _nonlinear_exact(0.4 * h)).max())
    for a, b in zip(errs, errs[1:]):
        assert a / b > 0.7 * 2 ** (order + 1)
