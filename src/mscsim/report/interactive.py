"""Zoomable, hoverable plots for the HTML reports (trial report.html, QC qc_report.html), with BokehJS embedded in
the page itself, so a report opened offline, mailed or archived still works. The static PNGs stay beside them for
slides.

``page_scripts(models)`` is the inline BokehJS (once per page, only the bundles the plots need); ``page(models)``
adds every plot's <div> and one script that fills them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from bokeh.embed import components
from bokeh.embed.bundle import bundle_for_objs_and_resources
from bokeh.layouts import gridplot
from bokeh.models import ColumnDataSource, HoverTool, Span
from bokeh.plotting import figure
from bokeh.resources import INLINE

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
TOOLS = "pan,box_zoom,wheel_zoom,reset,save"


def page_scripts(models: Sequence) -> str:
    """The BokehJS the models need, inline (no CDN, no external file)."""
    bundle = bundle_for_objs_and_resources(list(models), INLINE)
    return "".join(f"<script type='text/javascript'>\n{js}\n</script>\n" for js in bundle.js_raw)


def page(models: Mapping[str, object]) -> str:
    """Every plot with its caption and the inline BokehJS once, as an HTML fragment (empty when no plots)."""
    if not models:
        return ""
    parts = [page_scripts(list(models.values()))]
    script, divs = components(list(models.values()))  # one document for all: serialised once, not per plot
    for caption, div in zip(models, divs):
        parts.append(f"<figure class='interactive'>{div}<figcaption>{caption} (drag to pan, wheel or box "
                     f"to zoom, hover for values)</figcaption></figure>")
    parts.append(script)
    return "".join(parts)


# ---------------------------------------------------------------- trial report

def trial_timecourse(summary: pd.DataFrame, meta: Mapping):
    """Per endpoint: each arm's mean (rate for 0/1 endpoints) by visit with its 95 % CI, from baseline (day 0,
    where the summary gives the change from baseline); hover shows the numbers."""
    from ..trials.report import _arm_labels, _arm_order, _endpoint_label, _mean_ci

    if summary is None or summary.empty:
        return None
    labels = _arm_labels(meta)
    arms = _arm_order(meta, summary["arm"])
    plots = []
    for ep in dict.fromkeys(summary["endpoint"].astype(str)):
        rows = summary[summary["endpoint"].astype(str) == ep]
        binary = (rows["kind"] == "binary").all()
        scale = 100.0 if binary else 1.0
        label = _endpoint_label(meta, ep)
        p = figure(title=label + ("  (primary)" if ep == (meta.get("primary") or {}).get("endpoint") else ""),
                   width=560, height=330, tools=TOOLS, x_axis_label="days after first dose (0: baseline)",
                   y_axis_label=f"{label}, % of patients" if binary else f"{label}, mean")
        for k, arm in enumerate(arms):
            d = rows[rows["arm"].astype(str) == arm].sort_values("visit_day")
            if d.empty:
                continue
            ci = np.array([_mean_ci(r) for _, r in d.iterrows()], dtype=float).reshape(-1, 2) * scale
            x = d["visit_day"].astype(float).tolist()
            y = (d["mean"].astype(float) * scale).tolist()
            lo, hi = ci[:, 0].tolist(), ci[:, 1].tolist()
            n = d["n"].astype(float).tolist()
            if not binary and d["mean_change"].notna().any():
                base = float((d["mean"] - d["mean_change"]).astype(float).dropna().iloc[0])
                x, y, lo, hi, n = [0.0] + x, [base] + y, [math.nan] + lo, [math.nan] + hi, [math.nan] + n
            src = ColumnDataSource({"day": x, "mean": y, "lo": lo, "hi": hi, "n": n,
                                    "arm": [labels.get(arm, arm)] * len(x)})
            colour = COLOURS[k % len(COLOURS)]
            p.varea("day", "lo", "hi", source=src, color=colour, alpha=0.15)
            p.line("day", "mean", source=src, color=colour, line_width=2, legend_label=labels.get(arm, arm))
            r = p.scatter("day", "mean", source=src, color=colour, size=7)
            p.add_tools(HoverTool(renderers=[r], tooltips=[("arm", "@arm"), ("day", "@day{0}"),
                                                           ("mean" if not binary else "%", "@mean{0.0}"),
                                                           ("95% CI", "@lo{0.0} to @hi{0.0}"), ("n", "@n{0}")]))
        p.legend.location = "top_right"
        p.legend.click_policy = "hide"
        p.legend.label_text_font_size = "9pt"
        plots.append(p)
    return gridplot(plots, ncols=2, toolbar_location="right")


def trial_forest(comparisons: pd.DataFrame, published: pd.DataFrame | None, meta: Mapping):
    """Differences against control with 95 % CIs, one row per endpoint, visit and arm; the published
    difference, where there is one, as a red diamond. Hover shows estimate, CI, p and the test."""
    from ..trials.report import _arm_labels, _endpoint_label, _published_difference

    if comparisons is None or comparisons.empty:
        return None
    labels = _arm_labels(meta)
    plots = []
    pub = published if published is not None else pd.DataFrame()
    for ep in dict.fromkeys(comparisons["endpoint"].astype(str)):
        rows = comparisons[comparisons["endpoint"].astype(str) == ep].sort_values("visit_day")
        names = [f"{labels.get(str(r['arm']), r['arm'])} vs {labels.get(str(r['control']), r['control'])}, "
                 f"day {float(r['visit_day']):g}" for _, r in rows.iterrows()]
        src = ColumnDataSource({"row": names, "est": rows["estimate"].astype(float), "lo": rows["ci_low"].astype(float),
                                "hi": rows["ci_high"].astype(float), "p": rows["p_value"].astype(float),
                                "test": rows["test"].astype(str)})
        p = figure(y_range=list(reversed(names)), width=760, height=90 + 38 * len(names), tools=TOOLS,
                   title=_endpoint_label(meta, ep), x_axis_label="difference against control (95% CI)")
        p.segment(x0="lo", y0="row", x1="hi", y1="row", source=src, line_width=2, color=COLOURS[0])
        r = p.scatter("est", "row", source=src, size=9, color=COLOURS[0], legend_label="simulated")
        p.add_tools(HoverTool(renderers=[r], tooltips=[("", "@row"), ("difference", "@est{0.00}"),
                                                       ("95% CI", "@lo{0.00} to @hi{0.00}"), ("p", "@p{0.000}"),
                                                       ("test", "@test")]))
        pts = [(_published_difference(pub, row, False), name) for (_, row), name in zip(rows.iterrows(), names)]
        pts = [(pd_row, name) for pd_row, name in pts if pd_row is not None]
        if pts:
            psrc = ColumnDataSource({"row": [n for _, n in pts], "value": [float(r["published"]) for r, _ in pts],
                                     "source": [", ".join(r["source"]) if isinstance(r["source"], (list, tuple))
                                                else str(r["source"]) for r, _ in pts]})
            pr = p.scatter("value", "row", source=psrc, marker="diamond", size=13, color="#cf222e",
                           legend_label="published")
            p.add_tools(HoverTool(renderers=[pr], tooltips=[("published", "@value{0.00}"), ("source", "@source")]))
        p.add_layout(Span(location=0, dimension="height", line_color="#57606a", line_dash="dashed"))
        p.legend.location = "top_right"
        p.legend.label_text_font_size = "9pt"
        plots.append(p)
    return gridplot(plots, ncols=1, toolbar_location="right")


# ---------------------------------------------------------------- QC report

def qc_marker(channel, cofactor: float):
    """Stained against control histogram of one marker (asinh scale), threshold drawn, hover for counts."""
    from ..qc.fcs import asinh_transform

    s = asinh_transform(channel.stained_values, cofactor)
    parts = [s] + ([asinh_transform(channel.control_values, cofactor)] if channel.control_values is not None else [])
    lo, hi = min(float(x.min()) for x in parts), max(float(x.max()) for x in parts)
    edges = np.linspace(lo, hi, 121)
    p = figure(width=430, height=290, tools=TOOLS, title=f"{'/'.join(channel.markers)} ({channel.tube}): "
               f"{channel.percent_positive:.1f}% positive", x_axis_label=f"asinh({channel.channel} / {cofactor:g})",
               y_axis_label="density")
    if channel.control_values is not None:
        hc, _ = np.histogram(parts[1], bins=edges, density=True)
        p.quad(top=hc, bottom=0, left=edges[:-1], right=edges[1:], color="#999999", alpha=0.5,
               legend_label=str(channel.threshold_source))
    hs, _ = np.histogram(s, bins=edges, density=True)
    src = ColumnDataSource({"x": (edges[:-1] + edges[1:]) / 2, "y": hs})
    r = p.step("x", "y", source=src, color="#cf222e", line_width=2, mode="center", legend_label="stained")
    t = float(asinh_transform(channel.threshold, cofactor))
    top = float(max(hs.max(), hc.max() if channel.control_values is not None else 0.0))
    p.line([t, t], [0, top], line_color="black", line_dash="dashed", legend_label="threshold")
    p.add_tools(HoverTool(renderers=[r], tooltips=[("asinh value", "@x{0.00}"), ("density", "@y{0.000}")],
                          mode="vline"))
    p.legend.label_text_font_size = "8pt"
    p.legend.location = "top_center"
    p.legend.background_fill_alpha = 0.6
    return p
