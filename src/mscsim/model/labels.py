"""What imaging sees: a cell label (111In-oxine, 99mTc-HMPAO) as states generated from the cell model (B04).

A label does not vanish when its cell dies: it follows the debris into phagocytes and stays in that organ, with its
own washout, physical decay and leakage. :func:`with_label` adds to a composed :class:`Model` one generated mechanism,
``imaging_label``, whose states are the label's share of the injected activity (decay-corrected):

* ``label_<S>`` for every viable or debris cell state ``S``: label on the cells or in the debris there. Every cell
  process ``A -> B`` with rate ``r`` gets a label process ``label_A -> label_B`` with rate ``r * label_A / A``,
  simplified with SymPy: first order (``r/A * label_A``) when ``r`` is linear in ``A``, else guarded at ``A = 0``.
* ``label_phagocytes_<compartment>``: where the cell model degrades debris (``debris -> cleared``) the label stays,
  in the phagocytes of that compartment (liver, spleen, lesion...), and washes out from there to free label.
* ``label_free``: free label in blood (efflux from viable labelled cells, washout from phagocytes, and the
  injected activity not bound to cells), which leaves to ``label_excreted``.

The label states add up to the injected activity at every time (checked after every solve, like the cells). The
label's numbers are parameters in ``data/parameters/labels.yaml``; without a label the model is unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import yaml

from .. import _yaml
from ..errors import DataError
from .core import Mechanism, Model, Process, State
from .parameters import DATA_DIR

if TYPE_CHECKING:
    import sympy as sp

LABEL_MECHANISM = "imaging_label"
LABELS_FILE = DATA_DIR / "parameters" / "labels.yaml"
FREE = "label_free"
EXCRETED = "label_excreted"
# organs as imaging reads them: compartments of the cell model (and the label's own pools) summed per region
ORGANS: dict[str, tuple[str, ...]] = {
    "lung": ("lung",),
    "liver": ("liver",),
    "spleen": ("spleen",),
    "bone_marrow_other": ("other_tissue",),
    "blood": ("venous_blood", "arterial_blood"),
    "lesion": ("target_site",),
    "injection_site_missed": ("offtarget_local",),
    "excreted": ("excreted",),
}
ORGAN_NAMES = {"lung": "lung", "liver": "liver", "spleen": "spleen", "bone_marrow_other": "bone marrow and other tissue",
               "blood": "blood (cells and free label)", "lesion": "lesion (target site)",
               "injection_site_missed": "missed injection (peri-lesional tissue)", "excreted": "excreted or elsewhere"}


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, dict]:
    try:
        raw = _yaml.safe_load(LABELS_FILE.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{LABELS_FILE}: cannot read the label catalogue: {exc}") from exc
    return dict(raw.get("labels") or {})


def available_labels() -> list[str]:
    """The labels with data in ``data/parameters/labels.yaml`` (e.g. ``111In-oxine``)."""
    return list(_catalogue())


def label_prefix(label: str) -> str:
    """The prefix of a label's parameter names (``111In-oxine`` -> ``In111_oxine``)."""
    try:
        return _catalogue()[label]["prefix"]
    except KeyError:
        raise DataError(f"unknown label '{label}'; labels with data: {available_labels()}") from None


def label_parameter(label: str, what: str) -> str:
    """The name of one of a label's parameters: half_life, cell_efflux, cell_bound, phagocyte_washout,
    free_clearance."""
    return f"{label_prefix(label)}_{what}"


def label_state(cell_state: str) -> str:
    return f"label_{cell_state}"


def phagocyte_state(compartment: str) -> str:
    return f"label_phagocytes_{compartment}"


def with_label(model: Model, label: str) -> Model:
    """``model`` with the label's states and processes (generated from its enabled cell processes) switched on."""
    mech = label_mechanism(model, label)
    out = Model(tuple(m for m in model.mechanisms if m.name != LABEL_MECHANISM) + (mech,),
                frozenset(model.enabled | {LABEL_MECHANISM}))
    out.check()
    return out


def label_mechanism(model: Model, label: str) -> Mechanism:
    """The ``imaging_label`` mechanism for ``label`` on the cell model ``model`` (see the module docstring)."""
    eff = label_parameter(label, "cell_efflux")
    wash, clear = label_parameter(label, "phagocyte_washout"), label_parameter(label, "free_clearance")
    kinds = {s.name: s for s in model.states}
    carriers = [s for s in model.states if s.kind in ("viable", "debris")]
    held = dict(units="1", kind="signal", scale=1.0, baseline="held")  # no label before the first dose
    states = [State(name=label_state(s.name), compartment=s.compartment,
                    description=f"label (share of injected activity) on {s.description or s.name}", **held)
              for s in carriers]
    procs: list[Process] = []
    pools: list[str] = []
    symbols = _rate_symbols(model)
    for p in model.processes:
        if p.source is None or p.target is None or kinds[p.source].kind not in ("viable", "debris"):
            continue
        src = label_state(p.source)
        if kinds[p.target].kind == "cleared":  # the cell model degrades it; the label stays in that compartment
            comp = kinds[p.source].compartment
            if comp not in pools:
                pools.append(comp)
            dst = phagocyte_state(comp)
        else:
            dst = label_state(p.target)
        procs.append(Process(name=f"label_{p.name}", rate=follow_rate(p.rate, p.source, symbols), source=src,
                             target=dst, mechanism=LABEL_MECHANISM,
                             description=f"the label follows '{p.name}' ({p.mechanism})"))
    for s in carriers:
        if s.kind == "viable":
            procs.append(Process(name=f"label_efflux_{s.name}", rate=f"{eff} * {label_state(s.name)}",
                                 source=label_state(s.name), target=FREE, mechanism=LABEL_MECHANISM,
                                 description="label leaks out of viable labelled cells as free label"))
    for comp in pools:
        states.append(State(name=phagocyte_state(comp), compartment=comp,
                            description=f"label held by phagocytes ({comp}) after they degraded labelled debris",
                            **held))
        procs.append(Process(name=f"label_washout_{comp}", rate=f"{wash} * {phagocyte_state(comp)}",
                             source=phagocyte_state(comp), target=FREE, mechanism=LABEL_MECHANISM,
                             description="label washes out of phagocytes to free label in blood"))
    states += [State(name=FREE, compartment="venous_blood", description="free label in blood", **held),
               State(name=EXCRETED, compartment="excreted", description="label excreted or left the imaged organs "
                     "(cumulative)", **held)]
    procs.append(Process(name="label_free_clearance", rate=f"{clear} * {FREE}", source=FREE, target=EXCRETED,
                         mechanism=LABEL_MECHANISM, description="free label leaves the blood"))
    params = {eff: "1/h", wash: "1/h", clear: "1/h"}  # the bound share and the half-life act on doses and outputs
    return Mechanism(name=LABEL_MECHANISM, title=f"What imaging sees: {label} on the cells, in debris, in phagocytes",
                     biology=("B04",), enabled_by_default=True, states=tuple(states), symbols=params,
                     expressions={}, processes=tuple(procs),
                     description=f"{label}: label states generated from the cell model's processes")


def _rate_symbols(model: Model) -> dict[str, sp.Symbol]:
    import sympy as sp  # here, not at the top: a run without a label never needs SymPy

    names = [s.name for s in model.states] + list(model.symbols) + list(model.expressions)
    return {n: sp.Symbol(n, real=True) for n in names}


def follow_rate(rate: str, source: str, symbols: dict[str, sp.Symbol]) -> str:
    """The label's share of a cell flux: ``rate * label_A / A`` for the flux out of cell state ``A``, as rate-law
    text. First order in the label (``rate/A * label_A``) when ``rate`` is linear in ``A``; ``rate/A * label_A``
    too when that per-cell rate is finite at ``A = 0``; otherwise guarded so that an empty cell state moves no
    label."""
    import sympy as sp

    A = symbols[source]
    L = sp.Symbol(label_state(source), real=True)
    try:
        r = sp.sympify(rate, locals=symbols)
    except (sp.SympifyError, SyntaxError, TypeError) as exc:
        raise DataError(f"cannot parse rate '{rate}': {exc}") from exc
    per_cell = r / A  # a product cancels A as it is built, keeping the rate law's own form
    if A in per_cell.free_symbols:
        per_cell = sp.cancel(per_cell)
    if A not in per_cell.free_symbols:  # linear in A: first order in the label
        return str(per_cell * L)
    denominator_at_zero = sp.denom(sp.together(per_cell)).subs(A, 0)
    if denominator_at_zero != 0 and not per_cell.subs(A, 0).has(sp.zoo, sp.nan, sp.oo):
        # a saturating rate (k A / (K + A)): the per-cell rate is defined at A = 0
        return str(per_cell * L)
    return str(sp.Piecewise((r * L / A, A > 0), (0, True)))  # singular per cell at A = 0: no cells, no label moves


def organ_states(model_states) -> dict[str, list[str]]:
    """Each imaged organ's label states (ORGANS), from the states' compartments."""
    out: dict[str, list[str]] = {}
    for organ, comps in ORGANS.items():
        names = [s.name for s in model_states if s.name.startswith("label_") and s.compartment in comps]
        if names:
            out[organ] = names
    return out


def decay_factor(t_hours: np.ndarray, half_life_hours: float) -> np.ndarray:
    """exp(-ln2 t / T): the share of the activity not yet decayed ``t`` hours after the injection."""
    return np.exp(-np.log(2.0) * np.asarray(t_hours, dtype=float) / half_life_hours)


__all__ = ["available_labels", "with_label", "label_mechanism", "follow_rate", "organ_states", "decay_factor",
           "label_parameter", "label_state", "phagocyte_state", "ORGANS", "ORGAN_NAMES", "LABEL_MECHANISM"]
