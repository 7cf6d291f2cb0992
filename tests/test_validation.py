"""Every bundled validation target passes, and each names a source in the bibliography.

Kinetics targets (data/validation/kinetics.yaml) run scenarios; in vitro immune targets (tissue.yaml) run the
co-culture presets with the model's own tissue mechanisms in a culture well."""

import pytest

from mscsim.analysis.validation import format_table, load_targets
from mscsim.model.parameters import load_parameter_sets
from mscsim.model.references import bibliography

TARGETS = load_targets()
KINETICS = [t["id"] for t in TARGETS if t["_file"] == "kinetics.yaml"]
IN_VITRO = [t["id"] for t in TARGETS if t["_file"] == "tissue.yaml"]


@pytest.fixture(scope="module")
def results(validation_results):
    return {r.id: r for r in validation_results}  # run_validation(), once per session (conftest.py)


def test_targets_cite_sources():
    """Each source can be found: a DOI, or (where none was found, e.g. infant_msc2019) a PubMed Central address."""
    bib = bibliography()
    for t in TARGETS:
        ref = bib[t["source"]]
        assert ref.doi or ref.url, t["id"]
    assert all(bib[t["source"]].doi for t in TARGETS if t["_file"] == "kinetics.yaml")


def test_fitted_parameters_name_their_targets():
    """A parameter fitted to a target says so in its data file, and the target lists it (consistency checks)."""
    pset = load_parameter_sets(["tissue", "context_well"])
    ids = {t["id"] for t in TARGETS}
    for t in TARGETS:
        if t["_file"] != "tissue.yaml":
            continue
        for name in t.get("fitted", []):
            assert set(pset[name].fitted_to) & ids, (t["id"], name)
            assert t["id"] in pset[name].fitted_to or any(f in ids for f in pset[name].fitted_to)
    for name in ("K_kyn_T", "K_pge2_T", "E_pge2"):
        assert pset[name].fitted_to and set(pset[name].fitted_to) <= ids, name


@pytest.mark.parametrize("target", KINETICS)
def test_B04_B08_kinetics_validation_target_passes(results, target):
    r = results[target]
    assert r.passed, f"{r.id}: simulated {r.simulated} vs observed {r.observed} ({r.tolerance})"


@pytest.mark.parametrize("target", IN_VITRO)
def test_B10_B11_in_vitro_validation_target_passes(results, target):
    r = results[target]
    assert r.passed, f"{r.id}: simulated {r.simulated} vs observed {r.observed} ({r.tolerance})"


def test_validation_table_lists_every_target(results):
    table = format_table(list(results.values()))
    for tid in KINETICS + IN_VITRO:
        assert tid in table
    assert "not 2019" not in table  # a source without captured authors is shown by its key
