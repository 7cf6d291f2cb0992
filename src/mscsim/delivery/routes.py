"""Routes of administration, injection sites and placement accuracy (how much of a local dose hits the lesion)."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from ..errors import InputError
from ..model.parameters import ParameterSet

Route = Literal["intravenous", "intra_articular", "intradiscal", "intramuscular", "perilesional", "perianal",
                "intralesional", "intra_arterial", "intratendinous", "topical"]
Guidance = Literal["ultrasound", "fluoroscopy", "landmark", "direct_vision", "stereotactic"]
Site = Literal["knee_joint", "intervertebral_disc", "tendon", "skeletal_muscle", "perianal_fistula", "systemic_lesion",
               "liver_lesion", "kidney_lesion", "lung_lesion", "heart_lesion", "gut_lesion", "brain_lesion", "wound_bed"]
# The organ a blood-borne lesion lies in (scenario ``lesion.organ``); ``systemic`` is a lesion of skin or another
# organ without a site file of its own (the systemic_lesion site, the default).
LesionOrgan = Literal["systemic", "liver", "kidney", "lung", "heart", "gut", "brain"]

LOCAL_ROUTES = ("intra_articular", "intradiscal", "intramuscular", "perilesional", "perianal", "intralesional",
                "intratendinous", "topical")
# Routes into the lesion's organ (scenario ``lesion.organ``) and the organs where clinicians use them:
# ``intralesional`` is a direct injection into the organ's lesion (intramyocardial, intrahepatic, intrarenal or
# subcapsular, intracerebral); ``intra_arterial`` an infusion into the organ's artery (intracoronary, hepatic artery,
# renal artery, intracarotid) whose capillary bed the cells meet before the lungs. The share of the cells the organ
# holds at that first contact is the site file's ``retained_<route>`` (the rest reach the venous blood).
ORGAN_ROUTES: dict[str, tuple[str, ...]] = {
    "intralesional": ("heart", "liver", "kidney", "brain"),
    "intra_arterial": ("heart", "liver", "kidney", "brain"),
}
DEFAULT_SITE: dict[str, str] = {
    "intravenous": "systemic_lesion",
    "intra_articular": "knee_joint",
    "intradiscal": "intervertebral_disc",
    "intratendinous": "tendon",  # an ultrasound-guided injection into the tendinopathic lesion (site_tendon)
    "intramuscular": "skeletal_muscle",
    "perilesional": "perianal_fistula",
    "perianal": "perianal_fistula",
    "topical": "wound_bed",  # onto an open skin wound (in a vehicle such as a hydrogel sheet, or as a suspension)
}


def retention_parameter(route: str) -> str | None:
    """The site parameter giving the share of a dose the lesion's organ holds at first contact (organ routes)."""
    return f"retained_{route}" if route in ORGAN_ROUTES else None


def lesion_site(organ: str) -> str:
    """The site (parameter file ``site_<site>.yaml``) of a lesion in ``organ``."""
    return "systemic_lesion" if organ == "systemic" else f"{organ}_lesion"


def site_of(route: str, site: str | None, organ: str | None) -> str:
    """The site a regimen delivers to: the one named, else the lesion's organ (intravenous dosing), else the
    route's default."""
    if site is not None:
        return site
    if organ is not None and (not is_local(route) or route in ORGAN_ROUTES):
        return lesion_site(organ)
    return DEFAULT_SITE[route]


def is_local(route: str) -> bool:
    return route in LOCAL_ROUTES


def placement_parameter(site: str, guidance: str | None, approach: str | None, pset: ParameterSet,
                        where: str = "regimen.guidance") -> str:
    """Name of the cited placement-accuracy parameter for this site, guidance and (blind) approach."""
    if not available_guidance(site, pset):
        local = sorted({s for r, s in DEFAULT_SITE.items() if is_local(r)})
        raise InputError("regimen.site", site, f"a site with placement-accuracy data for a local injection: {local} "
                         f"(none is recorded for {site}, a lesion reached from blood: dose it intravenously)")
    if guidance is None:
        raise InputError(where, None, f"a guidance for a local injection: {available_guidance(site, pset)}")
    name = f"placement_{guidance}" + (f"_{approach}" if approach else "")
    if name not in pset:
        if approach:
            approaches = sorted(n.removeprefix(f"placement_{guidance}_") for n in pset.names()
                                if n.startswith(f"placement_{guidance}_"))
            raise InputError("regimen.approach", approach,
                             f"approaches with accuracy data for {guidance} at {site}: {approaches or 'none'}")
        raise InputError(where, guidance, f"guidance with accuracy data at {site}: {available_guidance(site, pset)}")
    return name


def available_guidance(site: str, pset: ParameterSet) -> list[str]:
    """Guidance kinds for which the site's parameter file has an accuracy value."""
    return [g for g in get_args(Guidance) if f"placement_{g}" in pset]


def split_dose(route: str, cells: np.ndarray, viability: float, placement: float | None, model,
               retained: float | None = None) -> np.ndarray:
    """Distribute ``cells`` (per patient) over the model states: viable cells to the entry compartment,
    non-viable cells straight to debris there; a local dose splits between lesion and missed tissue.

    A route into an organ lesion (``ORGAN_ROUTES``) keeps the share ``retained`` in the organ at first contact:
    an injection's retained cells split by placement between the lesion and the missed tissue beside it; an
    intra-arterial infusion's are the cells the lesion's capillary bed extracts on their first pass. The rest
    reach the venous blood (needle track, venous and lymphatic drainage; the organ's venous outflow) and follow
    the intravenous kinetics from there: the lung filter first."""
    index = model.index
    amount = np.zeros((cells.shape[0], model.n_states))
    viable = cells * viability
    dead = cells * (1.0 - viability)
    kept = 1.0 if retained is None else retained
    if route in ORGAN_ROUTES:
        amount[:, index("msc_venous")] = viable * (1.0 - kept)
        amount[:, index("debris_blood")] = dead * (1.0 - kept)
        viable, dead = viable * kept, dead * kept
        if not is_local(route):  # intra-arterial: extracted in the lesion's bed
            amount[:, index("msc_target")] = viable
            amount[:, index("debris_target")] = dead
            return amount
    elif not is_local(route):
        amount[:, index("msc_venous")] = viable
        amount[:, index("debris_blood")] = dead
        return amount
    amount[:, index("msc_target")] += viable * placement
    amount[:, index("msc_offtarget")] += viable * (1.0 - placement)
    amount[:, index("debris_target")] += dead * placement
    amount[:, index("debris_offtarget")] += dead * (1.0 - placement)
    return amount
