"""FCS integrity (issue 19): a header that disagrees with its data, non-finite events, a broken spillover matrix or
'compensation: file' without one are clear errors naming the file; degenerate data (constant channels, too few
events) leaves the lot NOT RELEASED with the reason; the results are strict JSON. Files are the synthetic tubes
with one keyword or the DATA segment changed (mscsim.qc.synthetic.rewrite_fcs keeps the rest consistent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qc_helpers import edit_lot, write_lot

from mscsim.cli import main
from mscsim.errors import InputError
from mscsim.qc import evaluate_lot, load_lot
from mscsim.qc.fcs import read_fcs
from mscsim.qc.synthetic import rewrite_fcs


@pytest.fixture
def lot_path(tmp_path):
    return write_lot(tmp_path / "lot")


def _tube(lot_path):
    return lot_path.parent / "tube_identity.fcs"


def _events(path) -> np.ndarray:
    return read_fcs(path).events.astype("<f4")


@pytest.mark.parametrize("keyword,value,field", [
    ("tot", "0", "$TOT"), ("tot", "-5", "$TOT"), ("tot", "1e12", "FCS file"), ("tot", "2999", "$TOT"),
    ("par", "1", "$PAR"), ("datatype", "Q", "$DATATYPE"), ("datatype", "D", "$TOT"), ("mode", "U", "$MODE"),
    ("mode", "junk", "$MODE"), ("p4b", "16", "$P4B"), ("byteord", "3,1,2,4", "$BYTEORD"),
    ("byteord", "4,3,2,1", "events in channel"), ("p4r", "0", "$P4R"),
])
def test_a_header_that_disagrees_with_its_data_is_refused(lot_path, keyword, value, field):
    tube = _tube(lot_path)
    rewrite_fcs(tube, tube, {keyword: value})
    with pytest.raises(InputError) as err:
        evaluate_lot(load_lot(lot_path))
    assert f"field '{field}" in str(err.value) and tube.name in str(err.value)


def test_a_rewritten_file_with_nothing_changed_reads_the_same(lot_path, tmp_path):
    copy = rewrite_fcs(_tube(lot_path), tmp_path / "copy.fcs")
    assert np.array_equal(read_fcs(copy).events, read_fcs(_tube(lot_path)).events)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_events_are_refused(lot_path, value):
    tube = _tube(lot_path)
    e = _events(tube)
    e[10, 4] = value
    rewrite_fcs(tube, tube, data=e.tobytes())
    with pytest.raises(InputError, match="NaN or infinite") as err:
        read_fcs(tube)
    assert tube.name in str(err.value)


@pytest.mark.parametrize("entry,problem", [("nan", "finite spillover"), ("inf", "finite spillover"),
                                          ("0", "positive diagonal")])
def test_a_broken_spillover_matrix_is_refused(lot_path, entry, problem):
    tube = _tube(lot_path)
    parts = read_fcs(tube).text["spillover"].split(",")
    parts[1 + int(parts[0])] = entry  # the first fluorochrome into its own detector
    rewrite_fcs(tube, tube, {"spillover": ",".join(parts)})
    with pytest.raises(InputError, match=problem) as err:
        evaluate_lot(load_lot(lot_path))
    assert "$SPILLOVER" in str(err.value) and tube.name in str(err.value)


def test_a_singular_spillover_matrix_in_the_lot_is_refused_when_the_lot_is_loaded(lot_path):
    edit_lot(lot_path, lambda r: r["flow"].update(compensation={"channels": ["FITC-A", "PE-A"],
                                                                "matrix": [[1, 1], [1, 1]]}))
    with pytest.raises(InputError, match="well-conditioned") as err:
        load_lot(lot_path)
    assert "flow.compensation" in str(err.value)


def test_compensation_from_the_file_needs_a_matrix_in_the_file(lot_path):
    tube = _tube(lot_path)
    rewrite_fcs(tube, tube, {"spillover": None})
    with pytest.raises(InputError, match="has none") as err:
        evaluate_lot(load_lot(lot_path))
    assert "field 'flow.compensation'" in str(err.value) and tube.name in str(err.value)


def test_B01_identical_events_are_not_released_and_the_report_says_why(lot_path, tmp_path, capsys):
    tube = _tube(lot_path)
    e = _events(tube)
    rewrite_fcs(tube, tube, data=np.tile(e[100], (len(e), 1)).tobytes())
    out = tmp_path / "report"
    assert main(["qc", str(lot_path), "--out", str(out)]) == 0  # the analysis ran: a decision, not an error
    printed = capsys.readouterr().out
    assert "NOT RELEASED" in printed and "cannot be trusted" in printed and "distinct value" in printed
    data = json.loads((out / "qc_results.json").read_text(), parse_constant=lambda t: pytest.fail(t))
    assert data["released"] is False and data["analysis_problems"]
    identity = [c for c in data["criteria"] if c["id"] in ("CD73", "CD90", "CD105")]
    assert identity and all(c["status"] == "untrusted" for c in identity)
    assert "cannot be trusted" in (out / "qc_report.html").read_text()


def test_header_offsets_that_make_text_and_data_overlap_are_refused(lot_path):
    """Found by the long fuzz run: a TEXT end offset moved into the DATA segment still parsed, and released."""
    tube = _tube(lot_path)
    raw = bytearray(tube.read_bytes())
    data_start = int(raw[26:34])
    raw[18:26] = f"{data_start + 100:>8d}".encode()
    tube.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="do not overlap") as err:
        read_fcs(tube)
    assert "field 'HEADER'" in str(err.value) and tube.name in str(err.value)


def test_a_text_offset_that_skips_the_first_keywords_is_refused(lot_path):
    """Found by the long fuzz run (2026-12-06): a HEADER TEXT start moved forward onto a later delimiter parses as a
    shorter TEXT segment that lacks the first keywords, and the lot was released on it. FCS 3.x requires those
    keywords ($BEGINANALYSIS, ...), so a TEXT segment without them is refused, naming the file and the keyword."""
    tube = _tube(lot_path)
    raw = bytearray(tube.read_bytes())
    text_start = int(raw[10:18])
    delimiter = raw[text_start:text_start + 1]
    first_keyword_end = raw.index(delimiter, raw.index(delimiter, text_start + 1) + 1)  # after "/$KEY/value"
    raw[10:18] = f"{first_keyword_end:>8d}".encode()
    tube.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="requires in TEXT") as err:
        read_fcs(tube)
    assert tube.name in str(err.value)
