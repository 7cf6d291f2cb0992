"""Trial bands from parameter uncertainty: draws run as chunks like patients (identical with 1 and 2 workers and any
chunk size), a draw at the nominal values is the nominal trial, and every table and the report carry the bands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import small_design, write_design
from mscsim.cli import main
from mscsim.trials import design_from_dict
from mscsim.trials.uncertain import arm_sets, design_space


@pytest.fixture(scope="module")
def banded(tmp_path_factory):
    """The small knee-OA design with 4 parameter draws of 3 patients per arm, run with one worker and chunks of 2
    and with two workers and chunks of 5."""
    root = tmp_path_factory.mktemp("banded")
    design = write_design(small_design(uncertainty={"draws": 4, "pool_per_arm": 3}), root / "design.yaml")
    outs = {}
    for name, extra in (("one", ["--chunk-size", "2"]), ("two", ["--chunk-size", "5", "--workers", "2"])):
        outs[name] = root / name
        assert main(["trial", str(design), "--out", str(outs[name]), *extra]) == 0
    return design, outs


def test_trial_bands_are_identical_with_one_and_two_workers(banded):
    _, outs = banded
    for name in ("draws.parquet", "endpoints.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(outs["one"] / name), pd.read_parquet(outs["two"] / name),
                                      check_exact=True)
    for name in ("arm_summary.csv", "comparisons.csv", "published_vs_simulated.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(outs["one"] / name), pd.read_csv(outs["two"] / name),
                                      check_exact=True)


def test_every_trial_table_carries_the_three_sources_apart(banded):
    _, outs = banded
    out = outs["one"]
    summary = pd.read_csv(out / "arm_summary.csv")
    assert {"param_median", "param_low90", "param_high90", "param_low95", "param_high95", "patients_low90",
            "patients_high90", "ci_low", "ci_high"} <= set(summary.columns)
    cont = summary[summary["kind"] == "continuous"]
    assert (cont["param_low95"] <= cont["param_low90"]).all() and (cont["param_high90"] <= cont["param_high95"]).all()
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert comparisons["param_median"].notna().all()
    published = pd.read_csv(out / "published_vs_simulated.csv")
    assert {"param_median", "predictive_low95", "predictive_high95", "agrees_with_uncertainty"} <= \
        set(published.columns)
    assert (published["predictive_low95"] <= published["predictive_high95"]).all()
    draws = pd.read_parquet(out / "draws.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert draws["draw"].nunique() == manifest["uncertainty"]["draws"] == 4
    assert manifest["uncertainty"]["pool_per_arm"] == 3
    assert "parameter uncertainty" in (out / "report.html").read_text()


def test_a_draw_at_the_nominal_values_is_the_nominal_trial(banded):
    design_path, outs = banded
    import yaml

    design = design_from_dict(yaml.safe_load(design_path.read_text()))
    space = design_space(design)
    nominal = pd.read_parquet(outs["one"] / "endpoints.parquet")
    for arm in design.arms:
        table, failed = arm_sets(design, arm, space, space.nominal()[None, :], np.array([0]), 3)
        assert not failed.any()
        mine = table.drop(columns="draw").reset_index(drop=True)
        theirs = nominal[nominal["arm"] == arm.name].reset_index(drop=True)
        theirs = theirs[theirs["patient"].isin(mine["patient"])].reset_index(drop=True)
        cols = ["patient", "endpoint", "visit_day", "value", "baseline", "change"]
        mine = mine.sort_values(["patient", "endpoint", "visit_day"]).reset_index(drop=True)
        theirs = theirs.sort_values(["patient", "endpoint", "visit_day"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[cols], theirs[cols], check_exact=True)
