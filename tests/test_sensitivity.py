"""Global sensitivity (mscsim sensitivity): the pipeline recovers the analytic Sobol indices of the Ishigami function,
a small model's ranking is stable between two sample sizes, results are identical with 1 and 2 workers and any
chunk size, a stopped run resumes, and bad input is an error naming the option."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import example
from mscsim import scenario_from_dict
from mscsim.analysis.outputs import FunctionTarget, scenario_target, validation_target
from mscsim.analysis.sensitivity import EPS, OTHERS, chunk_store, run_sensitivity
from mscsim.cli import main
from mscsim.model.parameters import Distribution, Parameter
from mscsim.uncertainty.priors import ParameterSpace, UncertainParameter


def _uniform(name: str, low: float, high: float) -> UncertainParameter:
    dist = Distribution(distribution="uniform", low=low, high=high, basis="test function input")
    return UncertainParameter(Parameter(name, (low + high) / 2, "1", "assumed", ("test",), uncertainty=dist), "model")


def ishigami_target(extra: int = 1) -> FunctionTarget:
    """Ishigami (a = 7, b = 0.1) on [-pi, pi]^3 (the priors are widened so that their 0.5-99.5 % quantiles, what the
    pipeline samples, are exactly [-pi, pi]), plus ``extra`` inputs it ignores."""
    half = math.pi / (1 - 2 * EPS)
    space = ParameterSpace(tuple([_uniform(f"x{i}", -half, half) for i in (1, 2, 3)] +
                                 [_uniform(f"z{i}", 0.0, 1.0) for i in range(extra)]))

    def ishigami(v):
        return np.sin(v[:, 0]) + 7 * np.sin(v[:, 1]) ** 2 + 0.1 * v[:, 2] ** 4 * np.sin(v[:, 0])

    return FunctionTarget(space, "ishigami", ishigami)


def ishigami_indices(a: float = 7.0, b: float = 0.1) -> dict[str, tuple[float, float]]:
    """Analytic (S1, ST) of the Ishigami function (Ishigami & Homma 1990; Sobol' & Levitan 1999)."""
    v1 = 0.5 * (1 + b * math.pi ** 4 / 5) ** 2
    v2 = a ** 2 / 8
    v13 = b ** 2 * math.pi ** 8 / 18 - b ** 2 * math.pi ** 8 / 50
    v = v1 + v2 + v13
    return {"x1": (v1 / v, (v1 + v13) / v), "x2": (v2 / v, v2 / v), "x3": (0.0, v13 / v)}


def test_ishigami_through_the_pipeline_recovers_its_analytic_sobol_indices(tmp_path):
    result = run_sensitivity(ishigami_target(), tmp_path / "out", samples=2048, trajectories=10, top=3, seed=1)
    t = result.table.set_index("parameter")
    for name, (s1, st) in ishigami_indices().items():
        assert t.loc[name, "S1"] == pytest.approx(s1, abs=0.04), name
        assert t.loc[name, "ST"] == pytest.approx(st, abs=0.04), name
        assert t.loc[name, "ST_low"] <= st + 0.02 and t.loc[name, "ST_high"] >= st - 0.02, name  # the CI covers it
    assert abs(t.loc[OTHERS, "ST"]) < 0.01  # the ignored input, as the rest group
    assert list(t.index[:3]) == ["x1", "x2", "x3"]  # ranked by total index
    assert result.manifest["convergence"]["sobol"]["stable"]
    for name in ("sensitivity.csv", "convergence.csv", "sensitivity.png", "evaluations.npz", "manifest.json"):
        assert (tmp_path / "out" / name).is_file(), name
    assert not chunk_store(tmp_path / "out").exists()


def _kinetics_target():
    sc = scenario_from_dict(example("mouse_iv_eggenhofer2012", duration_days=2))
    return scenario_target(sc, "viable_fraction_24h")


def test_a_small_model_ranking_is_stable_between_two_sample_sizes(tmp_path):
    target = _kinetics_target()
    small = run_sensitivity(target, tmp_path / "a", method="morris", samples=10, seed=5)
    large = run_sensitivity(target, tmp_path / "b", method="morris", samples=20, seed=5)
    top = lambda r: list(r.table["parameter"][:3])  # noqa: E731
    assert top(small) == top(large)
    assert small.manifest["convergence"]["morris"]["top_overlap"] >= 0.8


def test_identical_results_with_one_and_two_workers_and_any_chunk_size(tmp_path):
    target = _kinetics_target()
    one = run_sensitivity(target, tmp_path / "one", samples=8, trajectories=4, top=3, seed=2, chunk_rows=50)
    two = run_sensitivity(target, tmp_path / "two", samples=8, trajectories=4, top=3, seed=2, chunk_rows=17,
                          workers=2)
    pd.testing.assert_frame_equal(one.table, two.table, check_exact=True)
    a, b = np.load(tmp_path / "one" / "evaluations.npz"), np.load(tmp_path / "two" / "evaluations.npz")
    assert np.array_equal(a["morris_output"], b["morris_output"]) and np.array_equal(a["sobol_output"],
                                                                                       b["sobol_output"])


class _Stopped(Exception):
    """The run is stopped (as by a killed process) part-way through."""


def test_a_stopped_run_resumes_without_recomputing_finished_chunks(tmp_path):
    target = ishigami_target()
    calls, stop = [], [True]

    def flaky(v):
        calls.append(len(v))
        if stop[0] and len(calls) == 3:
            raise _Stopped  # stopped part-way through the Morris screening
        return target.fn(v)

    stopped = FunctionTarget(target.space, "ishigami", flaky)
    with pytest.raises(_Stopped):
        run_sensitivity(stopped, tmp_path / "out", method="morris", samples=20, seed=3, chunk_rows=10)
    assert len(list(chunk_store(tmp_path / "out").glob("morris_*.npy"))) == 2
    calls.clear()
    stop[0] = False
    resumed = run_sensitivity(stopped, tmp_path / "out", method="morris", samples=20, seed=3, chunk_rows=10)
    fresh = run_sensitivity(target, tmp_path / "fresh", method="morris", samples=20, seed=3, chunk_rows=10)
    assert sum(calls) == 100 - 20 + 1  # the 8 chunks not yet done, and the nominal point; not the 2 finished
    pd.testing.assert_frame_equal(resumed.table, fresh.table, check_exact=True)


def test_a_validation_target_output_is_the_validation_value():
    from mscsim.analysis.validation import load_targets, run_validation

    target = validation_target("K3-oa-knee")
    expected = run_validation([t for t in load_targets() if t["id"] == "K3-oa-knee"])[0].simulated
    assert target.evaluate(target.space.nominal()[None, :])[0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("args, field, words", [
    (["human_iv_2e6_per_kg", "--output", "pain_vas_dya180"], "--output", "an output of scenario"),
    (["human_iv_2e6_per_kg", "--output", "viable_fraction_24h", "--samples", "1"], "--samples", "integer >= 2"),
    (["human_iv_2e6_per_kg", "--output", "viable_fraction_24h", "--samples", "12"], "--samples", "power of two"),
    (["human_iv_2e6_per_kg", "--output", "viable_fraction_24h", "--top", "0"], "--top", ">= 1"),
    (["knee_oa_lee_2019", "--output", "difference:pain_vas_day45"], "--output", "visit"),
    (["knee_oa_lee_2019", "--output", "mean:pain_vas_day180:placebo"], "--output", "an arm"),
    (["validation", "--output", "I1-ratio-1to3"], "--output", "co-culture"),
])
def test_bad_input_is_an_error_naming_the_field(tmp_path, capsys, args, field, words):
    out = tmp_path / "out"
    assert main(["sensitivity", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"field '{field}'" in err and words in err, err
    assert not out.exists()


def test_a_prior_with_lower_above_upper_is_an_error_naming_the_field(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(example("human_iv_2e6_per_kg", uncertainty={"draws": 4, "priors": {
        "k_death_lung": {"distribution": "loguniform", "low": 0.2, "high": 0.1, "basis": "b"}}})))
    assert main(["sensitivity", str(path), "--output", "viable_fraction_24h", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "uncertainty.priors.k_death_lung" in err and "must be below high" in err


def test_the_cli_writes_a_ranked_table_and_a_manifest(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(example("mouse_iv_eggenhofer2012", duration_days=2)))
    out = tmp_path / "out"
    assert main(["sensitivity", str(path), "--output", "viable_fraction_24h", "--out", str(out), "--method", "morris",
                 "--samples", "4"]) == 0
    table = pd.read_csv(out / "sensitivity.csv")
    assert table["morris_rank"].tolist() == list(range(1, len(table) + 1))
    assert {"parameter", "label", "grade", "prior", "mu_star", "mu_star_conf", "sigma"} <= set(table.columns)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 20261122 and manifest["target"]["scenario"]["name"] and manifest["mscsim_version"]
    assert "viable_fraction_24h" in capsys.readouterr().out
