"""Cell-product QC: is a lot MSC by the ISCT criteria, is it safe to release, and what goes to simulation.

A lot record (YAML) holds the lot's own data, including flow-cytometry files; a release specification
(a bundled preset such as ``ISCT-2006`` or a user's YAML) holds the limits, each with its source.

    lot = load_lot("lot.yaml")
    result = evaluate_lot(lot, "ISCT-2006")      # result.released, result.failed, result.criteria
    fields = lot_product_fields(lot)             # source, passage, population_doublings, viability, ...
"""

from .decision import CriterionResult, QCResult, evaluate_lot
from .lot import Lot, load_lot, lot_from_dict, lot_product_fields
from .spec import Criterion, Spec, load_spec, presets

__all__ = ["Lot", "load_lot", "lot_from_dict", "lot_product_fields", "Spec", "Criterion", "load_spec", "presets",
           "evaluate_lot", "QCResult", "CriterionResult"]
