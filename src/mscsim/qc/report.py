"""The self-contained HTML QC report: decision table, and per tube the gates and each marker's histogram
against its control with the threshold drawn (matplotlib PNGs embedded as base64), then the same histograms as
zoomable interactive plots (BokehJS embedded in the file, so it works offline)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.figure import Figure

from .decision import QCResult
from .fcs import asinh_transform
from .flow import ChannelResult, TubeResult
from .settings import flow_settings

MAX_PLOTTED_EVENTS = 20000  # scatter plots thin the events evenly above this (display only)
_STATUS_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "not_tested": "#9a6700", "untrusted": "#cf222e",
                   "informative": "#57606a"}


# Fixed margins (figure fractions) for the report's small figures: a solved ("constrained") layout measured every
# label on each figure and took most of a QC run's time; these figures' labels are of bounded length.
_FIXED_LAYOUT = {"left": 0.15, "right": 0.97, "bottom": 0.15, "top": 0.9}


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _hist(ax, values, bins, density: bool = False, **style) -> None:
    """A histogram drawn as one stepped artist (``ax.stairs``) rather than a patch per bar (``ax.hist``): the same
    picture, drawn several times faster, which is most of the time a QC report takes."""
    counts, edges = np.histogram(values, bins=bins, density=density)
    ax.stairs(counts, edges, **style)


def _thin(n: int) -> slice:
    return slice(None, None, max(1, n // MAX_PLOTTED_EVENTS))


def gate_figure(t: TubeResult) -> Figure:
    """Scatter (debris) gate, singlet gate and, when present, the viability-dye gate of one tube."""
    g = t.gated
    d = g.data
    panels = 3 if g.viability is not None else 2
    fig = Figure(figsize=(4.2 * panels, 3.6))
    axes = fig.subplots(1, panels, gridspec_kw=_FIXED_LAYOUT | {"left": 0.18 / panels, "right": 0.99, "wspace": 0.32, "top": 0.84})
    k = _thin(d.n_events)
    fsc, ssc = d.column(g.scatter.fsc)[k], d.column(g.scatter.ssc)[k]
    ins = g.in_scatter[k]
    ax = axes[0]
    ax.scatter(fsc[~ins], ssc[~ins], s=2, c="#bbbbbb", label="excluded", rasterized=True)
    ax.scatter(fsc[ins], ssc[ins], s=2, c="#0969da", label="cells", rasterized=True)
    for x in (g.scatter.fsc_min, g.scatter.fsc_max):
        if np.isfinite(x) and x > 0:
            ax.axvline(x, color="k", lw=1, ls="--")
    ax.set(xlabel=g.scatter.fsc, ylabel=g.scatter.ssc, xscale="log", yscale="log",
           title=f"Scatter gate ({'automatic' if g.scatter.automatic else 'from lot'})")
    ax.legend(loc="lower right", fontsize=7, markerscale=4)
    ax = axes[1]
    sub = g.in_scatter[k]
    if g.singlet.kind == "ratio":
        a, h = d.column(g.singlet.channels[0])[k][sub], d.column(g.singlet.channels[1])[k][sub]
        keep = g.in_singlet[k][sub]
        ax.scatter(a[~keep], h[~keep], s=2, c="#bbbbbb", rasterized=True)
        ax.scatter(a[keep], h[keep], s=2, c="#0969da", rasterized=True)
        xs = np.linspace(max(a.min(), 1.0), a.max(), 50)
        for r in (g.singlet.low, g.singlet.high):
            if r > 0:
                ax.plot(xs, xs / r, "k--", lw=1)
        ax.set(xlabel=g.singlet.channels[0], ylabel=g.singlet.channels[1], title="Singlet gate (A/H ratio)")
    elif g.singlet.kind == "width":
        w = d.column(g.singlet.channels[0])[k][sub]
        _hist(ax, w, 120, fill=True, color="#0969da")
        for x in (g.singlet.low, g.singlet.high):
            ax.axvline(x, color="k", lw=1, ls="--")
        ax.set(xlabel=g.singlet.channels[0], ylabel="events", title="Singlet gate (width)")
    else:
        ax.text(0.5, 0.5, "no FSC height or width channel:\nsinglet gate not applied", ha="center", va="center")
        ax.set_axis_off()
    if g.viability is not None:
        c = flow_settings().asinh_cofactor
        v = asinh_transform(d.column(g.viability.channel)[g.in_singlet], c)
        ax = axes[2]
        _hist(ax, v, 120, fill=True, color="#8250df")
        ax.axvline(float(asinh_transform(g.viability.threshold, c)), color="k", lw=1, ls="--")
        ax.set(xlabel=f"asinh({g.viability.channel} / {c:g})", ylabel="singlets",
               title=f"Viability dye: {100 * (t.viable_fraction or 0):.1f}% viable")
    fig.suptitle(f"{t.name}: {t.file.name}", fontsize=10)
    return fig


def marker_figure(c: ChannelResult) -> Figure:
    """Stained vs control histogram (asinh scale) with the threshold and % positive."""
    cof = flow_settings().asinh_cofactor
    fig = Figure(figsize=(4.6, 3.2))
    ax = fig.subplots(gridspec_kw=_FIXED_LAYOUT)
    s = asinh_transform(c.stained_values, cof)
    parts = [s] + ([asinh_transform(c.control_values, cof)] if c.control_values is not None else [])
    lo, hi = min(p.min() for p in parts), max(p.max() for p in parts)
    bins = np.linspace(lo, hi, 120)
    if c.control_values is not None:
        _hist(ax, parts[1], bins, density=True, fill=True, color="#999999", alpha=0.6, label=c.threshold_source)
    _hist(ax, s, bins, density=True, lw=1.5, color="#cf222e", label="stained")
    ax.axvline(float(asinh_transform(c.threshold, cof)), color="k", ls="--", lw=1, label="threshold")
    ax.set(xlabel=f"asinh({c.channel} / {cof:g})", ylabel="density",
           title=f"{'/'.join(c.markers)} ({c.tube}): {c.percent_positive:.1f}% positive")
    ax.legend(fontsize=7)
    return fig


def _img(fig: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def render_html(result: QCResult, data: dict) -> str:
    """The whole report as one HTML string (no external files)."""
    e = html.escape
    lot = result.lot
    verdict = data["decision"]
    colour = _STATUS_COLOURS["pass" if result.released else "fail"]
    rows = "".join(
        f"<tr><td>{e(c.label)}</td><td>{e(c.measured_text())}</td><td>{e(c.limit)}</td>"
        f"<td style='color:{_STATUS_COLOURS[c.status]};font-weight:bold'>{e(c.status.replace('_', ' '))}</td>"
        f"<td>{e(', '.join(c.source))}</td><td class='small'>{e(c.detail)}</td></tr>" for c in result.criteria)
    failed = "".join(f"<li>{e(f)}</li>" for f in result.failed) or "<li>none</li>"
    fields = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in data["product_fields"].items())
    flow_html = ""
    live: dict[str, object] = {}
    if result.flow is not None:
        for t, td in zip(result.flow.tubes, data["flow"]["tubes"]):
            problem = (f"<p class='bad'>Analysis cannot be trusted: {e(t.problem)}. The lot is not released on "
                       "this tube.</p>") if t.problem else ""
            if t.gated is None:
                flow_html += f"<h3>Tube {e(t.name)}</h3><p class='small'>{e(str(t.file))}</p>{problem}"
                continue
            counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in td["counts"].items())
            comp = td["compensation"] or "none (no spillover matrix applied)"
            warn = "".join(f"<p class='warn'>{e(w)}</p>" for w in td["warnings"])
            markers = "".join(_img(marker_figure(c), f"{c.channel} histogram") for c in t.channels
                              if c.percent_positive is not None and c.stained_values.size)
            from ..report.interactive import qc_marker

            for c in t.channels:
                if c.percent_positive is None or not c.stained_values.size:
                    continue
                live[f"{'/'.join(c.markers)} ({c.tube}) against its {c.threshold_source}"] = \
                    qc_marker(c, flow_settings().asinh_cofactor)
            flow_html += (f"<h3>Tube {e(t.name)}</h3><p class='small'>{e(str(t.file))} (FCS {e(td['fcs_version'])}); "
                          f"compensation: {e(comp)}; {e(counts)}</p>{problem}{warn}"
                          f"{_img(gate_figure(t), 'gates')}<div>{markers}</div>")
    else:
        flow_html = "<p>No flow cytometry in the lot record.</p>"
    refs = "".join(f"<li>[{e(k)}] {e(v)}</li>" for k, v in data["citations"].items())
    from ..report.interactive import page as interactive_page

    live_html = interactive_page({e(k): v for k, v in live.items()})
    if live_html:
        live_html = ("<h2>Interactive marker histograms</h2><p class='small'>The same histograms, zoomable (BokehJS "
                     "is embedded in this file: it works offline).</p><div class='grid'>" + live_html + "</div>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>QC report {e(lot.lot_id)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#1f2328}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #d0d7de;padding:4px 8px;text-align:left;
vertical-align:top}}.small{{font-size:85%;color:#57606a}}.warn{{color:#9a6700}}.bad{{color:#cf222e;font-weight:bold}}
img{{max-width:100%}}
.grid{{display:flex;flex-wrap:wrap;gap:8px}}figure.interactive{{margin:0}}figcaption{{font-size:80%;color:#57606a}}</style></head>
<body><h1>QC report: lot {e(lot.lot_id)}</h1>
<p>Source {e(lot.source)}; cryo state {e(lot.cryo_state)}; specification <b>{e(result.spec.name)}</b>
{e('(' + result.spec.title + ')') if result.spec.title else ''}; mscsim {e(data['mscsim_version'])};
lot file {e(str(data['lot_file']))}</p>
<h2 style="color:{colour}">Decision: {e(verdict)}</h2>
<h3>Blocking criteria</h3><ul>{failed}</ul>
<h2>Criteria</h2><table><tr><th>criterion</th><th>measured</th><th>limit</th><th>result</th><th>source</th>
<th>how measured</th></tr>{rows}</table>
<h2>What goes to simulation</h2><table>{fields}</table>
<h2>Flow cytometry</h2>{flow_html}
{live_html}
<h2>References</h2><ul>{refs}</ul>
<p class="small">{e(data['disclaimer'])}</p></body></html>
"""
