"""The cell product and its effective potent dose: count x viability x potency factor, each factor cited.

The potency factor multiplies what each viable cell does (secretion, in the tissue mechanisms); the death
multiplier scales how fast viable cells are lost (allogeneic clearance, freshly thawed cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..model.parameters import ParameterSet

Source = Literal["bone_marrow", "adipose", "umbilical_cord"]
CryoState = Literal["fresh", "thawed", "recovered"]
Donor = Literal["autologous", "allogeneic"]


@dataclass(frozen=True)
class Product:
    """What is in the vial: tissue source, donor type, culture history, viability and cryo state."""

    source: Source = "bone_marrow"
    donor: Donor = "autologous"
    passage: int | None = None
    population_doublings: float | None = None
    viability: float = 0.95
    cryo_state: CryoState = "fresh"
    lot_id: str | None = None


@dataclass(frozen=True)
class PotencyFactors:
    """The factors that turn a cell count into an effective potent dose, with the parameters they came from."""

    viability: float
    passage: float
    cryo: float
    source: float
    death_multiplier: float
    population_doublings: float | None
    parameters: tuple[str, ...]

    @property
    def potency(self) -> float:
        """Per-viable-cell potency relative to a fresh, low-passage bone-marrow MSC."""
        return self.passage * self.cryo * self.source

    def effective_potent_dose(self, count: float) -> float:
        return count * self.viability * self.potency


def doublings_from_passage(passage: int, pset: ParameterSet) -> float:
    """Cumulative population doublings at the end of ``passage``: doublings per passage fall linearly
    from the first-passage value to the passage-10 value (Bonab 2006), and stay there after."""
    first = pset["pd_per_passage_first"].value
    p10 = pset["pd_per_passage_p10"].value
    total = 0.0
    for k in range(1, passage + 1):
        frac = min(k - 1, 9) / 9.0
        total += first + (p10 - first) * frac
    return total


def potency_factors(product: Product, pset: ParameterSet) -> PotencyFactors:
    """Compute each factor from the product and the cited product parameters."""
    used = ["pd_potency_onset", "pd_potency_decay", f"f_source_{product.source}"]
    pd = product.population_doublings
    if pd is None and product.passage is not None:
        pd = doublings_from_passage(product.passage, pset)
        used += ["pd_per_passage_first", "pd_per_passage_p10"]
    f_passage = 1.0
    if pd is not None:
        excess = pd - pset["pd_potency_onset"].value
        f_passage = math.exp(-excess / pset["pd_potency_decay"].value) if excess > 0 else 1.0
    f_cryo = 1.0
    m_death = 1.0
    if product.cryo_state == "thawed":
        f_cryo = pset["f_cryo_thawed"].value
        m_death *= pset["m_death_thawed"].value
        used += ["f_cryo_thawed", "m_death_thawed"]
    elif product.cryo_state == "recovered":
        f_cryo = pset["f_cryo_recovered"].value
        used += ["f_cryo_recovered"]
    if product.donor == "allogeneic":
        name = f"m_death_allogeneic_{product.source}"
        m_death *= pset[name].value
        used.append(name)
    return PotencyFactors(viability=product.viability, passage=f_passage, cryo=f_cryo,
                          source=pset[f"f_source_{product.source}"].value, death_multiplier=m_death,
                          population_doublings=pd, parameters=tuple(used))
