"""A lesion in an organ (scenario ``lesion.organ``): intravenous cells reach it through the organ's own share of
cardiac output, its capillary bed's extraction and its inflammation (BIOLOGY.md B04 first pass, B07 homing)."""

import numpy as np
import pytest
from scipy.integrate import trapezoid

from conftest import example, frac, simulated
from mscsim import scenario_from_dict
from mscsim.simulation import resolve_setup, scenario_site

ORGANS = ("liver", "kidney", "lung", "heart", "gut", "brain", "systemic")


def organ_run(organ: str, inflammation: float = 1.0):
    return simulated(example("human_iv_liver_lesion", lesion={"organ": organ},
                             patient={"weight_kg": 70, "target_inflammation": inflammation}))


def pset(organ: str, inflammation: float = 1.0):
    data = example("human_iv_liver_lesion", lesion={"organ": organ},
                   patient={"weight_kg": 70, "target_inflammation": inflammation})
    return resolve_setup(scenario_from_dict(data)).pset


def flow_share(organ: str) -> float:
    """The lesion's share of cardiac output, read from the data files (a liver lesion takes the liver's own)."""
    p = pset(organ)
    organ_share = p["q_liver"].value if p["lesion_in_liver"].value else p["q_target"].value
    return p["f_lesion_organ"].value * organ_share


def extraction(organ: str, inflammation: float) -> float:
    p = pset(organ, inflammation)
    h = p["h_basal"].value
    return p["E_organ"].value * (h + (1 - h) * inflammation / (inflammation + p["K_home"].value))


def homed(ds) -> float:
    """Viable cells at the lesion over the run (cell-hours)."""
    return trapezoid(ds["msc_target"].values[0], ds["time"].values)


def test_B07_lesion_organ_names_its_site_file_and_systemic_stays_the_default():
    assert scenario_site(scenario_from_dict(example("human_iv_2e6_per_kg"))) == "systemic_lesion"
    for organ in ORGANS:
        site = scenario_site(scenario_from_dict(example("human_iv_liver_lesion", lesion={"organ": organ})))
        assert site == ("systemic_lesion" if organ == "systemic" else f"{organ}_lesion")
    # the flow shares of the lesion and the other capillary beds sum to at most 1 for every organ
    for organ in ORGANS:
        p = pset(organ)
        others = p["q_liver"].value + p["q_spleen"].value + (0 if p["lesion_in_liver"].value else flow_share(organ))
        assert others <= 1.0


@pytest.mark.parametrize("a,b", [("liver", "kidney"), ("kidney", "brain"), ("brain", "heart")])
def test_B07_iv_cells_reach_an_inflamed_organ_in_proportion_to_flow_share_times_extraction(a, b):
    ratio = homed(organ_run(a)) / homed(organ_run(b))
    expected = flow_share(a) * extraction(a, 1.0) / (flow_share(b) * extraction(b, 1.0))
    # Both lesions draw on the same arterial pool, but a lesion's bed returns a little more of its flow to the veins
    # than the bed it replaces (E_home < E_organ), so the pools differ by at most (E_organ - E_home) * |q_a - q_b|
    # of the arterial outflow per pass (under 3 %); the cells at the lesion then die alike in both organs.
    assert abs(ratio / expected - 1) < 0.03, (ratio, expected)
    assert flow_share(a) > flow_share(b) and ratio > 1  # more flow, more cells


def test_B04_a_lung_lesion_holds_the_share_of_first_pass_trapped_cells_its_signal_retains():
    for s in (0.0, 1.0):
        ds = organ_run("lung", s)
        i = int(np.argmin(abs(ds["time"].values - 0.25)))  # during the infusion, before deaths differ much
        lesion, lung = ds["msc_target"].values[0, i], ds["msc_lung"].values[0, i]
        share = extraction("lung", s) / pset("lung", s)["E_organ"].value  # H_home of the injured whole lung
        assert abs(lesion / (lesion + lung) / share - 1) < 0.02, (s, lesion / (lesion + lung), share)
    # the lung lesion, on the venous first pass, gets far more of a systemic dose than any lesion behind it
    assert frac(organ_run("lung"), ["msc_target"], 1.0) > 100 * frac(organ_run("liver"), ["msc_target"], 1.0)


@pytest.mark.parametrize("organ", ["liver", "kidney", "lung"])
def test_B07_a_quiet_organ_lesion_gets_fewer_cells_than_an_inflamed_one(organ):
    quiet, inflamed = homed(organ_run(organ, 0.0)), homed(organ_run(organ, 1.0))
    assert inflamed > 1.5 * quiet > 0


def test_B07_a_liver_lesion_takes_its_cells_out_of_the_liver_not_on_top():
    # the same arterial share reaches the liver whether or not it is the lesion: the liver's arrest plus the
    # lesion's homing of a liver lesion come to at most what the liver alone arrests with the lesion elsewhere
    liver = organ_run("liver", 0.0)
    other = organ_run("kidney", 0.0)
    t = liver["time"].values
    in_liver = trapezoid(liver["msc_liver"].values[0] + liver["msc_target"].values[0], t)
    assert in_liver <= trapezoid(other["msc_liver"].values[0], t) * 1.03
    assert trapezoid(liver["msc_liver"].values[0], t) < 0.01 * in_liver  # a whole-organ lesion: nearly all there


@pytest.mark.parametrize("organ", ORGANS)
def test_mass_balance_closes_for_every_lesion_organ(organ):
    ds = organ_run(organ)
    cells = [v for v in ds.data_vars if ds[v].attrs.get("kind") in ("viable", "debris", "cleared")]
    total = sum(ds[v] for v in cells)
    assert float(abs(total - ds["administered"]).max() / ds["administered"].max()) < 1e-9


def test_untreated_course_does_not_depend_on_the_lesion_organ():
    # the same disease parameters in another organ: the untreated course (no cells) is the same; treated, it is not
    def gvhd(organ):
        return simulated(example("acute_gvhd_iv_2e6_per_kg", lesion={"organ": organ}, duration_days=7,
                                 regimen={"route": "intravenous", "dose": {"cells_per_kg": 2e6}, "times_days": [0],
                                          "infusion_minutes": 15}))

    runs = {organ: gvhd(organ) for organ in ("systemic", "liver", "lung")}
    untreated = [v for v in runs["systemic"].data_vars if v.endswith("_untreated")]
    assert untreated
    for organ in ("liver", "lung"):
        for v in untreated:
            a, b = runs["systemic"][v].values, runs[organ][v].values
            assert np.allclose(a, b, rtol=1e-9, atol=1e-12 * max(1.0, float(abs(a).max()))), (organ, v)
    assert homed(runs["liver"]) > 2 * homed(runs["systemic"])


def test_B04_the_label_of_a_liver_or_lung_lesion_counts_in_its_organ():
    from mscsim.io.outputs import summary_table

    for organ, label in (("liver", "liver_label_fraction_1h"), ("lung", "lung_label_fraction_1h")):
        ds = organ_run(organ)
        states = ["msc_" + organ, "debris_" + organ, "msc_target", "debris_target"]
        assert float(summary_table(ds)[label][0]) == pytest.approx(frac(ds, states, 1.0), rel=1e-12)
    kidney = organ_run("kidney")  # a kidney lesion's cells are in neither
    assert float(summary_table(kidney)["liver_label_fraction_1h"][0]) == pytest.approx(
        frac(kidney, ["msc_liver", "debris_liver"], 1.0), rel=1e-12)
