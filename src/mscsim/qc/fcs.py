"""Reading FCS 2.0/3.0/3.1 files with FlowIO; compensation and the display transform with NumPy.

Why not FlowKit: on this Python 3.11 stack `pip install flowkit` (1.3.2) resolves, but it pins pandas<3
(it would downgrade the pandas 3 that mscsim runs on) and pulls bokeh, pyarrow, lxml, psutil, anytree and
the compiled FlowUtils - a heavy stack for the three things mscsim needs: read a file, apply its spillover
matrix, and transform for display. FlowIO (a FlowKit dependency, already an mscsim dependency) reads the
files; compensation is one linear solve and asinh is one NumPy call. No FCS parsing is written here.
"""

from __future__ import annotations

import re
import warnings as pywarnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import flowio
import numpy as np

from ..errors import InputError

SPILLOVER_KEYWORDS = ("spillover", "spill", "comp")  # FlowIO lower-cases keywords and drops the '$'
SUPPORTED_VERSIONS = ("2.0", "3.0", "3.1")


@dataclass(frozen=True)
class Spillover:
    """A spillover matrix: row i is the light of fluorochrome i seen in each detector (columns)."""

    channels: tuple[str, ...]
    matrix: np.ndarray
    keyword: str


@dataclass(frozen=True)
class FcsData:
    """One FCS data set: events (n_events x n_channels, FlowIO-scaled for gain/log) and its keywords."""

    path: Path
    version: str
    channels: tuple[str, ...]
    labels: tuple[str, ...]
    events: np.ndarray
    text: Mapping[str, str]
    compensated_with: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def n_events(self) -> int:
        return int(self.events.shape[0])

    def has(self, channel: str) -> bool:
        return channel in self.channels

    def index(self, channel: str) -> int:
        """Column of a channel ($PnN); a missing or duplicated name is an error naming the file."""
        hits = [i for i, c in enumerate(self.channels) if c == channel]
        if len(hits) != 1:
            problem = "is not" if not hits else "appears more than once"
            raise InputError("channel", channel, f"a channel of this file (it {problem} in it); the file's "
                             f"channels are {list(self.channels)}", file=str(self.path))
        return hits[0]

    def column(self, channel: str) -> np.ndarray:
        return self.events[:, self.index(channel)]

    def keyword(self, channel: str, letter: str) -> str | None:
        """A per-channel keyword such as $PnV (voltage) or $PnR (range), or None when absent."""
        value = self.text.get(f"p{self.index(channel) + 1}{letter.lower()}")
        return None if value is None else str(value).strip()

    def label(self, channel: str) -> str:
        return self.labels[self.index(channel)]

    def spillover(self) -> Spillover | None:
        """The file's own spillover matrix, parsed when asked for (a malformed one is an error only then)."""
        return spillover_of(self)


def _unreadable(path: Path, problem: str) -> InputError:
    return InputError("FCS file", str(path), f"a complete FCS 2.0, 3.0 or 3.1 file; {problem}", file=str(path))


def _open(path: Path, **options) -> flowio.FlowData:
    return flowio.FlowData(str(path), **options)


def read_fcs(path: str | Path) -> FcsData:
    """Read one FCS file (FCS 2.0, 3.0 or 3.1); a truncated, corrupt or multi-data-set file is an InputError.

    Files whose DATA end offset is off by one byte (a known instrument quirk) are read with FlowIO's
    ``ignore_offset_error`` and the fact is kept in ``warnings``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("FCS file", str(path), "an existing FCS file", file=str(path))
    warnings: list[str] = []
    # FlowIO and NumPy warn on stderr about damaged files (an unknown byte order, NaN in a cast); the checks in
    # check_header turn each such problem into a clear error, so their warnings would only clutter the terminal
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore", RuntimeWarning)
        pywarnings.simplefilter("ignore", UserWarning)
        return _read_fcs(path, warnings)


def _read_fcs(path: Path, warnings: list[str]) -> FcsData:
    try:
        try:
            fd = _open(path)
        except flowio.exceptions.FCSParsingError as exc:
            if "off by 1" not in str(exc):
                raise
            fd = _open(path, ignore_offset_error=True)
            warnings.append("DATA end offset off by one byte (instrument quirk); read with ignore_offset_error")
        events = np.asarray(fd.as_array(preprocess=True), dtype=np.float64)
    except flowio.exceptions.MultipleDataSetsError:
        raise _unreadable(path, "this file holds several data sets; export each tube as its own file") from None
    except flowio.exceptions.FCSParsingError as exc:
        msg = str(exc)
        if "greater than file size" in msg:
            msg = (f"it is truncated: its header declares more data than the file's {path.stat().st_size} "
                   "bytes hold")
        raise _unreadable(path, msg) from None
    except Exception as exc:  # noqa: BLE001 - FlowIO raises bare ValueError/KeyError/struct.error on junk
        raise _unreadable(path, f"it could not be parsed ({type(exc).__name__}: {exc})") from None
    if fd.version not in SUPPORTED_VERSIONS:
        raise _unreadable(path, f"its header says FCS version {fd.version!r}")
    if events.ndim != 2 or events.shape[0] == 0:
        raise _unreadable(path, "it holds no events")
    text = MappingProxyType({str(k).lower(): str(v) for k, v in fd.text.items()})
    check_header(path, text, fd, events)
    return FcsData(path=path, version=fd.version, channels=tuple(fd.pnn_labels),
                   labels=tuple(s or "" for s in fd.pns_labels), events=events, text=text, warnings=tuple(warnings))


BYTE_ORDERS = ("1,2,3,4", "4,3,2,1", "1,2", "2,1")
BITS = {"F": (32,), "D": (64,), "I": (8, 16, 32)}
# Real instruments store values beyond $PnR (compensated or baseline-restored floats reach a few hundred times it);
# a value a million times beyond it is a float read with the wrong byte order or data type, not a measurement.
MAX_RANGE_EXCESS = 1e6


def _int_keyword(path: Path, text, key: str, low: int) -> int:
    raw = text.get(key)
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        raise _bad_keyword(path, key, raw, f"an integer >= {low}") from None
    if value < low:
        raise _bad_keyword(path, key, raw, f"an integer >= {low}")
    return value


def _bad_keyword(path: Path, key: str, value, allowed: str) -> InputError:
    return InputError(f"${key.upper()}", value, f"{allowed}; the header does not describe the data, so the file "
                      "cannot be trusted", file=str(path))


# The TEXT keywords each supported FCS version requires (Seamer et al. 1997, FCS 3.0; Spidlen et al. 2010, FCS 3.1);
# the per-channel $PnB/$PnR/$PnN are checked below with the channels.
_REQUIRED_30 = ("beginanalysis", "begindata", "beginstext", "byteord", "datatype", "endanalysis", "enddata",
                "endstext", "mode", "nextdata", "par", "tot")
REQUIRED_KEYWORDS = {"2.0": ("byteord", "datatype", "mode", "nextdata", "par", "tot"), "3.0": _REQUIRED_30,
                     "3.1": _REQUIRED_30}


def check_header(path: Path, text, fd, events: np.ndarray) -> None:
    """The TEXT segment must describe the DATA segment FlowIO read: $MODE list, a $DATATYPE FlowIO reads as the
    header says, a known $BYTEORD, $PAR and $TOT equal to the data's channels and events, $PnB matching the data
    type, and every value finite and within a million times its $PnR. FlowIO itself takes the event count from
    the data's length and uses the native byte order for an unknown $BYTEORD, so a header that disagrees with its
    data would otherwise be read as something else, and analysed."""
    missing = [k for k in REQUIRED_KEYWORDS.get(fd.version, ()) if k not in text]
    if missing:
        raise InputError(f"${missing[0].upper()}", "missing", f"the keywords FCS {fd.version} requires in TEXT "
                         f"({', '.join('$' + k.upper() for k in missing)} absent: a TEXT offset in the HEADER that "
                         "does not point at the segment's start drops the first keywords); the file cannot be "
                         "trusted", file=str(path))
    mode = str(text.get("mode", "")).strip().upper()
    if mode != "L":
        raise _bad_keyword(path, "mode", text.get("mode"), "'L' (list mode; histogram modes are not event data)")
    dtype = str(text.get("datatype", "")).strip().upper()
    if dtype not in BITS:
        raise _bad_keyword(path, "datatype", text.get("datatype"), "I, F or D (integer, float or double events)")
    order = str(text.get("byteord", "")).replace(" ", "")
    if order not in BYTE_ORDERS:
        raise _bad_keyword(path, "byteord", text.get("byteord"), f"one of {list(BYTE_ORDERS)}")
    par = _int_keyword(path, text, "par", 1)
    if par != events.shape[1] or par != len(fd.pnn_labels):
        raise _bad_keyword(path, "par", text.get("par"), f"the number of channels ($PnN: {len(fd.pnn_labels)}; "
                           f"columns read: {events.shape[1]})")
    if sorted(fd.channels) != list(range(1, par + 1)):
        raise _bad_keyword(path, "par", par, f"channels $P1N..$P{par}N, each once (found {sorted(fd.channels)})")
    tot = _int_keyword(path, text, "tot", 1)
    if tot != events.shape[0]:
        raise _bad_keyword(path, "tot", text.get("tot"), f"the number of events in the DATA segment "
                           f"({events.shape[0]})")
    widths = []
    for i in range(1, par + 1):
        raw = text.get(f"p{i}b")
        try:
            b = int(str(raw).strip())
        except (TypeError, ValueError):
            raise _bad_keyword(path, f"p{i}b", raw, f"{' or '.join(map(str, BITS[dtype]))} bits for "
                               f"$DATATYPE {dtype}") from None
        if b not in BITS[dtype]:
            raise _bad_keyword(path, f"p{i}b", raw, f"{' or '.join(map(str, BITS[dtype]))} bits for $DATATYPE {dtype}")
        widths.append(b)
    start, stop = fd.header["data_start"], fd.header["data_stop"]
    if fd.version != "2.0" and start == 0 and "begindata" in text:
        start, stop = int(text["begindata"]), int(text["enddata"])
    t0, t1 = fd.header["text_start"], fd.header["text_stop"]
    if not (58 <= t0 <= t1 and (t1 < start or stop < t0)):
        raise InputError("HEADER", f"TEXT bytes {t0}-{t1}, DATA bytes {start}-{stop}", "TEXT and DATA segments "
                         "after the 58-byte HEADER that do not overlap; the offsets do not describe the file, so it "
                         "cannot be trusted", file=str(path))
    expected = tot * sum(widths) // 8
    if stop - start + 1 not in (expected, expected + 1):  # +1: the known off-by-one quirk, read with a warning
        raise _bad_keyword(path, "tot", text.get("tot"), f"$TOT x $PnB = {expected} bytes of DATA; the data offsets "
                           f"give {stop - start + 1}")
    ranges = []
    for i in range(1, par + 1):
        try:
            ranges.append(float(str(text.get(f"p{i}r")).strip()))
        except ValueError:
            raise _bad_keyword(path, f"p{i}r", text.get(f"p{i}r"), "the channel's range, a number > 0") from None
    pnr = np.array(ranges)
    if not (np.isfinite(pnr).all() and (pnr > 0).all()):
        k = int(np.nonzero(~(np.isfinite(pnr) & (pnr > 0)))[0][0])
        raise _bad_keyword(path, f"p{k + 1}r", text.get(f"p{k + 1}r"), "the channel's range, a finite number > 0")
    bad = ~np.isfinite(events)
    if bad.any():
        ch = fd.pnn_labels[int(np.nonzero(bad.any(axis=0))[0][0])]
        raise InputError(f"events in channel {ch}", f"{int(bad.sum())} NaN or infinite value(s)",
                         "finite event values (a wrong $BYTEORD or $DATATYPE, or a damaged file); the analysis "
                         "cannot be trusted", file=str(path))
    excess = np.abs(events).max(axis=0) / pnr
    if (excess > MAX_RANGE_EXCESS).any():
        k = int(np.argmax(excess))
        raise InputError(f"events in channel {fd.pnn_labels[k]}", float(np.abs(events[:, k]).max()),
                         f"values within {MAX_RANGE_EXCESS:g} x its range $P{k + 1}R = {pnr[k]:g} (a wrong $BYTEORD or "
                         "$DATATYPE?); the analysis cannot be trusted", file=str(path))


def _channel_name(token: str, data: FcsData, keyword: str) -> str:
    """Map a name in a spillover keyword to a $PnN: by $PnN, by $PnS, or by 1-based channel number."""
    if token in data.channels:
        return token
    if token in data.labels and data.labels.count(token) == 1:
        return data.channels[data.labels.index(token)]
    if token.isdigit() and 1 <= int(token) <= len(data.channels):
        return data.channels[int(token) - 1]
    raise InputError(f"${keyword.upper()}", token, f"a channel of the file; channels are {list(data.channels)}",
                     file=str(data.path))


def spillover_of(data: FcsData) -> Spillover | None:
    """The file's spillover matrix from $SPILLOVER, SPILL or $COMP ('n,names...,values...'), or None."""
    for key in SPILLOVER_KEYWORDS:
        raw = data.text.get(key)
        if raw is None or not raw.strip():
            continue
        tokens = [t.strip() for t in re.split(r",", raw.strip().strip(","))]
        try:
            n = int(tokens[0]) if tokens[0].lstrip("+-").isdigit() else int(float(tokens[0]))
            if str(n) != tokens[0].lstrip("+") and float(tokens[0]) != n:
                raise ValueError(tokens[0])
        except (ValueError, OverflowError):
            raise InputError(f"${key.upper()}", raw[:60], "'n, n channel names, n*n numbers' with n a whole number",
                             file=str(data.path)) from None
        if n == 0:
            return None
        if not 1 <= n <= len(data.channels):
            raise InputError(f"${key.upper()}", n, f"a matrix over 1 to {len(data.channels)} of the file's channels",
                             file=str(data.path))
        if len(tokens) != 1 + n + n * n:
            raise InputError(f"${key.upper()}", f"{len(tokens)} items", f"1 + n + n*n = {1 + n + n * n} items "
                             f"for n = {n} (a count, {n} channel names, then the matrix row by row)",
                             file=str(data.path))
        names = tuple(_channel_name(t, data, key) for t in tokens[1:1 + n])
        try:
            matrix = np.array([float(t) for t in tokens[1 + n:]], dtype=np.float64).reshape(n, n)
        except ValueError:
            raise InputError(f"${key.upper()}", raw[:60], "numeric matrix entries", file=str(data.path)) from None
        spill = Spillover(channels=names, matrix=matrix, keyword=key)
        check_spillover(spill, f"${key.upper()}", str(data.path))
        return spill
    return None


MAX_SPILLOVER_CONDITION = 1e8  # beyond this, compensation amplifies noise by more than the data's precision


def check_spillover(spill: Spillover, where: str, file: str) -> None:
    """A spillover matrix the analysis can trust: square over distinct channels, finite, each fluorochrome seen in
    its own detector (a positive diagonal), and well conditioned (compensation is its inverse)."""
    m, names = spill.matrix, spill.channels
    if m.ndim != 2 or m.shape != (len(names), len(names)):
        raise InputError(where, list(m.shape), f"a square matrix over its {len(names)} channels", file=file)
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise InputError(where, dupes, "each channel named once", file=file)
    if not np.isfinite(m).all():
        i, j = (int(x[0]) for x in np.nonzero(~np.isfinite(m)))
        raise InputError(where, f"{m[i, j]} ({names[i]} into {names[j]})", "finite spillover values; the analysis "
                         "cannot be trusted", file=file)
    if (np.diag(m) <= 0).any():
        i = int(np.nonzero(np.diag(m) <= 0)[0][0])
        raise InputError(where, f"{m[i, i]} ({names[i]} into its own detector)", "a positive diagonal (usually 1)",
                         file=file)
    cond = float(np.linalg.cond(m))
    if not cond < MAX_SPILLOVER_CONDITION:
        raise InputError(where, f"condition number {cond:.3g}", f"an invertible, well-conditioned matrix (condition "
                         f"number below {MAX_SPILLOVER_CONDITION:g})", file=file)


def compensate(data: FcsData, spill: Spillover | None, origin: str) -> FcsData:
    """Remove spillover: observed = true @ S, so true = observed @ inv(S) over the matrix's channels."""
    if spill is None:
        return data
    idx = [data.index(ch) for ch in spill.channels]
    try:
        solved = np.linalg.solve(spill.matrix.T, data.events[:, idx].T).T
    except np.linalg.LinAlgError:
        raise InputError("compensation", spill.keyword, "an invertible spillover matrix", file=str(data.path)) from None
    events = data.events.copy()
    events[:, idx] = solved
    return replace(data, events=events, compensated_with=origin)


def asinh_transform(values: np.ndarray, cofactor: float) -> np.ndarray:
    """Display transform asinh(x / c): linear near zero (keeps negative compensated values), log-like above."""
    return np.arcsinh(np.asarray(values, dtype=np.float64) / cofactor)


def inverse_asinh(values: np.ndarray | float, cofactor: float) -> np.ndarray | float:
    return np.sinh(values) * cofactor
