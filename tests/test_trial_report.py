"""The virtual-trial report: forest and time-course PNGs, the published-vs-simulated table (DataFrame and
markdown) and the self-contained HTML file, on small synthetic tables."""

from __future__ import annotations

import math
import re

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from mscsim.errors import InputError
from mscsim.trials.report import (TABLE_COLUMNS, comparison_markdown, comparison_table, forest_plot,
                                  timecourse_plot, write_html_report)

HOSTILE = "<script>alert('x')</script>"
ARMS = ["HA", "1e7", "1e8"]
VISITS = [0, 90, 180, 365]


def _meta(**changes) -> dict:
    meta = {
        "name": "knee_oa_trial", "title": "Knee OA: intra-articular MSC vs hyaluronic acid",
        "description": f"Synthetic design for the report tests {HOSTILE}", "seed": 20240501,
        "mscsim_version": "0.test", "design_file": "designs/knee_oa.yaml", "n_patients": 300,
        "arms": [{"name": "HA", "label": "hyaluronic acid", "n": 100},
                 {"name": "1e7", "label": "MSC 1e7 cells", "n": 100},
                 {"name": "1e8", "label": f"MSC 1e8 cells {HOSTILE}", "n": 100}],
        "primary": {"endpoint": "vas", "visit_day": 365},
        "fitted": [{"parameter": "oa_pain_gain", "fitted_to": "VAS change at 6 months, HA arm",
                    "source": ["lamo2019"]}],
        "citations": ["Lamo-Espinosa JM et al. (2016) J Transl Med.", "Emadedin M et al. (2018) Arch Iran Med."],
        "disclaimer": "mscsim is a research tool, never medical advice.",
        "endpoint_labels": {"vas": "VAS pain (mm)", "womac": "WOMAC total (points)", "responder": "OMERACT responder"},
        "better": {"vas": "lower", "womac": "lower", "responder": "higher"},
    }
    meta.update(changes)
    return meta


def _summary() -> pd.DataFrame:
    rows = []
    for i, arm in enumerate(ARMS):
        for day in VISITS:
            for ep, base, slope in (("vas", 60.0, 10.0), ("womac", 50.0, 6.0)):
                change = 0.0 if day == 0 else -(slope + 5 * i) * day / 365
                rows.append({"arm": arm, "endpoint": ep, "visit_day": day, "kind": "continuous", "n": 100,
                             "mean": base + change, "sd": 15.0, "mean_change": change, "sd_change": 12.0,
                             "ci_low": change - 2.4, "ci_high": change + 2.4})
            if day > 0:
                rate = 0.2 + 0.1 * i + 0.0002 * day
                rows.append({"arm": arm, "endpoint": "responder", "visit_day": day, "kind": "binary", "n": 100,
                             "mean": rate, "sd": math.nan, "mean_change": math.nan, "sd_change": math.nan,
                             "ci_low": rate - 0.08, "ci_high": rate + 0.08})
    return pd.DataFrame(rows)


def _comparisons(n_rows: int | None = None) -> pd.DataFrame:
    rows = []
    for ep in ("vas", "womac", "responder"):
        for day in VISITS[1:]:
            for i, arm in enumerate(ARMS[1:], start=1):
                est = (0.1 * i) if ep == "responder" else -5.0 * i * day / 365
                half = 0.09 if ep == "responder" else 4.0
                rows.append({"arm": arm, "control": "HA", "endpoint": ep, "visit_day": day, "estimate": est,
                             "ci_low": est - half, "ci_high": est + half, "p_value": 0.0004 * i,
                             "test": "welch_t" if ep != "responder" else "newcombe", "n_arm": 100,
                             "n_control": 100})
    df = pd.DataFrame(rows)
    return df if n_rows is None else df.iloc[:n_rows]


def _published() -> pd.DataFrame:
    return pd.DataFrame([
        {"endpoint": "vas", "visit_day": 365, "arm": "1e8", "quantity": "difference in VAS change vs HA",
         "published": -12.5, "published_ci_low": -20.3, "published_ci_high": -4.75, "simulated": -10.0,
         "simulated_ci_low": -14.0, "simulated_ci_high": -6.0, "source": "lamo2016", "agrees": True,
         "note": f"read from figure 2 {HOSTILE}"},
        {"endpoint": "responder", "visit_day": 180, "arm": "1e7", "quantity": "responder rate | OMERACT",
         "published": 0.62, "published_ci_low": math.nan, "published_ci_high": math.nan, "simulated": 0.336,
         "simulated_ci_low": 0.26, "simulated_ci_high": 0.42, "source": ["emadedin2018", "lamo2016"],
         "agrees": False, "note": "small trial"},
        {"endpoint": "womac", "visit_day": 180, "arm": "HA", "quantity": "mean WOMAC change",
         "published": -7.25, "published_ci_low": -11.0, "published_ci_high": -3.5, "simulated": -3.0,
         "simulated_ci_low": -5.4, "simulated_ci_high": -0.6, "source": "lamo2016", "agrees": False, "note": ""},
    ])


def _safety() -> pd.DataFrame:
    return pd.DataFrame([{"arm": arm, "event": "transient effusion", "n": 100, "events": 5 + 3 * i,
                          "rate": (5 + 3 * i) / 100, "ci_low": 0.02, "ci_high": 0.2} for i, arm in enumerate(ARMS)])


def _power() -> pd.DataFrame:
    return pd.DataFrame([{"endpoint": "vas", "visit_day": 365, "arm": "1e8", "n_per_arm": n, "power": p,
                          "ci_low": p - 0.03, "ci_high": min(p + 0.03, 1.0)} for n, p in ((50, 0.61), (100, 0.874))])


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    d = tmp_path_factory.mktemp("figs")
    return {"Differences vs control": forest_plot(_comparisons(), _published(), _meta(), d / "forest.png"),
            "Endpoints over time": timecourse_plot(_summary(), _meta(), d / "timecourse.png")}


def test_forest_and_timecourse_write_pngs(figures):
    for path in figures.values():
        assert path.is_file() and _is_png(path)
        assert path.stat().st_size > 5_000


def test_forest_plot_grows_with_rows_and_draws_published(tmp_path):
    small = forest_plot(_comparisons(2), None, _meta(), tmp_path / "small.png")
    large = forest_plot(_comparisons(), pd.DataFrame(), _meta(), tmp_path / "large.png")
    with_pub = forest_plot(_comparisons(), _published(), _meta(), tmp_path / "pub.png")
    assert _comparisons().shape[0] == 18 and small.stat().st_size > 5_000
    h_small, h_large = mpimg.imread(small).shape[0], mpimg.imread(large).shape[0]
    assert h_large > 2 * h_small  # 18 rows get room of their own
    assert mpimg.imread(large).shape == mpimg.imread(with_pub).shape
    # the published difference (and its legend entry) changes the picture; empty published is handled
    assert not np.array_equal(mpimg.imread(large), mpimg.imread(with_pub))
    empty = forest_plot(_comparisons().iloc[:0], None, _meta(), tmp_path / "empty.png")
    assert _is_png(empty)


def test_timecourse_single_visit_and_bad_input(tmp_path):
    one = _summary()
    one = one[one["visit_day"] == 365]
    assert timecourse_plot(one, _meta(), tmp_path / "one.png").stat().st_size > 5_000
    bad = _summary()
    bad.loc[bad["endpoint"] == "responder", "mean"] = 45.0  # a percentage where a rate belongs
    with pytest.raises(InputError, match="summary.mean"):
        timecourse_plot(bad, _meta(), tmp_path / "bad.png")
    with pytest.raises(InputError, match="summary"):
        timecourse_plot(_summary().drop(columns=["sd"]), _meta(), tmp_path / "bad.png")


def test_comparison_table_formats_values():
    t = comparison_table(_published())
    assert list(t.columns) == list(TABLE_COLUMNS) and len(t) == 3
    first = t.iloc[0]
    assert first["visit"] == "day 365"
    assert first["published"] == "-12.5 (-20.3 to -4.75)"
    assert first["simulated"] == "-10.0 (-14.0 to -6.00)"
    assert first["agrees"] == "yes"
    second = t.iloc[1]
    assert second["published"] == "0.620"  # no CI reported
    assert second["source"] == "emadedin2018, lamo2016"
    assert list(t["agrees"]) == ["yes", "no", "no"]


def test_comparison_markdown_has_header_and_one_row_per_published_row():
    md = comparison_markdown(_published())
    lines = md.strip().splitlines()
    assert lines[0] == "| " + " | ".join(TABLE_COLUMNS) + " |"
    assert set(lines[1].replace("|", "")) == {"-"}
    assert len(lines) == 2 + len(_published())
    assert "responder rate \\| OMERACT" in lines[3]  # a pipe in the text does not break the row
    assert all(len(re.split(r"(?<!\\)\|", line)) == len(TABLE_COLUMNS) + 2 for line in lines)
    empty = comparison_markdown(pd.DataFrame())
    assert empty.strip().splitlines() == lines[:2]
    assert comparison_table(None).empty and list(comparison_table(None).columns) == list(TABLE_COLUMNS)


def test_html_report_is_self_contained_and_escaped(tmp_path, figures):
    path = write_html_report(tmp_path / "out" / "report.html", _meta(), _summary(), _comparisons(), _published(),
                             _safety(), _power(), figures)
    text = path.read_text(encoding="utf-8")
    assert "research tool, never medical advice" in text
    assert text.index("never medical advice") < text.index("<h2>Design</h2>")
    for arm in ARMS:
        assert f"<td>{arm}</td>" in text
    for value in ("-12.5", "0.620", "-7.25"):
        assert value in text
    assert "<script" not in text.lower() and "&lt;script&gt;" in text
    assert text.count("data:image/png;base64,") == len(figures)
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert text.count("class='disagree'") == 2
    for heading in ("Published vs simulated", "Summary by arm and visit", "Comparisons vs control", "Power",
                    "Safety", "Fitted parameters", "Figures", "References"):
        assert f"<h2>{heading}</h2>" in text
    assert "oa_pain_gain" in text and "VAS change at 6 months, HA arm" in text
    assert "Lamo-Espinosa JM et al. (2016) J Transl Med." in text
    assert "87.4%" in text  # power shown as a percentage
    assert "&lt;0.001" in text  # p-values below 0.001, escaped


def test_html_report_handles_empty_tables_and_no_power(tmp_path, figures):
    meta = _meta(disclaimer="")
    path = write_html_report(tmp_path / "r.html", meta, _summary(), _comparisons(), pd.DataFrame(), None, None,
                             {})
    text = path.read_text(encoding="utf-8")
    assert "mscsim is a research tool, never medical advice." in text  # default when the design has none
    assert "No published numbers" in text and "No safety events" in text
    assert "<h2>Power</h2>" not in text
    assert path.stat().st_size > 1_000


def test_html_report_rejects_missing_figure_and_bad_table(tmp_path):
    with pytest.raises(InputError, match="figures"):
        write_html_report(tmp_path / "r.html", _meta(), _summary(), _comparisons(), None, None, None,
                          {"missing": tmp_path / "nope.png"})
    with pytest.raises(InputError, match="published"):
        write_html_report(tmp_path / "r.html", _meta(), _summary(), _comparisons(),
                          _published().drop(columns=["agrees"]), None, None, {})


def test_html_report_with_interactive_plots_is_offline_readable_and_ordered(tmp_path, figures):
    """Interactive (Bokeh) plots embed their JavaScript: scripts, but no external resource; hostile text stays
    escaped; counts are whole numbers; the answer (primary endpoint, published) comes before the tables."""
    from mscsim.report.interactive import trial_forest, trial_timecourse

    live = {"over time": trial_timecourse(_summary(), _meta()),
            "against control": trial_forest(_comparisons(), _published(), _meta())}
    path = write_html_report(tmp_path / "r.html", _meta(), _summary(), _comparisons(), _published(), _safety(),
                             _power(), figures, interactive=live)
    text = path.read_text(encoding="utf-8")
    assert "<script" in text and "&lt;script&gt;" in text and "<script>alert" not in text
    assert not re.search(r"<script[^>]+src=", text) and "<link" not in text
    assert "Bokeh" in text and text.count("<figure><img") == len(figures)
    assert "<td>100</td>" in text and "<td>100.0</td>" not in text  # patients: 100, never '100.0'
    order = [text.index(h) for h in ("<h2>Published vs simulated</h2>", "<h2>Interactive figures</h2>",
                                     "<h2>Figures</h2>", "<h2>Summary by arm and visit</h2>")]
    assert order == sorted(order)
