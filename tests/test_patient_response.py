"""How the patient and the dose shape the response (B14-B17), on the knee-OA preset.

Benefit is the untreated patient's pain minus the treated patient's (mm on a 100-mm VAS), both from the same
burn-in baseline, so it measures what the cells did, not the disease's own course.
"""

import numpy as np
import pytest

from conftest import example, simulated


def pain_benefit(days=180, **changes):
    """(time in days, pain benefit over time, untreated baseline pain) for one knee patient."""
    ds = simulated(example("knee_oa_ia_5e7", duration_days=days, **changes))
    benefit = (ds["pain_vas_untreated"] - ds["pain_vas"]).values[0]
    return ds["time_days"].values, benefit, float(ds["pain_vas_untreated"].values[0, 0])


def first_day(t, y, level):
    """First day the benefit reaches ``level`` (inf if never)."""
    hit = np.flatnonzero(y >= level)
    return float(t[hit[0]]) if hit.size else float("inf")


def test_B14_dose_response_is_computed_and_saturates():
    doses = [1e6, 1e7, 1e8, 1e9]
    peaks = [pain_benefit(days=150, regimen={"route": "intra_articular", "guidance": "ultrasound",
                                             "dose": {"cells": d}, "times_days": [0]})[1].max() for d in doses]
    assert all(p > 0 for p in peaks)
    assert peaks[0] < peaks[1] < peaks[2]  # more potent cells at the site, more benefit at usual doses ...
    assert peaks[1] > 2 * peaks[0]
    assert peaks[2] < 3 * peaks[1] and peaks[3] < 3 * peaks[2]  # ... but 10x the cells buys < 3x the benefit
    assert peaks[3] < 5 * peaks[1]  # 100x the cells buys far less than 100x the benefit


def test_B14_missed_injection_gives_less_benefit():
    guided = pain_benefit(days=120)[1].max()
    blind = pain_benefit(days=120, regimen={"route": "intra_articular", "guidance": "landmark",
                                            "dose": {"cells": 5e7}, "times_days": [0]})[1].max()
    assert blind < guided


@pytest.fixture(scope="module")
def reference():
    return pain_benefit(patient={"weight_kg": 75, "age_years": 50, "kellgren_lawrence": 3})


@pytest.mark.parametrize("impaired", [
    {"smoker": True},
    {"smoker": True, "vascular_disease": True},
    {"age_years": 80, "nutrition": "poor"},
], ids=["smoker", "smoker_vascular", "old_poorly_nourished"])
def test_B15_poor_environment_gives_slower_smaller_response(reference, impaired):
    t, ref, ref_base = reference
    t2, ben, base = pain_benefit(patient={"weight_kg": 75, "age_years": 50, "kellgren_lawrence": 3, **impaired})
    assert ben.max() / base < ref.max() / ref_base  # smaller: a smaller share of the patient's pain relieved
    level = 0.5 * ref.max()  # slower: a clinically visible relief comes later, or never
    assert first_day(t2, ben, level) > first_day(t, ref, level)


def test_B15_runaway_inflammation_gives_a_weaker_shorter_response(reference):
    """Runaway inflammation: NK cells lyse the MSCs (Spaggiari 2006), so fewer cells stay and the lesion's response
    is smaller relative to the patient's disease and fades sooner. (From its true chronic steady state the model
    does not make this response slower to build at half its peak, which B15 also claims: see the README's
    limitations.)"""
    t, ref, ref_base = reference
    ds_ref = simulated(example("knee_oa_ia_5e7", duration_days=180,
                               patient={"weight_kg": 75, "age_years": 50, "kellgren_lawrence": 3}))
    ds = simulated(example("knee_oa_ia_5e7", duration_days=180, patient={
        "weight_kg": 75, "age_years": 50, "kellgren_lawrence": 3, "baseline_inflammation": 2.5}))
    t2, ben, base = pain_benefit(patient={"weight_kg": 75, "age_years": 50, "kellgren_lawrence": 3,
                                          "baseline_inflammation": 2.5})
    assert ben.max() / base < ref.max() / ref_base  # a smaller share of the patient's pain relieved

    def damage_relief(d):
        u, tr = d["damage_untreated"].values[0], d["damage"].values[0]
        return (u - tr) / u

    assert damage_relief(ds).max() < damage_relief(ds_ref).max()  # the lesion recovers less
    day = int(np.argmin(abs(t - 28)))
    assert float(ds["msc_target"][0, day]) < float(ds_ref["msc_target"][0, day])  # the cells are cleared sooner
    assert t2[np.argmax(damage_relief(ds))] < t[np.argmax(damage_relief(ds_ref))]  # and their effect peaks sooner


def test_B16_most_pain_benefit_appears_after_week_4():
    t, ben, _ = pain_benefit(days=365)
    peak = ben.max()
    assert t[np.argmax(ben)] > 28
    assert ben[np.argmin(np.abs(t - 28))] < 0.5 * peak
    assert ben[np.argmin(np.abs(t - 365))] > 0.25 * peak  # and it outlasts the cells by months
    assert ben[np.argmin(np.abs(t - 7))] < 0.2 * peak


def test_B17_benefit_shrinks_with_structural_damage():
    """Grades 2-3 gain some cartilage and lasting relief; an end-stage (grade 4) knee gains neither, and a
    smaller share of its pain is relieved even at the peak. (From grade 1 to 3 the absolute relief grows,
    because there is more inflammation to resolve: the limit is structural, at the end stage.)"""
    share, lasting, cartilage = [], [], []
    for kl in (2, 3, 4):
        ds = simulated(example("knee_oa_ia_5e7", patient={"weight_kg": 75, "age_years": 60, "kellgren_lawrence": kl}))
        benefit = (ds["pain_vas_untreated"] - ds["pain_vas"]).values[0]
        share.append(benefit.max() / float(ds["pain_vas_untreated"].values[0, 0]))
        lasting.append(benefit[-1])
        cartilage.append(float((ds["cartilage_index"] - ds["cartilage_index_untreated"]).values[0, -1]))
    assert cartilage[0] > 1.0 and cartilage[1] > 1.0  # grades 2-3: growth factors help rebuild some cartilage
    assert abs(cartilage[2]) < 0.15 * cartilage[1]  # end stage: signalling cannot rebuild beyond the limit
    assert share[2] < 0.85 * min(share[0], share[1])
    assert lasting[2] < 0.25 * lasting[1]
