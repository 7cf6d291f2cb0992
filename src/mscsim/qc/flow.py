"""Flow analysis of a lot: each tube read, compensated, gated (debris, singlets, viability dye) and each
marker's % positive of viable singlets taken above the threshold set by its matched control."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .fcs import FcsData, Spillover, compensate, read_fcs
from .gating import (ScatterGate, SingletGate, Untrusted, ViabilityGate, control_threshold, percent_positive,
                     scatter_gate, singlet_gate, viability_gate)
from .lot import Compensation, Flow, Tube
from .settings import FlowSettings, Vocabulary, flow_settings, vocabulary


@dataclass(frozen=True)
class Gated:
    """One file after gating: the compensated data and the masks of each successive gate."""

    data: FcsData
    scatter: ScatterGate
    singlet: SingletGate
    viability: ViabilityGate | None
    in_scatter: np.ndarray
    in_singlet: np.ndarray
    in_viable: np.ndarray

    def counts(self) -> dict[str, int]:
        return {"events": self.data.n_events, "scatter": int(self.in_scatter.sum()),
                "singlets": int(self.in_singlet.sum()), "viable_singlets": int(self.in_viable.sum())}


@dataclass(frozen=True)
class ChannelResult:
    """% positive in one channel of one tube, and the threshold with where it came from (None, None when the
    tube's analysis cannot be trusted)."""

    tube: str
    channel: str
    markers: tuple[str, ...]
    percent_positive: float | None
    threshold: float | None
    threshold_source: str
    control_file: Path | None
    control_events: int | None
    stained_values: np.ndarray = field(repr=False, compare=False)
    control_values: np.ndarray | None = field(repr=False, compare=False)

    @property
    def cocktail(self) -> bool:
        """Several markers in one colour: the % is an upper bound for each of them."""
        return len(self.markers) > 1


@dataclass(frozen=True)
class TubeResult:
    name: str
    file: Path
    gated: Gated | None
    channels: tuple[ChannelResult, ...]
    problem: str | None = None  # why the tube's analysis cannot be trusted (the lot is then not released)

    @property
    def viable_fraction(self) -> float | None:
        """Dye-negative share of singlets, when the tube has a viability dye."""
        if self.gated is None or self.gated.viability is None:
            return None
        n = int(self.gated.in_singlet.sum())
        return float(self.gated.in_viable.sum()) / n if n else None


@dataclass(frozen=True)
class FlowResult:
    tubes: tuple[TubeResult, ...]

    def measurements(self, marker: str) -> list[ChannelResult]:
        """Every channel result that measured ``marker`` (canonical name), across tubes."""
        return [c for t in self.tubes for c in t.channels if marker in c.markers]


def _find(data: FcsData, given: str | None, role: str, vocab: Vocabulary, required: bool) -> str | None:
    """A scatter channel: the lot's name for it, else the first usual name present in the file."""
    if given is not None:
        data.index(given)
        return given
    for name in vocab.channels.get(role, ()):
        if data.channels.count(name) == 1:
            return name
    if required:
        raise InputError(f"flow.scatter.{role}", None, f"a {role} channel; none of the usual names "
                         f"{list(vocab.channels.get(role, ()))} is in the file, whose channels are "
                         f"{list(data.channels)}: name it in the lot under flow.scatter", file=str(data.path))
    return None


def gate_file(data: FcsData, flow: Flow, viability_channel: str | None, settings: FlowSettings,
              vocab: Vocabulary) -> Gated:
    """Scatter (debris) gate, then singlets, then viability dye when the tube has one."""
    sc = flow.scatter
    fsc = _find(data, sc.fsc_area, "fsc_area", vocab, True)
    ssc = _find(data, sc.ssc_area, "ssc_area", vocab, True)
    height = _find(data, sc.fsc_height, "fsc_height", vocab, False)
    width = None if height else _find(data, sc.fsc_width, "fsc_width", vocab, False)
    sg = scatter_gate(data, fsc, ssc, settings, flow.gates)
    in_scatter = sg.mask(data)
    sing = singlet_gate(data, in_scatter, fsc, height, width, settings, flow.gates)
    in_singlet = in_scatter & sing.mask(data)
    via, in_viable = None, in_singlet
    if viability_channel is not None and data.has(viability_channel):
        via = viability_gate(data, in_singlet, viability_channel, settings, flow.gates)
        in_viable = in_singlet & via.mask(data)
    return Gated(data, sg, sing, via, in_scatter, in_singlet, in_viable)


def _spillover(flow: Flow, data: FcsData) -> tuple[Spillover | None, str | None]:
    """The matrix a tube (and its controls) are compensated with, and a word on where it came from."""
    if flow.compensation == "none":
        return None, None
    if isinstance(flow.compensation, Compensation):
        c = flow.compensation
        return Spillover(tuple(c.channels), np.array(c.matrix, dtype=float), "lot record"), "lot record"
    spill = data.spillover()
    if spill is None:
        raise InputError("flow.compensation", "file", f"a spillover matrix in the file ($SPILLOVER, SPILL or $COMP), "
                         f"but {data.path.name} has none: give the matrix in the lot (flow.compensation: {{channels, "
                         "matrix}) or write 'compensation: none' if the panel needs none", file=str(data.path))
    return spill, f"{data.path.name} ${spill.keyword.upper()}"


def check_control(tube: FcsData, control: FcsData, channel: str, markers: list[str], vocab: Vocabulary) -> None:
    """A control matches its tube: same cytometer, same channel at the same voltage and gain, and not
    itself stained for the marker it is the control of."""
    def mismatch(what: str, got: object, expected: object) -> InputError:
        return InputError(f"control for channel {channel}", got,
                          f"a control acquired like its tube {tube.path.name} ({what} there: {expected})",
                          file=str(control.path))

    if not control.has(channel):
        raise InputError(f"control for channel {channel}", channel,
                         f"a control with the tube's channel; the control's channels are {list(control.channels)}",
                         file=str(control.path))
    cyt_t, cyt_c = tube.text.get("cyt", "").strip(), control.text.get("cyt", "").strip()
    if cyt_t and cyt_c and cyt_t != cyt_c:
        raise mismatch("cytometer $CYT", cyt_c, cyt_t)
    for letter, what in (("v", "detector voltage $PnV"), ("g", "gain $PnG")):
        a, b = tube.keyword(channel, letter), control.keyword(channel, letter)
        if a is not None and b is not None and _num(a) != _num(b):
            raise mismatch(f"{channel} {what}", b, a)
    label = vocab.canonical_marker(control.label(channel)) if control.label(channel) else ""
    if label and label in markers:
        raise InputError(f"control for channel {channel}", control.label(channel),
                         f"an unstained, isotype or FMO control; this file is stained for {label} in {channel}, "
                         "like the tube itself", file=str(control.path))


def _num(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _enough(g: Gated, settings: FlowSettings, what: str) -> None:
    n = int(g.in_viable.sum())
    if n < settings.min_gated_events:
        raise Untrusted(f"{what} ({g.data.path.name}): {n} events after gating, fewer than the "
                        f"{settings.min_gated_events} a threshold needs (counts: {g.counts()})")


MIN_DISTINCT_VALUES = 5  # fewer distinct values in a channel than this is a constant or saturated signal, not data


def _varied(data: FcsData, channels, what: str) -> None:
    """Each channel the analysis reads must vary across the events: a channel whose events (nearly) all hold the
    same value cannot be gated or thresholded."""
    for ch in dict.fromkeys(c for c in channels if c is not None):
        distinct = np.unique(data.column(ch)).size
        if distinct < MIN_DISTINCT_VALUES:
            raise Untrusted(f"{what} ({data.path.name}): channel {ch} holds only {distinct} distinct value(s) over "
                            f"{data.n_events} events (constant or saturated data)")


def analyze_tube(tube: Tube, index: int, flow: Flow, settings: FlowSettings, vocab: Vocabulary,
                 cache: dict[Path, FcsData]) -> TubeResult:
    """Gate one tube and each of its controls, set each channel's threshold and count the positives. Data that
    cannot support that (too few events, constant channels) gives a TubeResult with the ``problem`` named."""
    def read(path: Path) -> FcsData:
        if path not in cache:
            cache[path] = read_fcs(path)
        return cache[path]

    name = tube.name or tube.file.stem
    raw = read(tube.file)
    for ch in [*tube.panel, *([tube.viability_channel] if tube.viability_channel else [])]:
        if not raw.has(ch):
            raise InputError(f"flow.tubes[{index}].panel", ch, f"a channel of {raw.path.name}; its channels are "
                             f"{list(raw.channels)} (labels {list(raw.labels)})", file=str(raw.path))
    spill, origin = _spillover(flow, raw)
    controls_of = {ch: tube.controls.get(ch, tube.control) for ch in tube.panel if ch not in tube.thresholds}
    for ch, path in controls_of.items():  # every control read and matched before any analysis
        check_control(raw, read(path), ch, [vocab.canonical_marker(m) for m in tube.markers_of(ch)], vocab)
    gated = None
    try:
        gated = gate_file(compensate(raw, spill, origin), flow, tube.viability_channel, settings, vocab)
        _varied(gated.data, [gated.scatter.fsc, gated.scatter.ssc, *gated.singlet.channels, *tube.panel,
                             tube.viability_channel], f"flow.tubes[{index}] ({name})")
        _enough(gated, settings, f"flow.tubes[{index}] ({name})")
        controls: dict[Path, Gated] = {}
        results = []
        for ch in tube.panel:
            markers = [vocab.canonical_marker(m) for m in tube.markers_of(ch)]
            stained = gated.data.column(ch)[gated.in_viable]
            path = controls_of.get(ch)
            if path is None:
                threshold, source, ctrl_vals = float(tube.thresholds[ch]), "lot record", None
            else:
                if path not in controls:
                    cg = gate_file(compensate(read(path), spill, origin), flow, tube.viability_channel, settings,
                                   vocab)
                    _varied(cg.data, [cg.scatter.fsc, cg.scatter.ssc, *tube.panel],
                            f"flow.tubes[{index}] control")
                    _enough(cg, settings, f"flow.tubes[{index}] control")
                    controls[path] = cg
                ctrl_vals = controls[path].data.column(ch)[controls[path].in_viable]
                threshold = control_threshold(ctrl_vals, settings.control_fraction_above)
                source = f"{tube.control_type} control"
            pct = percent_positive(stained, threshold)
            if not (np.isfinite(threshold) and np.isfinite(pct)):
                raise Untrusted(f"flow.tubes[{index}] ({name}): channel {ch} gives threshold {threshold} and "
                                f"{pct}% positive")
            results.append(ChannelResult(
                tube=name, channel=ch, markers=tuple(markers), percent_positive=pct,
                threshold=threshold, threshold_source=source, control_file=path,
                control_events=None if ctrl_vals is None else int(ctrl_vals.size),
                stained_values=stained, control_values=ctrl_vals))
    except Untrusted as exc:
        empty = np.empty(0)
        results = [ChannelResult(tube=name, channel=ch, markers=tuple(vocab.canonical_marker(m)
                                                                      for m in tube.markers_of(ch)),
                                 percent_positive=None, threshold=None, threshold_source="(not set)",
                                 control_file=controls_of.get(ch), control_events=None, stained_values=empty,
                                 control_values=None) for ch in tube.panel]
        return TubeResult(name=name, file=tube.file, gated=gated, channels=tuple(results), problem=str(exc))
    return TubeResult(name=name, file=tube.file, gated=gated, channels=tuple(results))


def analyze_flow(flow: Flow, settings: FlowSettings | None = None) -> FlowResult:
    """Analyse every tube of a lot's flow section."""
    settings = settings or flow_settings()
    vocab = vocabulary()
    cache: dict[Path, FcsData] = {}
    return FlowResult(tuple(analyze_tube(t, i, flow, settings, vocab, cache) for i, t in enumerate(flow.tubes)))
