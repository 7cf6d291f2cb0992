"""The explorer page (a Bokeh server document): a form on the left, live plots on the right.

Each change of the form is validated (``compute.build``: the API's own checks) and, when valid, run in a worker
thread; the plots update when it is done (a newer change supersedes an older run). A bad value shows its message
in the page, in words, and the plots keep the last good run; the server keeps serving. BokehJS is served by the
server itself (no CDN), so the page works offline.
"""

from __future__ import annotations

import logging
import traceback
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (CheckboxGroup, ColumnDataSource, DataTable, Div, Select, Span, TableColumn,
                          TextInput)
from bokeh.plotting import figure

from ..display import display, fmt, pct
from ..errors import MscsimError
from . import compute

log = logging.getLogger("mscsim.explore")
TREATED, UNTREATED = "#0969da", "#57606a"
_STYLE = "font-family: sans-serif; font-size: 13px;"


def _labelled(values: list[str]) -> list[tuple[str, str]]:
    """Select options as (value, readable label): intra_articular -> intra articular; '' -> none."""
    return [(v, v.replace("_", " ") if v else "none") for v in values]


def _empty(*keys: str) -> dict:
    return {k: [] for k in keys}


def _message(kind: str, text: str) -> str:
    colours = {"error": ("#cf222e", "#ffebe9"), "info": ("#57606a", "#f6f8fa"), "ok": ("#1a7f37", "#dafbe1")}
    fg, bg = colours[kind]
    import html

    return (f"<div style='{_STYLE} color:{fg}; background:{bg}; padding:6px 8px; border-radius:4px; "
            f"max-width:290px'>{html.escape(text)}</div>")


class Explorer:
    """One browser session's page and its state."""

    def __init__(self, doc, initial: str, extra_sources: dict[str, str] | None = None):
        self.doc = doc
        self.generation = 0
        self.filling = False
        self.extra = dict(extra_sources or {})
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mscsim-explore")
        self.res = None
        self.sim = None
        opts = compute.choices()
        opts["preset"] = opts["preset"] + [k for k in self.extra if k not in opts["preset"]]
        w = self.w = {
            "preset": Select(title="Scenario (bundled preset)", options=opts["preset"], name="preset"),
            "source": Select(title="Tissue source", options=_labelled(opts["source"]), name="source"),
            "donor": Select(title="Donor", options=opts["donor"], name="donor"),
            "viability": TextInput(title="Viability (%)", name="viability"),
            "route": Select(title="Route", options=_labelled(opts["route"]), name="route"),
            "guidance": Select(title="Guidance (local injections)", options=_labelled(opts["guidance"]),
                               name="guidance"),
            "dose": TextInput(title="Dose (cells per administration, e.g. 5e7)", name="dose"),
            "patients": TextInput(title=f"Virtual patients (1-{compute.MAX_PATIENTS}; bands need 2 or more)",
                                  name="patients"),
            "age": TextInput(title="Age (years; empty: not given)", name="age"),
            "kl": Select(title="Kellgren-Lawrence grade (knee OA)", options=opts["kl"], name="kl"),
            "inflammation": TextInput(title="Baseline inflammation (x typical)", name="inflammation"),
            "flags": CheckboxGroup(labels=["smoker", "vascular disease"], name="flags"),
            "n_per_arm": TextInput(title="Trial size (patients per arm) for power", name="n_per_arm"),
            "endpoint": Select(title="Endpoint", options=[], name="endpoint"),
            "visit": Select(title="Visit (dose-response and power)", options=[], name="visit"),
        }
        for key, widget in w.items():
            widget.css_classes = [f"mscsim-{key}"]
        self.status = Div(text=_message("info", "starting ..."), name="status")
        self.message = Div(text="", name="message")
        self.power_div = Div(text="", name="power", width=520)
        self.src = {
            "cells": ColumnDataSource(_empty("t", "total", "total_lo", "total_hi", "site", "site_lo", "site_hi"),
                                      name="cells"),
            "tissue": ColumnDataSource(_empty("t", "m1", "m1_u", "teff", "teff_u", "tnf", "tnf_u"), name="tissue"),
            "endpoint": ColumnDataSource(_empty("t", "med", "lo", "hi", "u_med", "u_lo", "u_hi"), name="endpoint"),
            "dose": ColumnDataSource(_empty("dose", "med", "lo", "hi", "u_med"), name="dose_response"),
            "table": ColumnDataSource(_empty("label", "visit", "statistic", "treated", "untreated"),
                                      name="endpoint_table"),
        }
        self.doc.title = "mscsim explorer"
        self._layout()
        self._fill(compute.form_from(self._load(initial)))
        for key, widget in w.items():
            if key == "preset":
                widget.on_change("value", self._on_preset)
            elif key == "flags":
                widget.on_change("active", self._on_change)
            elif key in ("endpoint", "visit"):
                widget.on_change("value", self._on_view)
            else:
                widget.on_change("value", self._on_change)
        doc.on_session_destroyed(lambda ctx: self.executor.shutdown(wait=False, cancel_futures=True))
        self.submit()

    # ---------------------------------------------------------------- layout
    def _layout(self) -> None:
        s = self.src
        p1 = figure(title="Viable MSCs (line: median; band: 90% of patients)", y_axis_type="log", width=520,
                    height=300, x_axis_label="days after first dose", y_axis_label="viable MSCs (cells)",
                    name="cells_plot", tools="pan,box_zoom,wheel_zoom,reset,save,hover")
        p1.varea("t", "total_lo", "total_hi", source=s["cells"], color=TREATED, alpha=0.15)
        p1.line("t", "total", source=s["cells"], color=TREATED, line_width=2, legend_label="all compartments")
        p1.varea("t", "site_lo", "site_hi", source=s["cells"], color="#bf8700", alpha=0.15)
        p1.line("t", "site", source=s["cells"], color="#bf8700", line_width=2, legend_label="at the lesion")
        p2 = figure(title="Tissue response (solid: treated, dashed: untreated; median)", width=520, height=300,
                    x_axis_label="days after first dose", y_axis_label="x inflamed reference (TNF-alpha: x day 0)",
                    name="tissue_plot", tools="pan,box_zoom,wheel_zoom,reset,save,hover")
        for key, colour in (("m1", "#cf222e"), ("teff", "#8250df"), ("tnf", "#1a7f37")):
            p2.line("t", key, source=s["tissue"], color=colour, line_width=2, legend_label=display(key).label)
            p2.line("t", f"{key}_u", source=s["tissue"], color=colour, line_width=2, line_dash="dashed")
        p3 = figure(title="Endpoint vs the same patients untreated", width=520, height=300,
                    x_axis_label="days after first dose", name="endpoint_plot",
                    tools="pan,box_zoom,wheel_zoom,reset,save,hover")
        p3.varea("t", "lo", "hi", source=s["endpoint"], color=TREATED, alpha=0.15)
        p3.line("t", "med", source=s["endpoint"], color=TREATED, line_width=2, legend_label="treated")
        p3.varea("t", "u_lo", "u_hi", source=s["endpoint"], color=UNTREATED, alpha=0.10)
        p3.line("t", "u_med", source=s["endpoint"], color=UNTREATED, line_width=2, line_dash="dashed",
                legend_label="untreated")
        p4 = figure(title="Dose-response (same patients at every dose)", x_axis_type="log", width=520, height=300,
                    x_axis_label="cells per administration", name="dose_plot",
                    tools="pan,box_zoom,wheel_zoom,reset,save,hover")
        p4.varea("dose", "lo", "hi", source=s["dose"], color=TREATED, alpha=0.15)
        p4.line("dose", "med", source=s["dose"], color=TREATED, line_width=2, legend_label="treated (median)")
        p4.scatter("dose", "med", source=s["dose"], color=TREATED, size=6)
        p4.line("dose", "u_med", source=s["dose"], color=UNTREATED, line_dash="dashed", line_width=2,
                legend_label="untreated")
        self.dose_marker = Span(location=1.0, dimension="height", line_color="#bf8700", line_dash="dotted",
                                line_width=2)
        p4.add_layout(self.dose_marker)
        for p, where in ((p1, "top_right"), (p2, "bottom_right"), (p3, "top_right"), (p4, "top_right")):
            p.legend.location = where
            p.legend.click_policy = "hide"
            p.legend.label_text_font_size = "9pt"
            p.legend.background_fill_alpha = 0.7
        self.plots = {"cells": p1, "tissue": p2, "endpoint": p3, "dose": p4}
        table = DataTable(source=s["table"], width=1050, height=190, index_position=None, name="table", columns=[
            TableColumn(field="label", title="endpoint"), TableColumn(field="visit", title="visit"),
            TableColumn(field="statistic", title="statistic"), TableColumn(field="treated", title="treated"),
            TableColumn(field="untreated", title="untreated")])
        w = self.w
        head = Div(text=f"<h2 style='font-family:sans-serif;margin:4px 0'>mscsim explorer</h2><div style='{_STYLE}"
                        "color:#9a6700'>A research tool, never medical advice.</div>", width=1300)
        form = column(w["preset"], row(w["source"], w["donor"], width=300), w["viability"],
                      row(w["route"], w["guidance"], width=300), w["dose"], w["patients"], w["age"], w["kl"],
                      w["inflammation"], w["flags"], w["n_per_arm"], self.status, self.message, width=310)
        plots = column(row(p1, p2), row(column(row(w["endpoint"], w["visit"]), p3), column(p4, self.power_div)),
                       table)
        self.doc.add_root(column(head, row(form, plots)))

    # ---------------------------------------------------------------- form
    def _load(self, name: str):
        return compute.load(self.extra.get(name, name))

    def _fill(self, values: dict) -> None:
        self.filling = True
        try:
            for key, v in values.items():
                if key in ("smoker", "vascular"):
                    continue
                if key in self.w:
                    self.w[key].value = str(v)
            self.w["flags"].active = [i for i, k in enumerate(("smoker", "vascular")) if values.get(k)]
        finally:
            self.filling = False

    def form(self) -> dict:
        w = self.w
        values = {k: w[k].value for k in compute.FORM_FIELDS if k in w and k not in ("smoker", "vascular")}
        values["smoker"] = 0 in w["flags"].active
        values["vascular"] = 1 in w["flags"].active
        return values

    def _on_preset(self, attr, old, new) -> None:
        if self.filling:
            return
        try:
            values = compute.form_from(self._load(new), int(self.w["n_per_arm"].value or 20))
        except (MscsimError, ValueError) as exc:
            self.message.text = _message("error", f"Not run: {exc}")
            return
        values["preset"] = new
        self._fill(values)
        self.submit()

    def _on_change(self, attr, old, new) -> None:
        if not self.filling:
            self.submit()

    def _on_view(self, attr, old, new) -> None:
        if self.filling or self.res is None:
            return
        self.submit(rerun=False)

    # ---------------------------------------------------------------- running
    def submit(self, rerun: bool = True) -> None:
        """Validate the form; if valid, run it (or only redraw) in the worker thread."""
        try:
            sim, n_per_arm = compute.build(self.form(), extra=self.extra)
        except MscsimError as exc:
            self.message.text = _message("error", f"Not run: {exc}")
            self.status.text = _message("info", "showing the last valid inputs")
            return
        self.message.text = ""
        self.generation += 1
        g = self.generation
        self.status.text = _message("info", f"running {sim.scenario.population.size} patient(s) ...")
        self.executor.submit(self._work, g, sim if rerun or self.sim is None else None, n_per_arm,
                             self.w["endpoint"].value, self.w["visit"].value)

    def _work(self, g: int, sim, n_per_arm: int, endpoint: str, visit: str) -> None:
        try:
            if sim is not None:
                res = compute.run(sim)
            else:
                res, sim = self.res, self.sim
            if g != self.generation:
                return
            v = compute.view(res, endpoint or None)
            visits = [d for d in (float(x) for x in res.data.attrs.get("endpoint_visits_days", "").split(",") if x)
                      if d <= float(res.data["time_days"][-1])]
            day = float(visit) if visit and visit.replace(".", "", 1).isdigit() and float(visit) in visits else \
                (visits[min(2, len(visits) - 1)] if visits else None)
            pw = compute.power(res, v.endpoint, day, n_per_arm, sim.scenario.seed) \
                if v.endpoint and day is not None and res.n_patients >= 2 else None
            self.doc.add_next_tick_callback(partial(self._show, g, res, sim, v, visits, day, pw, n_per_arm))
            if g == self.generation:
                dr = compute.dose_response(sim, v.endpoint, day)
                self.doc.add_next_tick_callback(partial(self._show_dose, g, sim, dr))
        except MscsimError as exc:
            self.doc.add_next_tick_callback(partial(self._fail, g, f"Not run: {exc}"))
        except Exception as exc:  # noqa: BLE001 - the page says what failed; the log keeps the traceback
            log.error("explorer run failed:\n%s", traceback.format_exc())
            self.doc.add_next_tick_callback(partial(self._fail, g, f"The run failed ({type(exc).__name__}: {exc}); "
                                                                   "the server keeps serving."))

    def _fail(self, g: int, text: str) -> None:
        if g == self.generation:
            self.message.text = _message("error", text)
            self.status.text = _message("info", "showing the last valid inputs")

    def _show(self, g, res, sim, v: compute.View, visits, day, pw, n_per_arm) -> None:
        if g != self.generation:
            return
        self.res, self.sim = res, sim
        t = v.t
        self.src["cells"].data = {"t": t, "total": v.cells["viable_total"]["median"],
                                  "total_lo": v.cells["viable_total"]["lo"], "total_hi": v.cells["viable_total"]["hi"],
                                  "site": v.cells["msc_target"]["median"], "site_lo": v.cells["msc_target"]["lo"],
                                  "site_hi": v.cells["msc_target"]["hi"]}
        tissue = {"t": t}
        for key in ("m1", "teff", "tnf"):
            d = v.tissue.get(key, {"treated": np.full_like(t, np.nan), "untreated": np.full_like(t, np.nan)})
            tissue[key], tissue[f"{key}_u"] = d["treated"], d["untreated"]
        self.src["tissue"].data = tissue
        nan = np.full_like(t, np.nan)
        e = v.endpoint_series
        self.src["endpoint"].data = {"t": t, "med": e.get("treated", {}).get("median", nan),
                                     "lo": e.get("treated", {}).get("lo", nan), "hi": e.get("treated", {}).get("hi", nan),
                                     "u_med": e.get("untreated", {}).get("median", nan),
                                     "u_lo": e.get("untreated", {}).get("lo", nan),
                                     "u_hi": e.get("untreated", {}).get("hi", nan)}
        self.plots["endpoint"].yaxis.axis_label = v.endpoint_label
        tb = v.table
        self.src["table"].data = {"label": list(tb.get("label", [])), "visit": list(tb.get("visit", [])),
                                  "statistic": list(tb.get("statistic", [])),
                                  "treated": list(tb.get("value_text", [])),
                                  "untreated": list(tb.get("untreated_text", []))}
        self.filling = True
        try:
            plot = [x for x in res.data.attrs.get("endpoint_plot", "").split(",") if x in res.data]
            self.w["endpoint"].options = [(x, display(x).label) for x in plot]
            self.w["endpoint"].value = v.endpoint or ""
            self.w["visit"].options = [f"{d:g}" for d in visits]
            self.w["visit"].value = f"{day:g}" if day is not None else ""
        finally:
            self.filling = False
        if pw is not None:
            self.power_div.text = (
                f"<div style='{_STYLE}'><b>Power</b> of a two-arm trial, {n_per_arm} patients per arm, treated vs "
                f"untreated on {display(v.endpoint).label} at day {day:g}: <b>{pct(pw['power'])}</b> "
                f"(95% CI {pct(pw['ci_low'])} to {pct(pw['ci_high'])}; {pw['replicates']} in-silico repeats drawn "
                f"from these {pw['pool']} virtual patients; {pw['test'].replace('_', ' ')} test"
                + (f", measurement error SD {fmt(pw['noise_sd'])}" if pw["noise_sd"] else "") +
                "). No placebo response: a full design is <code>mscsim trial</code>.</div>")
        else:
            self.power_div.text = f"<div style='{_STYLE}'>Power needs a disease and at least 2 patients.</div>"
        self.status.text = _message("ok", f"{v.n_patients} patient(s) run; dose-response next ...")

    def _show_dose(self, g, sim, dr) -> None:
        if g != self.generation:
            return
        self.plots["dose"].yaxis.axis_label = dr.attrs["label"]
        scale = 100.0 if str(dr["statistic"].iloc[0]).startswith("share") else 1.0
        self.src["dose"].data = {"dose": dr["dose"].to_numpy(), "med": dr["median"].to_numpy() * scale,
                                 "lo": (dr["q05"].fillna(dr["median"]) * scale).to_numpy(),
                                 "hi": (dr["q95"].fillna(dr["median"]) * scale).to_numpy(),
                                 "u_med": dr["untreated_median"].to_numpy() * scale}
        d = sim.scenario.regimen.dose
        self.dose_marker.location = float(d.cells if d.cells is not None else d.particles)
        self.status.text = _message("ok", "done")


def make_document(doc, initial: str, extra_sources: dict[str, str] | None = None) -> None:
    Explorer(doc, initial, extra_sources)
