"""Automatic gates (debris, singlets, viability dye) and control-based positivity thresholds.

Each gate is a small frozen record that says where its limits came from (automatic or the lot record) and
returns a boolean mask; the functions that build them are pure, so a gate can be checked on known data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fcs import FcsData, asinh_transform, inverse_asinh
from .lot import Gates
from .settings import FlowSettings

ROBUST_SD_PER_MAD = 1.4826  # MAD of a normal distribution times this is its standard deviation


class Untrusted(Exception):
    """The data of a tube cannot support the analysis (too few events, constant values, no usable gate): its
    markers are reported as untrusted and the lot is not released, with this reason."""


@dataclass(frozen=True)
class ScatterGate:
    """Cells vs debris on FSC-A/SSC-A: keep lo <= value <= hi; saturated and FSC <= 0 events always go."""

    fsc: str
    ssc: str
    fsc_min: float
    fsc_max: float
    ssc_min: float
    ssc_max: float
    automatic: bool

    def mask(self, data: FcsData) -> np.ndarray:
        f, s = data.column(self.fsc), data.column(self.ssc)
        return (f > 0) & (f >= self.fsc_min) & (f <= self.fsc_max) & (s >= self.ssc_min) & (s <= self.ssc_max)


@dataclass(frozen=True)
class SingletGate:
    """Singlets: FSC-A/FSC-H ratio ('ratio') or FSC-W ('width') inside [low, high]; 'none' keeps all."""

    kind: str
    channels: tuple[str, ...]
    low: float
    high: float
    automatic: bool

    def values(self, data: FcsData) -> np.ndarray:
        if self.kind == "ratio":
            a, h = data.column(self.channels[0]), data.column(self.channels[1])
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(h > 0, a / h, np.inf)
        if self.kind == "width":
            return data.column(self.channels[0])
        return np.zeros(data.n_events)

    def mask(self, data: FcsData) -> np.ndarray:
        if self.kind == "none":
            return np.ones(data.n_events, dtype=bool)
        v = self.values(data)
        return (v >= self.low) & (v <= self.high)


@dataclass(frozen=True)
class ViabilityGate:
    """Viable cells: viability-dye signal (compensated) at or below the threshold."""

    channel: str
    threshold: float
    automatic: bool

    def mask(self, data: FcsData) -> np.ndarray:
        return data.column(self.channel) <= self.threshold


def _on_scale_max(data: FcsData, channel: str) -> float:
    """Largest on-scale value ($PnR - 1); events at or above it are saturated."""
    r = data.keyword(channel, "r")
    try:
        return float(r) - 1.0 if r is not None else np.inf
    except ValueError:
        return np.inf


def _smooth(hist: np.ndarray, sigma_bins: float) -> np.ndarray:
    if sigma_bins <= 0:
        return hist.astype(float)
    half = int(np.ceil(4 * sigma_bins))
    x = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (x / sigma_bins) ** 2)
    return np.convolve(hist.astype(float), kernel / kernel.sum(), mode="same")


def debris_cut(fsc: np.ndarray, settings: FlowSettings) -> float:
    """FSC-A value that separates debris from cells: the deepest valley left of the main (cell) peak of the
    smoothed log10(FSC-A) histogram, if it is clearly below both peaks; otherwise 0 (no debris cut)."""
    x = np.log10(fsc[fsc > 0])
    if x.size < 10:
        return 0.0
    hist, edges = np.histogram(x, bins=settings.scatter_bins)
    s = _smooth(hist, settings.scatter_smoothing_bins)
    peak = int(np.argmax(s))
    best, best_ratio = None, settings.scatter_max_valley_height
    for lp in range(peak):
        left_ok = lp == 0 or s[lp] >= s[lp - 1]
        if not (left_ok and s[lp] >= s[lp + 1] and s[lp] > 0):
            continue
        v = lp + int(np.argmin(s[lp:peak + 1]))
        ratio = s[v] / min(s[lp], s[peak])
        if v > lp and ratio < best_ratio:
            best, best_ratio = v, ratio
    if best is None:
        return 0.0
    return float(10 ** (0.5 * (edges[best] + edges[best + 1])))


def scatter_gate(data: FcsData, fsc: str, ssc: str, settings: FlowSettings, explicit: Gates) -> ScatterGate:
    """Debris gate: explicit limits from the lot where given, else the automatic FSC-A valley; always drops
    events saturated on FSC-A or SSC-A."""
    f = data.column(fsc)
    fsc_min = explicit.fsc_min if explicit.fsc_min is not None else debris_cut(f, settings)
    automatic = all(getattr(explicit, k) is None for k in ("fsc_min", "fsc_max", "ssc_min", "ssc_max"))
    fsc_hi = _on_scale_max(data, fsc)
    ssc_hi = _on_scale_max(data, ssc)
    return ScatterGate(
        fsc=fsc, ssc=ssc, fsc_min=float(fsc_min),
        fsc_max=float(explicit.fsc_max) if explicit.fsc_max is not None else float(np.nextafter(fsc_hi, -np.inf)),
        ssc_min=float(explicit.ssc_min) if explicit.ssc_min is not None else -np.inf,
        ssc_max=float(explicit.ssc_max) if explicit.ssc_max is not None else float(np.nextafter(ssc_hi, -np.inf)),
        automatic=automatic)


def singlet_gate(data: FcsData, keep: np.ndarray, area: str, height: str | None, width: str | None,
                 settings: FlowSettings, explicit: Gates) -> SingletGate:
    """Singlet gate on FSC-A/FSC-H (or FSC-W when there is no height channel): median +- k robust SD of the
    events kept so far, unless the lot gives singlet_min/singlet_max."""
    if height is not None:
        gate = SingletGate("ratio", (area, height), -np.inf, np.inf, True)
    elif width is not None:
        gate = SingletGate("width", (width,), -np.inf, np.inf, True)
    else:
        return SingletGate("none", (), -np.inf, np.inf, True)
    v = gate.values(data)[keep]
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise Untrusted(f"singlet gate ({data.path.name}): no event inside the scatter gate has a positive "
                        f"{'/'.join(gate.channels)}")
    med = float(np.median(v))
    sd = ROBUST_SD_PER_MAD * float(np.median(np.abs(v - med)))
    low = explicit.singlet_min if explicit.singlet_min is not None else med - settings.singlet_k_mad * sd
    high = explicit.singlet_max if explicit.singlet_max is not None else med + settings.singlet_k_mad * sd
    return SingletGate(gate.kind, gate.channels, float(low), float(high),
                       explicit.singlet_min is None or explicit.singlet_max is None)


def viability_threshold(values: np.ndarray, settings: FlowSettings) -> float:
    """Upper edge of the live (dye-dim) peak: its mode + k x SD, the SD taken from the peak's lower half,
    where dead (dye-bright) cells do not fall. Computed on the asinh scale, returned in linear units."""
    c = settings.asinh_cofactor
    t = asinh_transform(values, c)
    hist, edges = np.histogram(t, bins=settings.scatter_bins)
    s = _smooth(hist, settings.scatter_smoothing_bins)
    i = int(np.argmax(s))
    mode = 0.5 * (edges[i] + edges[i + 1])
    lower = t[t <= mode]
    sd = float(np.sqrt(np.mean((lower - mode) ** 2))) if lower.size else 0.0
    return float(inverse_asinh(mode + settings.viability_k_sd * sd, c))


def viability_gate(data: FcsData, keep: np.ndarray, channel: str, settings: FlowSettings,
                   explicit: Gates) -> ViabilityGate:
    if explicit.viability_max is not None:
        return ViabilityGate(channel, float(explicit.viability_max), False)
    return ViabilityGate(channel, viability_threshold(data.column(channel)[keep], settings), True)


def control_threshold(values: np.ndarray, fraction_above: float) -> float:
    """The value that leaves at most ``fraction_above`` of the control's events above it."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n_above = int(np.floor(fraction_above * v.size))
    return float(v[v.size - n_above - 1])


def percent_positive(values: np.ndarray, threshold: float) -> float:
    """% of events strictly above the threshold."""
    values = np.asarray(values)
    return 100.0 * float(np.count_nonzero(values > threshold)) / values.size
