"""Synthetic MSC flow tubes with a known ground truth, written as FCS 3.1 with FlowIO.

No package reachable here ships MSC flow data (CD73/CD90/CD105 with isotype controls), so tests and
examples simulate them: debris, doublets, dead cells (viability-dye bright, with more non-specific
binding), spillover between colours (stored as $SPILLOVER), and each marker's true positive fraction.
The numbers below shape a plausible acquisition; they are fixtures, not biology parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import flowio
import numpy as np

SCATTER = ("FSC-A", "FSC-H", "SSC-A")
VIABILITY_CHANNEL = "V450-A"
#: Spillover of each fluorochrome (row) into each detector (column) of the synthetic cytometer.
SPILL_CHANNELS = ("FITC-A", "PE-A", "PerCP-Cy5-5-A", "APC-A", VIABILITY_CHANNEL)
SPILL_MATRIX = np.array([
    [1.00, 0.20, 0.03, 0.00, 0.00],
    [0.01, 1.00, 0.12, 0.00, 0.00],
    [0.00, 0.00, 1.00, 0.05, 0.00],
    [0.00, 0.00, 0.02, 1.00, 0.00],
    [0.02, 0.00, 0.00, 0.00, 1.00],
])
#: The two-tube ISCT panel of the examples: identity markers (+ HLA-DR) and haematopoietic markers.
IDENTITY_PANEL = {"FITC-A": "CD90", "PE-A": "HLA-DR", "PerCP-Cy5-5-A": "CD105", "APC-A": "CD73"}
NEGATIVE_PANEL = {"FITC-A": "CD45", "PE-A": "CD34", "PerCP-Cy5-5-A": "CD19", "APC-A": "CD14"}
PASSING_FRACTIONS = {"CD90": 0.99, "CD105": 0.985, "CD73": 0.995, "HLA-DR": 0.003,
                     "CD45": 0.002, "CD34": 0.004, "CD19": 0.001, "CD14": 0.003}


@dataclass(frozen=True)
class Acquisition:
    """How the synthetic events are drawn (medians in linear units, spreads as ln-SD)."""

    n_events: int = 3000
    debris_fraction: float = 0.08
    doublet_fraction: float = 0.05
    dead_fraction: float = 0.06
    negative_median: float = 150.0
    positive_median: float = 2.0e4
    spread: float = 0.5
    dead_background_factor: float = 6.0
    noise_sd: float = 30.0
    voltages: dict[str, int] = field(default_factory=lambda: {"FITC-A": 480, "PE-A": 450, "PerCP-Cy5-5-A": 600,
                                                               "APC-A": 620, VIABILITY_CHANNEL: 400})
    cytometer: str = "mscsim synthetic 5-colour"


def _events(panel: dict[str, tuple[str, float]], acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    n = acq.n_events
    kind = rng.choice(3, size=n, p=[acq.debris_fraction, acq.doublet_fraction,
                                    1 - acq.debris_fraction - acq.doublet_fraction])
    debris, doublet = kind == 0, kind == 1
    dead = (~debris) & (rng.random(n) < acq.dead_fraction)
    fsc_a = rng.lognormal(np.log(1.0e5), 0.18, n)
    fsc_a[dead] *= 0.75
    fsc_a[debris] = rng.lognormal(np.log(1.2e4), 0.35, debris.sum())
    ratio = rng.normal(1.15, 0.03, n)
    fsc_h = fsc_a / ratio
    fsc_a[doublet] *= 1.9
    fsc_h[doublet] *= 1.05
    ssc_a = rng.lognormal(np.log(6.0e4), 0.25, n)
    ssc_a[debris] = rng.lognormal(np.log(8.0e3), 0.5, debris.sum())
    cells = 2 - doublet.astype(int)  # a doublet carries two cells' fluorescence

    def background() -> np.ndarray:
        b = rng.lognormal(np.log(acq.negative_median), acq.spread, n)
        b[dead] *= acq.dead_background_factor
        b[debris] *= 0.3
        return b

    true = np.zeros((n, len(SPILL_CHANNELS)))
    for j, ch in enumerate(SPILL_CHANNELS):
        if ch == VIABILITY_CHANNEL:
            true[:, j] = rng.lognormal(np.log(200.0), 0.4, n)
            true[dead, j] = rng.lognormal(np.log(2.0e4), 0.4, dead.sum())
            continue
        if ch not in panel:
            true[:, j] = background()
            continue
        positive = (~debris) & (rng.random(n) < panel[ch][1])
        signal = background() * cells
        signal[positive] += rng.lognormal(np.log(acq.positive_median), acq.spread, positive.sum()) * cells[positive]
        true[:, j] = signal
    observed = true @ SPILL_MATRIX + rng.normal(0.0, acq.noise_sd, true.shape)
    scatter = np.clip(np.column_stack([fsc_a, fsc_h, ssc_a]), 0, 262143)
    return np.column_stack([scatter, observed]).astype(np.float32)


def write_tube(path: str | Path, panel: dict[str, tuple[str, float]], seed: int,
               acquisition: Acquisition | None = None, spillover: bool = True) -> Path:
    """Write one tube: ``panel`` maps channel -> (label for $PnS, true positive fraction of cells)."""
    acq = acquisition or Acquisition()
    rng = np.random.default_rng(seed)
    events = _events(panel, acq, rng)
    names = [*SCATTER, *SPILL_CHANNELS]
    labels = ["", "", "", *[panel[c][0] if c in panel else "" for c in SPILL_CHANNELS[:-1]], "DAPI"]
    meta = {"cyt": acq.cytometer, "src": f"mscsim synthetic seed {seed}"}
    for i, ch in enumerate(names, start=1):
        if ch in acq.voltages:
            meta[f"p{i}v"] = str(acq.voltages[ch])
    if spillover:
        values = ",".join(f"{v:g}" for v in SPILL_MATRIX.ravel())
        meta["spillover"] = f"{len(SPILL_CHANNELS)},{','.join(SPILL_CHANNELS)},{values}"
    path = Path(path)
    with open(path, "wb") as fh:
        flowio.create_fcs(fh, events.ravel().tolist(), names, opt_channel_names=labels, metadata_dict=meta)
    return path


def write_lot_tubes(folder: str | Path, prefix: str, fractions: dict[str, float] | None = None, seed: int = 0,
                    acquisition: Acquisition | None = None, spillover: bool = True) -> dict:
    """Write the two-tube ISCT panel and its isotype controls; return the lot's ``flow`` section
    (file names relative to ``folder``). ``fractions`` overrides the passing lot's true fractions."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {**PASSING_FRACTIONS, **(fractions or {})}
    tubes = []
    for k, (tube, panel) in enumerate((("identity", IDENTITY_PANEL), ("negative", NEGATIVE_PANEL))):
        stained = {ch: (m, truth[m]) for ch, m in panel.items()}
        isotype = {ch: (f"IgG1 isotype ({m})", 0.0) for ch, m in panel.items()}
        write_tube(folder / f"{prefix}_{tube}.fcs", stained, seed * 10 + 2 * k, acquisition, spillover)
        write_tube(folder / f"{prefix}_{tube}_isotype.fcs", isotype, seed * 10 + 2 * k + 1, acquisition, spillover)
        tubes.append({"name": tube, "file": f"{prefix}_{tube}.fcs", "control": f"{prefix}_{tube}_isotype.fcs",
                      "control_type": "isotype", "viability_channel": VIABILITY_CHANNEL, "panel": dict(panel)})
    return {"tubes": tubes}


def rewrite_fcs(source: str | Path, target: str | Path, keywords: dict[str, str | None] | None = None,
                data: bytes | None = None) -> Path:
    """Copy an FCS file with some TEXT keywords replaced (``None`` removes one; names without '$', any case) and
    optionally another DATA segment, the offsets in the HEADER and TEXT recomputed so the file stays well formed.

    For tests of how the QC treats a header that disagrees with its data (a hand-written FCS writer, because
    FlowIO's ``create_fcs`` sets $TOT, $PAR, $DATATYPE ... itself, which are exactly what such tests change)."""
    raw = Path(source).read_bytes()
    t0, t1, d0, d1 = (int(raw[a:a + 8]) for a in (10, 18, 26, 34))
    text = raw[t0:t1 + 1].decode("latin-1")
    delim = text[0]
    parts = text[1:].split(delim)
    if parts and parts[-1] == "":
        parts = parts[:-1]
    pairs = dict(zip(parts[0::2], parts[1::2]))
    by_lower = {k.lstrip("$").lower(): k for k in pairs}
    for key, value in (keywords or {}).items():
        name = by_lower.get(key.lower(), ("$" + key.upper()) if raw[3:6] != b"2.0" or key.lower() in _FCS2_REQUIRED
                            else key)
        if value is None:
            pairs.pop(name, None)
        else:
            pairs[name] = str(value)
    body = raw[d0:d1 + 1] if data is None else data
    for k in ("begindata", "enddata", "beginstext", "endstext", "beginanalysis", "endanalysis"):
        pairs.setdefault(by_lower.get(k, "$" + k.upper()), "0")
    # offsets are written as fixed-width numbers so the TEXT length does not depend on them
    start = 58
    names = {k.lstrip("$").lower(): k for k in pairs}

    def serialise(begin: int, end: int) -> bytes:
        pairs[names["begindata"]] = f"{begin:020d}"
        pairs[names["enddata"]] = f"{end:020d}"
        return (delim + delim.join(f"{k}{delim}{v}" for k, v in pairs.items()) + delim).encode("latin-1")

    size = len(serialise(0, 0))
    d_start = start + size
    d_end = d_start + len(body) - 1
    text_bytes = serialise(d_start, d_end)
    header = raw[:10] + b"".join(f"{v:>8d}".encode() for v in (start, start + size - 1, d_start, d_end, 0, 0))
    Path(target).write_bytes(header + text_bytes + body)
    return Path(target)


_FCS2_REQUIRED = {"tot", "par", "datatype", "byteord", "mode", "nextdata"}
