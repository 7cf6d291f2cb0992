"""Run a co-culture preset in a culture well with the model's own tissue mechanisms.

The well is the lesion of the tissue model without a body: MSCs sit in it (the ``msc_target`` state; no
circulation, death or retention mechanisms), the responders are the T cells or macrophages of the same
immune mechanisms used in patients, and ``context_well`` holds what differs in a dish (volume, stable
mediators, mitogen). Pre-licensing is run with the model too: MSCs alone with IFN-gamma, then the medium
is replaced and the responders are added, so only the MSCs' licensed state carries over.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from ..errors import DataError, InputError
from ..model.compiled import CompiledModel
from ..model.overrides import apply_overrides, check_overrides
from ..model.parameters import ParameterSet, load_parameter_sets
from ..model.units import convert
from ..simulation import compiled
from ..solvers.batched import solve_batched
from ..solvers.problem import Problem
from .spec import CocultureSpec, parse_ratio

# The tissue mechanisms that act in a dish; MSCs stay where they are put (no kinetics mechanism), and there
# is no tissue to injure, scar, vascularise or hurt.
WELL_MECHANISMS = ("cell_compartments", "tissue_states", "msc_licensing", "msc_secretion", "cytokine_network",
                   "macrophage_polarisation", "t_cell_response", "innate_activation")
WELL_PARAMETER_FILES = ("tissue", "context_well")
# MSCs alone (pre-licensing, or MSC-only wells): no immune cells of any kind, so none can be activated.
NO_IMMUNE_CELLS = {"teff_0": 0.0, "treg_0": 0.0, "m1_0": 0.0, "m2_0": 0.0, "stim_ext": 0.0, "k_nk": 0.0,
                   "k_dc": 0.0}
SOLVER_RTOL = 1e-8
STEPS_PER_HOUR = 1

# Readouts and their units. 'inhibition' is the share of the no-MSC well's proliferation (cumulative divisions,
# as CFSE dilution reads it) that the MSCs prevent; 'inhibition_pulse' the same for the divisions in the last
# thymidine_pulse_hours (as 3H-thymidine incorporation reads it); 'm2_share' is M2 / (M1 + M2); others are states.
READOUT_UNITS = {"inhibition": "1", "inhibition_pulse": "1", "m2_share": "1", "lic_local": "1", "kyn": "umol/L",
                 "pge2": "ng/mL", "tgfb": "pg/mL", "ifng": "pg/mL", "tnf": "pg/mL", "il10": "pg/mL", "il6": "pg/mL"}
ASSAY_READOUTS = {"t_cell_proliferation": ("inhibition", "inhibition_pulse", "kyn", "pge2"),  # table columns
                  "macrophage_polarisation": ("m2_share", "il10", "tnf", "il6", "pge2")}
COLUMNS = {"inhibition": "inhibition_pct", "inhibition_pulse": "inhibition_pulse_pct", "kyn": "kyn_umol_per_l",
           "pge2": "pge2_ng_per_ml", "m2_share": "m2_share", "il10": "il10_pg_per_ml", "tnf": "tnf_pg_per_ml",
           "il6": "il6_pg_per_ml"}


@lru_cache(maxsize=1)
def well_model() -> CompiledModel:
    """The well composition, compiled once; checked to move no cells (MSC numbers are what the preset seeds)."""
    model = compiled(WELL_MECHANISMS, ())
    if np.any(model.stoichiometry[model.cell_mask]):
        raise DataError("the well composition must not move MSCs between cell states")
    return model


def well_parameters(spec: CocultureSpec, *, file: str | None = None) -> ParameterSet:
    """Tissue defaults, the culture-well context, then the preset's own values (recorded as overrides), each
    checked like a scenario's (names, units, bounds)."""
    pset = load_parameter_sets(list(WELL_PARAMETER_FILES))
    checked = check_overrides(pset, spec.parameters, spec.allow_out_of_bounds, file=file)
    return apply_overrides(pset, checked)


@dataclass(frozen=True)
class Condition:
    """One well: MSCs per responder (0 = the no-MSC control) and whether the MSCs were pre-licensed."""

    label: str
    msc_per_responder: float
    prelicensed: bool


@dataclass(frozen=True)
class CocultureResult:
    """Every well's states over the co-culture (conditions x times x states) and the readouts derived from them."""

    spec: CocultureSpec
    model: CompiledModel
    pset: ParameterSet
    conditions: tuple[Condition, ...]
    times_h: np.ndarray
    states: np.ndarray

    def value(self, readout: str, condition: Condition, time_h: float | None = None) -> float:
        """A readout of one well at a time (default: the end of the co-culture)."""
        i = self.conditions.index(condition)
        k = len(self.times_h) - 1 if time_h is None else int(np.argmin(np.abs(self.times_h - time_h)))
        x = self.states[i, k]
        s = self.model.index
        if readout in ("inhibition", "inhibition_pulse"):
            return self._inhibition(i, k, pulse=readout == "inhibition_pulse")
        if readout == "m2_share":
            total = x[s("m1")] + x[s("m2")]
            return float(x[s("m2")] / total) if total > 0 else float("nan")
        if readout not in READOUT_UNITS:
            raise InputError("readout", readout, f"one of {sorted(READOUT_UNITS)}")
        return float(x[s(readout)])

    def _inhibition(self, i: int, k: int, *, pulse: bool) -> float:
        """1 - divisions of well i / divisions of the no-MSC well, from the start (CFSE) or over the last
        thymidine_pulse_hours before output time k (3H-thymidine)."""
        j = 0
        if pulse:
            if self.spec.thymidine_pulse_hours is None:
                raise InputError("thymidine_pulse_hours", None, "a pulse length (h) for the 'inhibition_pulse' readout")
            j = int(np.argmin(np.abs(self.times_h - (self.times_h[k] - self.spec.thymidine_pulse_hours))))
        div = self.states[:, :, self.model.index("t_divisions")]
        c = self.conditions.index(self.control)
        ctrl = div[c, k] - div[c, j]
        return float(1.0 - (div[i, k] - div[i, j]) / ctrl) if ctrl > 0 else float("nan")

    @property
    def control(self) -> Condition:
        return self.conditions[0]

    def condition(self, ratio: str | float, prelicensed: bool = False) -> Condition:
        r = ratio if isinstance(ratio, float) else _ratio_value(ratio)
        for c in self.conditions:
            if np.isclose(c.msc_per_responder, r, rtol=1e-9, atol=0.0) and c.prelicensed == prelicensed:
                return c
        raise InputError("ratio", ratio, f"a ratio of the preset: {list(self.spec.ratios)} "
                         f"(pre-licensed: {self.spec.prelicensing is not None})")

    def table(self) -> pd.DataFrame:
        """One row per well at the end of the co-culture: ratio, pre-licensing, MSCs per well and the readouts."""
        rows = []
        n = self.spec.well.responders_per_well
        for c in self.conditions:
            row = {"ratio": c.label, "msc_per_well": c.msc_per_responder * n, "prelicensed": c.prelicensed}
            for r in self.readouts():
                v = self.value(r, c)
                row[COLUMNS[r]] = 100.0 * v if r.startswith("inhibition") else v
            rows.append(row)
        return pd.DataFrame(rows)

    def readouts(self) -> tuple[str, ...]:
        """The readouts of the preset's assay (the pulse readout only where the preset gives a pulse length)."""
        out = ASSAY_READOUTS[self.spec.assay]
        return tuple(r for r in out if r != "inhibition_pulse" or self.spec.thymidine_pulse_hours is not None)

    def citation_keys(self) -> list[str]:
        keys = self.pset.citations(self.model.param_names) + list(self.spec.sources)
        return list(dict.fromkeys(keys))


def _ratio_value(text: str) -> float:
    try:
        return parse_ratio(text)
    except ValueError as exc:
        raise InputError("ratio", text, str(exc)) from None


def conditions(spec: CocultureSpec) -> tuple[Condition, ...]:
    """The no-MSC control first, then each ratio without and (if the preset pre-licenses) with pre-licensing."""
    out = [Condition("no MSC", 0.0, False)]
    for prelicensed in (False, True) if spec.prelicensing else (False,):
        out += [Condition(label, r, prelicensed) for label, r in zip(spec.ratios, spec.msc_per_responder())]
    return tuple(out)


def _rows(spec: CocultureSpec, pset: ParameterSet, n: int, values: dict[str, float]) -> np.ndarray:
    """n parameter rows for the preset's well (its volume), with some values (internal units) replaced."""
    model = well_model()
    P = np.tile(model.parameter_vector(pset), (n, 1))
    k = model.param_index("V_site")
    P[:, k] = convert(spec.well.volume_ml, "mL", model.param_units[k])
    for name, v in values.items():
        P[:, model.param_index(name)] = v  # a name the well model does not use is a DataError
    return P


def _ifng(ng_per_ml) -> np.ndarray:
    model = well_model()
    return np.asarray([convert(v, "ng/mL", model.param_units[model.param_index("ifng_ext")]) for v in ng_per_ml])


def msc_alone(spec: CocultureSpec, msc_per_well, ifng_ng_per_ml, hours) -> np.ndarray:
    """MSCs alone in medium with IFN-gamma, one well per dose (and MSC count): the states at each of ``hours``
    (wells x hours x states). This is the pre-licensing step, and the IDO-induction assay."""
    model = well_model()
    doses = np.atleast_1d(np.asarray(ifng_ng_per_ml, dtype=float))
    msc = np.broadcast_to(np.asarray(msc_per_well, dtype=float), doses.shape)
    P = _rows(spec, well_parameters(spec), len(doses), NO_IMMUNE_CELLS)
    P[:, model.param_index("ifng_ext")] = _ifng(doses)
    x0 = model.initial_signals(P)
    x0[:, model.index("msc_target")] = msc
    t = np.unique(np.concatenate([[0.0], np.atleast_1d(np.asarray(hours, dtype=float))]))
    X = solve_batched(Problem(model, P, t, x0=x0), rtol=SOLVER_RTOL)
    return X[:, np.searchsorted(t, np.atleast_1d(hours)), :]


def msc_alone_readout(spec: CocultureSpec, readout: str, msc_per_well: float, ifng_ng_per_ml, hours) -> np.ndarray:
    """A state of MSC-alone wells after IFN-gamma exposure, for a series of doses (one duration) or of
    durations (one dose)."""
    if readout not in READOUT_UNITS or readout in ("inhibition", "inhibition_pulse", "m2_share"):
        raise InputError("readout", readout, "a mediator or 'lic_local' (MSC-alone wells have no responders)")
    doses, durations = np.atleast_1d(ifng_ng_per_ml), np.atleast_1d(hours)
    if doses.size > 1 and durations.size > 1:
        raise InputError("series", "doses and durations", "a series of IFN-gamma doses or of durations, not both")
    X = msc_alone(spec, msc_per_well, doses, durations)[..., well_model().index(readout)]
    return X[:, 0] if durations.size == 1 else X[0, :]


def run_coculture(spec: CocultureSpec) -> CocultureResult:
    """Simulate every well of the preset; MSC numbers are ratio x responders per well."""
    model = well_model()
    pset = well_parameters(spec)
    conds = conditions(spec)
    msc = np.array([c.msc_per_responder for c in conds]) * spec.well.responders_per_well
    P = _rows(spec, pset, len(conds), {})
    x0 = model.initial_signals(P)
    x0[:, model.index("msc_target")] = msc
    if spec.prelicensing is not None:
        pre = spec.prelicensing
        dose = [pre.ifng_ng_per_ml if c.prelicensed else 0.0 for c in conds]
        licensed = msc_alone(spec, msc, dose, [pre.hours])[:, 0, model.index("lic_local")]
        x0[:, model.index("lic_local")] = licensed  # the medium (and every mediator in it) is replaced
    t = np.linspace(0.0, spec.duration_days * 24.0, int(round(spec.duration_days * 24 * STEPS_PER_HOUR)) + 1)
    X = solve_batched(Problem(model, P, t, x0=x0), rtol=SOLVER_RTOL)
    return CocultureResult(spec, model, pset, conds, t, X)
