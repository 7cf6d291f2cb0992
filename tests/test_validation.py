"""Every bundled kinetics validation target passes, and each names a source in the bibliography."""

import pytest

from mscsim.analysis.validation import load_targets, run_validation
from mscsim.model.references import bibliography


@pytest.fixture(scope="module")
def results():
    return {r.id: r for r in run_validation()}


def test_targets_cite_sources():
    bib = bibliography()
    for t in load_targets():
        assert t["source"] in bib and bib[t["source"]].doi


@pytest.mark.parametrize("target", [t["id"] for t in load_targets()])
def test_B04_B08_kinetics_validation_target_passes(results, target):
    r = results[target]
    assert r.passed, f"{r.id}: simulated {r.simulated} vs observed {r.observed} ({r.tolerance})"
