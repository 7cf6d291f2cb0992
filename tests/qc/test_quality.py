"""B02 Quality drives potency: a lot failing sterility, mycoplasma or endotoxin is never released, and the
lot's viability, passage and cryo state are what the simulator's product receives."""

from __future__ import annotations

import pytest
from qc_helpers import PASSING_RECORD, criterion, write_lot

from mscsim.errors import InputError
from mscsim.qc import evaluate_lot, load_lot, lot_from_dict, lot_product_fields, presets

RELEASE_SPECS = [p for p in presets() if p != "ISCT-2006"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("quality")


def _lot(folder, **changes):
    return load_lot(write_lot(folder / "_".join(sorted(changes)) if changes else folder / "base", **changes))


@pytest.mark.parametrize("spec", RELEASE_SPECS)
@pytest.mark.parametrize("test,word", [("sterility", "positive"), ("sterility", "pending"),
                                       ("mycoplasma", "positive")])
def test_B02_microbial_failure_is_never_released(folder, spec, test, word):
    result = evaluate_lot(_lot(folder, **{test: word}), spec)
    assert not result.released
    c = criterion(result, test)
    assert c.status == "fail" and c.measured == word
    assert any(f"'{word}' reported" in f and "not accepted" in f for f in result.failed)
    assert all(x.status in ("pass", "informative") for x in result.criteria if x.id != test)


def test_B02_endotoxin_over_the_usp85_limit_is_never_released(folder):
    # 3 EU/mL x 150 mL = 450 EU in one hour for 70 kg: 6.43 EU/kg against K = 5 EU/kg
    lot = _lot(folder, endotoxin={"value": 3.0, "unit": "EU/mL", "dose_volume_mL": 150, "patient_weight_kg": 70})
    result = evaluate_lot(lot)
    c = criterion(result, "endotoxin")
    assert c.status == "fail" and c.measured == pytest.approx(450 / 70)
    assert c.unit == "EU/kg" and c.source == ("usp85",)
    assert not result.released and any("over by 1.43 EU/kg" in f for f in result.failed)


def test_B02_endotoxin_per_hour_and_units(folder):
    base = dict(PASSING_RECORD, lot_id="E")
    spread = lot_from_dict({**base, "endotoxin": {"value": 3.0, "unit": "EU/mL", "dose_volume_mL": 150,
                                                  "patient_weight_kg": 70, "infusion_hours": 2}})
    assert spread.endotoxin.convert("EU/kg") == pytest.approx(450 / 70 / 2)  # K/M: M is the dose per kg per hour
    per_kg = lot_from_dict({**base, "endotoxin": {"value": 5.5, "unit": "EU/kg"}})
    assert criterion(evaluate_lot(per_kg), "endotoxin").status == "fail"
    per_kg_ok = lot_from_dict({**base, "endotoxin": {"value": 4.9, "unit": "EU/kg"}})
    assert criterion(evaluate_lot(per_kg_ok), "endotoxin").status == "pass"
    no_weight = lot_from_dict({**base, "endotoxin": {"value": 0.1, "unit": "EU/mL"}})
    c = criterion(evaluate_lot(no_weight), "endotoxin")
    assert c.status == "not_tested" and "patient_weight_kg" in c.detail
    assert not evaluate_lot(no_weight).released


def test_B02_viability_below_70_percent_blocks_release(folder):
    result = evaluate_lot(_lot(folder, viability="65%"))
    c = criterion(result, "viability")
    assert c.status == "fail" and c.measured == pytest.approx(65.0) and c.shortfall == pytest.approx(5.0)
    assert not result.released


def test_B02_abnormal_karyotype_blocks_release(folder):
    assert not evaluate_lot(_lot(folder, karyotype="abnormal")).released


def test_B02_product_fields_carry_viability_passage_and_cryo_state(folder):
    lot = _lot(folder, viability={"value": 84.5, "unit": "percent"}, passage=7, population_doublings=23.5,
               cryo_state="recovered", lot_id="LOT-77")
    fields = lot_product_fields(lot)
    assert fields == {"source": "bone_marrow", "passage": 7, "population_doublings": 23.5, "viability": 0.845,
                      "cryo_state": "recovered", "lot_id": "LOT-77"}


@pytest.mark.parametrize("written,fraction", [(0.91, 0.91), ("91%", 0.91), ({"value": 91, "unit": "percent"}, 0.91),
                                              ({"value": 0.91, "method": "7-AAD"}, 0.91)])
def test_B02_viability_as_fraction_or_percent(written, fraction):
    lot = lot_from_dict({**PASSING_RECORD, "viability": written})
    assert lot_product_fields(lot)["viability"] == pytest.approx(fraction)


def test_B02_bare_viability_over_one_is_not_guessed():
    with pytest.raises(InputError, match="looks like a percent"):
        lot_from_dict({**PASSING_RECORD, "viability": 91})


def test_B02_unreleased_lot_is_refused_by_the_product_unless_allowed(folder):
    from mscsim.product.lot import product_from_lot

    bad = write_lot(folder / "refused", sterility="positive", cryo_state="fresh", passage=3)
    with pytest.raises(InputError, match="Sterility"):
        product_from_lot(str(bad), allow_unreleased=False, donor="allogeneic")
    product = product_from_lot(str(bad), allow_unreleased=True, donor="allogeneic")
    assert (product.cryo_state, product.passage, product.viability) == ("fresh", 3, pytest.approx(0.92))
