"""Product factors (B02/B03 first version) and reproducible virtual patients."""

import numpy as np

from conftest import example, run
from mscsim import Product, load_parameter_sets, potency_factors


def test_product_factors_follow_viability_passage_cryo_and_source():
    pset = load_parameter_sets(["product"])
    fresh = potency_factors(Product(passage=2), pset)
    assert fresh.potency == 1.0 and fresh.death_multiplier == 1.0
    assert potency_factors(Product(passage=2, cryo_state="thawed"), pset).potency < fresh.potency
    assert potency_factors(Product(passage=2, cryo_state="recovered"), pset).potency == fresh.potency
    assert potency_factors(Product(passage=12), pset).passage < 0.5 * fresh.passage
    assert potency_factors(Product(population_doublings=20), pset).passage == 1.0
    allo = potency_factors(Product(donor="allogeneic", source="umbilical_cord"), pset)
    assert 1.0 < allo.death_multiplier < potency_factors(Product(donor="allogeneic"), pset).death_multiplier
    f = potency_factors(Product(viability=0.8, source="adipose"), pset)
    assert f.effective_potent_dose(1e6) == 1e6 * 0.8 * f.potency


def test_same_seed_same_patients_whatever_the_chunk_size():
    base = example("human_iv_2e6_per_kg", population={"size": 7, "variability": True})
    a = run({**base, "solver": {"chunk_size": 7}})
    b = run({**base, "solver": {"chunk_size": 3}})
    assert np.array_equal(a["msc_lung"].values, b["msc_lung"].values)
    c = run({**base, "seed": 1})
    assert not np.array_equal(a["msc_lung"].values, c["msc_lung"].values)
    assert len({float(x) for x in a["msc_lung"].values[:, 10]}) == 7  # patients differ
