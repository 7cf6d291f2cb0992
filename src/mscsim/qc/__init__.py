"""Cell-product QC: is a lot MSC by the ISCT criteria, is it safe to release, and what goes to simulation.

A lot record (YAML) holds the lot's own data, including flow-cytometry files; a release specification
(a bundled preset such as ``ISCT-2006`` or a user's YAML) holds the limits, each with its source.

    lot = load_lot("lot.yaml")
    result = evaluate_lot(lot, "ISCT-2006")      # result.released, result.failed, result.criteria
    fields = lot_product_fields(lot)             # source, passage, population_doublings, viability, ...
"""

from importlib import import_module

_API = {"Lot": "lot", "load_lot": "lot", "lot_from_dict": "lot", "lot_product_fields": "lot", "Spec": "spec",
        "Criterion": "spec", "load_spec": "spec", "presets": "spec", "evaluate_lot": "decision",
        "QCResult": "decision", "CriterionResult": "decision"}
__all__ = list(_API)


def __getattr__(name: str):
    """Imported on first use, so the command line (which registers ``qc`` on every command) starts quickly."""
    if name in _API:
        value = getattr(import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mscsim.qc' has no attribute {name!r}")
