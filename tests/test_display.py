"""What a scientist reads: every variable has a readable name and units (from the display-name table), endpoint
lines say their units and statistic, categorical endpoints show categories, counts are floored at one cell, and
figures carry no code names."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

from mscsim.display import display, field_display, fmt, known_names, pct
from mscsim.endpoints import load_endpoints
from mscsim.model.core import Model
from mscsim.report.plots import tissue_response_figure
from mscsim.results import endpoint_lines, endpoint_table
from mscsim.simulation import KINETICS, TISSUE

CODE_NAMES = ("tnf", "il1b", "il6", "ifng", "il10", "tgfb", "m1", "m2", "teff", "treg", "nk", "dc", "msc_target")


def test_every_state_and_endpoint_has_a_display_name():
    model = Model.compose(list(KINETICS + TISSUE), {})
    names = set(known_names())
    missing = [s.name for s in model.states if s.name not in names]
    for disease in ("knee_osteoarthritis", "acute_gvhd", "perianal_fistula", "lumbar_disc_degeneration",
                    "tendinopathy", "diabetic_foot_ulcer", "lupus_nephritis"):
        spec = load_endpoints(disease).spec
        missing += [n for n in [*spec.endpoints, *spec.responses] if n not in names]
    assert not missing, f"add these to data/display/names.yaml: {missing}"
    assert display("tnf_untreated").label == "TNF-alpha" and display("tnf").units == "pg/mL"
    assert display("m1").units and display("m1").units != "1"
    assert field_display("regimen.dose.cells").axis_label() == "cells per dose (cells)"


@pytest.mark.parametrize("value,text", [(65.55, "65.5"), (5e7, "5e7"), (3162278.0, "3.16e6"), (123456, "123,000"),
                                        (0.00312, "0.00312"), (0, "0"), (2e-5, "2e-5")])
def test_numbers_read_as_a_person_writes_them(value, text):
    assert fmt(value) == text


def test_percentages():
    assert [pct(x) for x in (0.25, 1 / 3, 0.025, 1.0, 0.0)] == ["25%", "33%", "2.5%", "100%", "0%"]


def _gvhd_like(n: int) -> xr.Dataset:
    """A small labelled result with a stage endpoint, a response and a continuous endpoint (no model run)."""
    t = np.array([0.0, 14.0, 28.0])
    stage = np.tile([3.0, 2.0, 1.0], (n, 1))
    stage[0] = [3.0, 3.0, 3.0]
    unt = np.full((n, 3), 3.0)
    pain = np.tile([60.0, 50.0, 40.0], (n, 1)) + np.arange(n)[:, None]
    resp_attrs = {"kind": "response", "day": 28.0, "long_name": "day-28 response",
                  "flag_meanings": "complete=0 partial=1 none=2 progression=3"}
    ds = xr.Dataset({
        "organ_stage": (("patient", "time"), stage, {"kind": "endpoint", "units": "1"}),
        "organ_stage_untreated": (("patient", "time"), unt, {"kind": "endpoint", "units": "1"}),
        "pain_vas": (("patient", "time"), pain, {"kind": "endpoint", "units": "mm"}),
        "response_day28": (("patient",), np.array([2] + [1] * (n - 1), dtype=np.int8), resp_attrs),
        "response_day28_untreated": (("patient",), np.full(n, 2, dtype=np.int8), resp_attrs),
    }, coords={"patient": np.arange(n), "time": t * 24, "time_days": ("time", t)})
    ds.attrs["endpoint_visits_days"] = "28"
    return ds


def test_endpoint_lines_say_units_statistic_and_categories():
    lines = endpoint_lines(_gvhd_like(4))
    assert "  GVHD organ stage, day 28 (share of 4 patients): stage 1 75%, stage 3 25%   untreated: stage 3 100%" \
        in lines
    assert "  day-28 response (share of 4 patients): partial 75%, none 25%   untreated: none 100%" in lines
    assert any(line.startswith("  pain VAS, day 28 (mm, median of 4 patients): 41.5 (90% of patients ")
               for line in lines)
    one = endpoint_lines(_gvhd_like(1))
    assert "  GVHD organ stage, day 28: stage 3   untreated: stage 3" in one
    assert "  day-28 response: none   untreated: none" in one
    table = endpoint_table(_gvhd_like(4))
    assert set(table["visit"]) == {"baseline", "day 28"}


def test_stage_endpoints_are_drawn_as_categories_without_code_names():
    ds = _gvhd_like(4)
    for name in ("viable_total", "msc_target", "debris_total", "administered"):
        ds[name] = (("patient", "time"), np.tile([1e6, 1e3, 0.01], (4, 1)), {"units": "cell"})
    ds.attrs["endpoint_plot"] = "organ_stage"
    fig = tissue_response_figure(ds)
    stage_ax = next(a for a in fig.axes if a.get_ylabel() == "GVHD organ stage")
    assert [t.get_text() for t in stage_ax.get_yticklabels()] == [f"stage {i}" for i in range(5)]
    cells_ax = next(a for a in fig.axes if a.get_ylabel() == "MSCs (cells)")
    assert cells_ax.get_ylim()[0] == 1.0  # counts floored at one cell
    texts = [a.get_ylabel() for a in fig.axes] + [a.get_title() for a in fig.axes]
    texts += [t.get_text() for a in fig.axes if a.get_legend() for t in a.get_legend().get_texts()]
    assert not [t for t in texts if re.search(r"\((1)\)", t)]
    assert not [t for t in texts if any(re.fullmatch(c, w) for w in re.split(r"[\s,()]+", t) for c in CODE_NAMES)]


def test_every_bundled_disease_has_a_readable_title():
    """Figure titles and the credibility page say 'steroid-refractory acute GVHD', not 'acute gvhd'; a disease a
    user adds without an entry still reads as words."""
    from mscsim.display import _tables, disease_label
    from mscsim.model.parameters import DATA_DIR

    bundled = {p.stem for p in (DATA_DIR / "endpoints").glob("*.yaml")}
    assert bundled and bundled <= set(_tables()["diseases"]), bundled - set(_tables()["diseases"])
    assert disease_label("acute_gvhd") == "steroid-refractory acute GVHD"
    assert disease_label("my_new_disease") == "my new disease"
