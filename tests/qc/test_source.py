"""B03 Tissue source: bone marrow, adipose and umbilical cord are one product parameter, judged by the same
release program and handed on to the simulator."""

from __future__ import annotations

import pytest
from qc_helpers import PASSING_RECORD, write_lot

from mscsim.errors import InputError
from mscsim.qc import evaluate_lot, load_lot, lot_from_dict, lot_product_fields


@pytest.fixture(scope="module")
def flow_lot(tmp_path_factory):
    return load_lot(write_lot(tmp_path_factory.mktemp("source")))


@pytest.mark.parametrize("source", ["bone_marrow", "adipose", "umbilical_cord"])
def test_B03_source_is_a_product_parameter_not_a_different_program(flow_lot, source):
    lot = flow_lot.model_copy(update={"source": source})
    reference = evaluate_lot(flow_lot)
    result = evaluate_lot(lot)
    assert lot_product_fields(lot)["source"] == source
    assert [(c.id, c.status, c.measured) for c in result.criteria] == \
           [(c.id, c.status, c.measured) for c in reference.criteria]
    assert result.released


def test_B03_source_reaches_the_simulated_product(tmp_path):
    from mscsim.product.lot import product_from_lot

    path = write_lot(tmp_path, source="umbilical_cord")
    assert product_from_lot(str(path), allow_unreleased=False, donor="allogeneic").source == "umbilical_cord"


def test_B03_unknown_source_is_a_clear_error():
    with pytest.raises(InputError) as err:
        lot_from_dict({**PASSING_RECORD, "source": "wharton"}, file="lot.yaml")
    message = str(err.value)
    assert "lot.yaml" in message and "'source'" in message and "wharton" in message
    assert "bone_marrow, adipose, umbilical_cord" in message
