"""From a QC'd lot to the simulator's product: a released lot's own viability, passage and cryo state."""

from __future__ import annotations

from ..errors import InputError
from .product import Product


def product_from_lot(path: str, *, allow_unreleased: bool, donor: str) -> Product:
    """Evaluate the lot against its release specification; refuse an unreleased lot unless allowed.

    The donor type comes from the lot record when it states one, else from the scenario."""
    from ..qc import evaluate_lot, load_lot, lot_product_fields

    lot = load_lot(path)
    result = evaluate_lot(lot)
    if not result.released and not allow_unreleased:
        reasons = "; ".join(result.failed) or "see 'mscsim qc'"
        raise InputError("product.lot", path, "a lot that passes release testing (or set product.allow_unreleased: "
                         f"true for a what-if study). Failed criteria: {reasons}")
    fields = lot_product_fields(lot)
    lot_donor = getattr(getattr(lot, "donor", None), "type", None)
    return Product(source=fields["source"], donor=lot_donor or donor, passage=fields["passage"],
                   population_doublings=fields["population_doublings"], viability=fields["viability"],
                   cryo_state=fields["cryo_state"], lot_id=fields["lot_id"])
