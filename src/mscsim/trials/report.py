"""The virtual-trial report: forest plot of differences vs control (with the published numbers beside them),
time course per endpoint, the published-vs-simulated table (also as GitHub markdown), and one self-contained
HTML file that carries the design, every table, the figures (PNG as base64) and the citations."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from ..errors import InputError  # noqa: E402

SUMMARY_COLUMNS = ("arm", "endpoint", "visit_day", "kind", "n", "mean", "sd", "mean_change", "sd_change",
                   "ci_low", "ci_high")
COMPARISON_COLUMNS = ("arm", "control", "endpoint", "visit_day", "estimate", "ci_low", "ci_high", "p_value", "test",
                      "n_arm", "n_control")
PUBLISHED_COLUMNS = ("endpoint", "visit_day", "arm", "quantity", "published", "published_ci_low",
                     "published_ci_high", "simulated", "simulated_ci_low", "simulated_ci_high", "source", "agrees",
                     "note")
SAFETY_COLUMNS = ("arm", "event", "n", "events", "rate", "ci_low", "ci_high")
POWER_COLUMNS = ("endpoint", "visit_day", "arm", "n_per_arm", "power", "ci_low", "ci_high")
TABLE_COLUMNS = ("endpoint", "visit", "arm", "quantity", "published", "simulated", "interval", "source", "agrees")
# shown when the design's own disclaimer does not already say it
DEFAULT_DISCLAIMER = "mscsim is a research tool, never medical advice."
_DASH = "–"
_IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_SIM_COLOUR, _PUB_COLOUR = "#0969da", "#cf222e"


# ---------------------------------------------------------------- small helpers

def _frame(df: pd.DataFrame | None, columns: Sequence[str], name: str) -> pd.DataFrame:
    """The table itself, or an empty one with the right columns; a non-empty table must hold every column."""
    if df is None or len(df) == 0:
        return pd.DataFrame(columns=list(columns))
    if not isinstance(df, pd.DataFrame):
        raise InputError(name, type(df).__name__, "a pandas DataFrame")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(name, f"missing columns {missing}", f"a table with columns {list(columns)}")
    return df.reset_index(drop=True)


def _isnan(x: object) -> bool:
    try:
        return x is None or bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _num(x: object) -> str:
    """A number with about three significant digits, no exponent for ordinary clinical magnitudes."""
    if _isnan(x):
        return _DASH
    v = float(x)
    a = abs(v)
    if a >= 100 or a == 0:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.001:
        return f"{v:.3f}"
    return f"{v:.2g}"


def _count(x: object) -> str:
    """A number of patients or events: a whole number, never '12.0'."""
    return _DASH if _isnan(x) else f"{int(round(float(x))):,}"


def _pct(x: object) -> str:
    return _DASH if _isnan(x) else f"{100 * float(x):.1f}%"


def _with_ci(value: object, low: object, high: object, fmt=_num) -> str:
    """``12.3 (8.10 to 16.5)``, or the value alone when the interval is missing."""
    if _isnan(value):
        return _DASH
    if _isnan(low) or _isnan(high):
        return fmt(value)
    return f"{fmt(value)} ({fmt(low)} to {fmt(high)})"


def _interval(low: object, high: object, fmt=_num) -> str:
    return _DASH if _isnan(low) or _isnan(high) else f"{fmt(low)} to {fmt(high)}"


def _pvalue(p: object) -> str:
    if _isnan(p):
        return _DASH
    return "<0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def _day(v: object) -> str:
    if _isnan(v):
        return _DASH
    f = float(v)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def _yes_no(v: object) -> str:
    return "n/a" if _isnan(v) else ("yes" if bool(v) else "no")


def _endpoint_label(meta: Mapping, endpoint: str) -> str:
    return str((meta.get("endpoint_labels") or {}).get(endpoint, endpoint))


def _label_parts(meta: Mapping, endpoint: str) -> tuple[str, str]:
    """The endpoint's label split from a trailing ``(units)``: 'VAS (mm)' -> ('VAS', '(mm)'); no units: ''."""
    label = _endpoint_label(meta, endpoint)
    if label.endswith(")") and " (" in label:
        return label[:label.rindex(" (")], label[label.rindex(" (") + 1:]
    return label, ""


def _short_label(meta: Mapping, endpoint: str) -> str:
    """The endpoint's label without a trailing ``(units)``: 'VAS (mm)' -> 'VAS'."""
    return _label_parts(meta, endpoint)[0]


def _arm_labels(meta: Mapping) -> dict[str, str]:
    return {str(a.get("name")): str(a.get("label") or a.get("name")) for a in meta.get("arms") or []}


def _arm_order(meta: Mapping, arms: Sequence[object]) -> list[str]:
    """Arms in the design's order, then any others in order of appearance."""
    present = list(dict.fromkeys(str(a) for a in arms))
    design = [a for a in _arm_labels(meta) if a in present]
    return design + [a for a in present if a not in design]


def _finish(fig, path: str | Path) -> Path:
    """Save the figure at ``path``; a PNG gets its SVG and PDF beside it (for slides and print)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    if path.suffix.lower() == ".png":
        for suffix in (".svg", ".pdf"):
            fig.savefig(path.with_suffix(suffix))
    plt.close(fig)
    return path


def _empty_figure(path: str | Path, message: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 2.5), constrained_layout=True)
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    return _finish(fig, path)


# ---------------------------------------------------------------- figures

def _published_difference(pub: pd.DataFrame, row: pd.Series, several_controls: bool) -> pd.Series | None:
    """The published difference for one comparison row (same endpoint, visit and arm; when the arm has
    several controls at that visit, the quantity must name the control)."""
    if pub.empty:
        return None
    same = pub[(pub["endpoint"].astype(str) == str(row["endpoint"]))
               & (pub["visit_day"].astype(float) == float(row["visit_day"]))
               & (pub["arm"].astype(str) == str(row["arm"]))
               & pub["quantity"].astype(str).str.contains("difference", case=False)
               & pub["published"].notna()]
    if several_controls:
        same = same[same["quantity"].astype(str).str.contains(str(row["control"]), regex=False)]
    return None if same.empty else same.iloc[0]


def forest_plot(comparisons: pd.DataFrame, published: pd.DataFrame | None, meta: Mapping,
                path: str | Path) -> Path:
    """Differences vs control with their 95% CIs, one row per endpoint/visit/arm and one panel per endpoint
    (each endpoint keeps its own units); the published difference, where there is one, as a red diamond."""
    comp = _frame(comparisons, COMPARISON_COLUMNS, "comparisons")
    pub = _frame(published, PUBLISHED_COLUMNS, "published")
    if comp.empty:
        return _empty_figure(path, "no comparisons vs control")
    better = meta.get("better") or {}
    arms = _arm_order(meta, comp["arm"])
    endpoints = list(dict.fromkeys(comp["endpoint"].astype(str)))
    comp = comp.assign(_ep=pd.Categorical(comp["endpoint"].astype(str), endpoints),
                       _arm=pd.Categorical(comp["arm"].astype(str), arms),
                       _day=comp["visit_day"].astype(float))
    comp = comp.sort_values(["_ep", "_day", "_arm"], kind="stable")
    key_counts = comp.groupby(["_ep", "_day", "_arm"], observed=True)["control"].transform("size")
    panels = [(ep, comp[comp["_ep"] == ep]) for ep in endpoints]
    n_rows = len(comp)
    font = 9 if n_rows <= 15 else 8
    heights = [0.9 + 0.38 * len(rows) for _, rows in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.5, 0.8 + sum(heights)), height_ratios=heights,
                             constrained_layout=True, squeeze=False)
    drew_published = drew_band = False
    for ax, (ep, rows) in zip(axes[:, 0], panels):
        ys = np.arange(len(rows))[::-1].astype(float)
        labels = []
        names = _arm_labels(meta)
        for y, (_, r) in zip(ys, rows.iterrows()):
            labels.append(f"day {_day(r['visit_day'])}: {names.get(str(r['arm']), r['arm'])} vs "
                          f"{names.get(str(r['control']), r['control'])}")
            if "param_low90" in r and not (_isnan(r["param_low90"]) or _isnan(r["param_high90"])):
                ax.plot([r["param_low90"], r["param_high90"]], [y, y], color=_SIM_COLOUR, lw=9, alpha=0.2,
                        solid_capstyle="butt")
                drew_band = True
            if not (_isnan(r["ci_low"]) or _isnan(r["ci_high"])):
                ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=_SIM_COLOUR, lw=2, solid_capstyle="butt")
            ax.plot([r["estimate"]], [y], "o", color=_SIM_COLOUR, ms=6)
            p = _published_difference(pub, r, bool(key_counts[r.name] > 1))
            if p is not None:
                yp = y - 0.25
                if not (_isnan(p["published_ci_low"]) or _isnan(p["published_ci_high"])):
                    ax.plot([p["published_ci_low"], p["published_ci_high"]], [yp, yp], color=_PUB_COLOUR,
                            lw=1.3, ls="--")
                ax.plot([p["published"]], [yp], "D", color=_PUB_COLOUR, ms=6, mfc="white", mew=1.6)
                drew_published = True
        ax.axvline(0, color="#57606a", lw=0.9)
        ax.set_yticks(ys, labels, fontsize=font)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.grid(axis="x", color="#eaeef2")
        direction = {"lower": "; lower favours the arm", "higher": "; higher favours the arm"}.get(
            str(better.get(ep, "")), "")
        ax.set_xlabel(f"difference against control{direction}", fontsize=font)
        ax.set_title(_endpoint_label(meta, ep), fontsize=10, loc="left")
    handles = [plt.Line2D([], [], color=_SIM_COLOUR, marker="o", lw=2, label="simulated (95% CI)")]
    if drew_band:
        handles.append(plt.Line2D([], [], color=_SIM_COLOUR, lw=9, alpha=0.2,
                                  label="parameter uncertainty (90% of draws)"))
    if drew_published:
        handles.append(plt.Line2D([], [], color=_PUB_COLOUR, marker="D", mfc="white", ls="--",
                                  label="published (95% CI where reported)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{meta.get('title') or meta.get('name') or 'virtual trial'}: differences vs control", fontsize=11)
    return _finish(fig, path)


def _mean_ci(r: pd.Series) -> tuple[float, float]:
    """95% CI of the mean of one summary row: the given CI for binary rows and where it is of the mean;
    else (it is of the change from baseline) the t interval of the mean from sd and n."""
    if r["kind"] == "binary" or _isnan(r["mean_change"]):
        return float(r["ci_low"]), float(r["ci_high"])
    n, sd = float(r["n"]), float(r["sd"])
    if _isnan(sd) or not n > 1:
        return math.nan, math.nan
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return float(r["mean"]) - half, float(r["mean"]) + half


def timecourse_plot(summary: pd.DataFrame, meta: Mapping, path: str | Path) -> Path:
    """One panel per endpoint: mean (binary: % of patients) against visit day, one line per arm with its
    95% CI as a band (error bars for a single visit); baseline (day 0) is drawn when the summary has it."""
    s = _frame(summary, SUMMARY_COLUMNS, "summary")
    s = s[s["mean"].notna()]
    if s.empty:
        return _empty_figure(path, "no summary statistics")
    kinds = set(s["kind"].astype(str))
    if not kinds <= {"continuous", "binary"}:
        raise InputError("summary.kind", sorted(kinds - {"continuous", "binary"}), "'continuous' or 'binary'")
    rates = s.loc[s["kind"] == "binary", "mean"].astype(float)
    if ((rates < 0) | (rates > 1)).any():
        raise InputError("summary.mean", float(rates[(rates < 0) | (rates > 1)].iloc[0]),
                         "a rate between 0 and 1 for binary endpoints")
    arm_label = _arm_labels(meta)
    arms = _arm_order(meta, s["arm"])
    colours = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(arms)}
    endpoints = list(dict.fromkeys(s["endpoint"].astype(str)))
    primary = (meta.get("primary") or {}).get("endpoint")
    ncols = 1 if len(endpoints) == 1 else 2
    nrows = math.ceil(len(endpoints) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.9 * nrows + 0.6), constrained_layout=True,
                             squeeze=False)
    for ax in axes.ravel()[len(endpoints):]:
        ax.set_axis_off()
    banded = False
    days = sorted(s["visit_day"].astype(float).unique())  # every panel on the same days, from day 0
    lo = min(0.0, days[0])
    pad = 0.03 * max(days[-1] - lo, 1.0)
    for ax, ep in zip(axes.ravel(), endpoints):
        rows = s[s["endpoint"].astype(str) == ep]
        binary = (rows["kind"] == "binary").all()
        scale = 100.0 if binary else 1.0
        for arm in arms:
            d = rows[rows["arm"].astype(str) == arm].sort_values("visit_day")
            if d.empty:
                continue
            x = d["visit_day"].astype(float).to_numpy()
            xv = x  # the visits (the parameter bands are of the visits, not of the baseline)
            y = d["mean"].astype(float).to_numpy() * scale
            ci = np.array([_mean_ci(r) for _, r in d.iterrows()], dtype=float).reshape(-1, 2) * scale
            if not binary and d["mean_change"].notna().any():  # the baseline, day 0: mean minus mean change
                base = float((d["mean"] - d["mean_change"]).astype(float).dropna().iloc[0])
                x, y, ci = np.r_[0.0, x], np.r_[base, y], np.vstack([[base, base], ci])
            c = colours[arm]
            if "param_mean_low90" in d and d["param_mean_low90"].notna().any():
                plo = d["param_mean_low90"].astype(float).to_numpy() * scale
                phi = d["param_mean_high90"].astype(float).to_numpy() * scale
                if len(xv) == 1:
                    ax.plot([xv[0], xv[0]], [plo[0], phi[0]], color=c, lw=8, alpha=0.15)
                else:
                    ax.fill_between(xv, plo, phi, facecolor="none", edgecolor=c, hatch="///", alpha=0.35, lw=0)
                banded = True
            if len(x) == 1:
                err = np.abs(np.nan_to_num(np.array([[y[0] - ci[0, 0]], [ci[0, 1] - y[0]]])))
                ax.errorbar(x, y, yerr=err, fmt="o", color=c, capsize=4)
            else:
                ax.plot(x, y, "o-", color=c, ms=4)
                ax.fill_between(x, ci[:, 0], ci[:, 1], color=c, alpha=0.15, lw=0)
        if len(days) <= 10:
            ticks = sorted({0.0, *days})
            ax.set_xticks(ticks, ["baseline" if v == 0 else _day(v) for v in ticks])
        ax.set_xlim(lo - pad, days[-1] + pad)
        ax.grid(color="#eaeef2")
        ax.set_xlabel("visit day")
        label = _endpoint_label(meta, ep)
        # the panel's title names the endpoint; the axis says what is plotted, short enough not to run into the
        # next panel: '% of patients', or 'mean' with the endpoint's units ('mean (mm)')
        ax.set_ylabel("% of patients" if binary else f"mean {_label_parts(meta, ep)[1]}".strip())
        ax.set_title(label + ("  (primary)" if ep == primary else ""), fontsize=10, loc="left")
    handles = [plt.Line2D([], [], color=colours[a], marker="o", label=arm_label.get(a, a)) for a in arms]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               title="arm (band: 95% CI of the mean or rate" + ("; hatched: 90% of parameter draws)" if banded
                                                                    else ")"), title_fontsize=8)
    fig.suptitle(f"{meta.get('title') or meta.get('name') or 'virtual trial'}: endpoints over time", fontsize=11)
    return _finish(fig, path)


# ---------------------------------------------------------------- published vs simulated table

RESPONSE_COLUMNS = ("arm", "response", "visit_day", "n", "complete", "partial", "overall")


def response_table(summary: pd.DataFrame, parts: Mapping[str, tuple[str, str]]) -> pd.DataFrame:
    """Per arm and response, the complete, partial and overall (complete or partial) response rates, as GVHD
    trials report them; ``parts`` maps each response's 0/1 parts to (response, category) (observe.response_parts)."""
    responses = list(dict.fromkeys(r for r, _ in parts.values()))
    if summary is None or summary.empty or not responses:
        return pd.DataFrame(columns=RESPONSE_COLUMNS)
    s = summary.set_index(["arm", "endpoint"])
    rows = []
    for arm in dict.fromkeys(summary["arm"].astype(str)):
        for r in responses:
            if (arm, r) not in s.index:
                continue
            rate = {ep: float(s.loc[(arm, ep), "mean"]) if (arm, ep) in s.index else math.nan
                    for ep in (r, f"{r}_complete", f"{r}_partial")}
            rows.append({"arm": arm, "response": r, "visit_day": float(s.loc[(arm, r), "visit_day"]),
                         "n": int(s.loc[(arm, r), "n"]), "complete": rate[f"{r}_complete"],
                         "partial": rate[f"{r}_partial"], "overall": rate[r]})
    return pd.DataFrame(rows, columns=RESPONSE_COLUMNS)


def _responses_html(meta: Mapping) -> str:
    """The response section: complete, partial and overall rates per arm (``meta['responses']``, rows of
    response_table) and the screening at baseline (``meta['screening']``); empty when the design has neither."""
    e = html.escape
    rows = meta.get("responses") or []
    screening = [r for r in meta.get("screening") or [] if r.get("screen_failures")]
    if not rows and not screening:
        return ""
    from ..display import display

    arm_label = _arm_labels(meta)
    table = _table(["arm", "response", "n", "complete", "partial", "overall (complete or partial)"],
                   [[arm_label.get(str(r["arm"]), str(r["arm"])), display(r["response"]).label, r["n"],
                     f"{r['complete']:.0%}", f"{r['partial']:.0%}", f"{r['overall']:.0%}"] for r in rows])
    screened = "".join(f"<li>{e(arm_label.get(str(r['arm']), str(r['arm'])))}: {r['screen_failures']} of "
                       f"{r['screened']} simulated patients failed the inclusion at baseline; {r['in_trial']} of "
                       f"{r['asked']} enrolled</li>" for r in screening)
    return ("<h2>Response by arm</h2><p class='small'>In this one virtual trial; each response's complete and partial "
            f"responses add up to its overall rate.</p>{table}"
            + (f"<p class='small'>Screening (patients whose disease is inactive at baseline are not enrolled and are "
               f"replaced by the next draw):</p><ul>{screened}</ul>" if screened else ""))


def comparison_table(published: pd.DataFrame | None) -> pd.DataFrame:
    """The published-vs-simulated rows as display strings: endpoint, visit, arm, quantity, published (with
    CI), simulated (with interval), source, agrees (yes/no)."""
    pub = _frame(published, PUBLISHED_COLUMNS, "published")
    rows = [{"endpoint": str(r["endpoint"]),
             "visit": f"day {_day(r['visit_day'])}",
             "arm": str(r["arm"]),
             "quantity": str(r["quantity"]),
             "published": _with_ci(r["published"], r["published_ci_low"], r["published_ci_high"]),
             "simulated": _with_ci(r["simulated"], r["simulated_ci_low"], r["simulated_ci_high"]),
             "interval": "" if _isnan(r.get("simulated_interval", np.nan)) else str(r["simulated_interval"]),
             "source": ", ".join(map(str, r["source"])) if isinstance(r["source"], (list, tuple))
             else ("" if _isnan(r["source"]) else str(r["source"])),
             "agrees": _yes_no(r["agrees"])} for _, r in pub.iterrows()]
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    if "param_median" in pub.columns and len(pub):  # bands from parameter uncertainty
        table.insert(6, "parameter uncertainty (90%)",
                     [_with_ci(r["param_median"], r["param_low90"], r["param_high90"]) for _, r in pub.iterrows()])
        table["with parameter uncertainty (95%)"] = [_interval(r["predictive_low95"], r["predictive_high95"])
                                                     for _, r in pub.iterrows()]
        table["agrees (with parameters)"] = [_yes_no(v) for v in pub["agrees_with_uncertainty"]]
    if "new_trial_low95" in pub.columns and len(pub):  # a posterior with between-trial SDs
        table["as a new trial (95%)"] = [_interval(r["new_trial_low95"], r["new_trial_high95"])
                                         for _, r in pub.iterrows()]
        table["agrees (as a new trial)"] = [_yes_no(v) for v in pub["agrees_as_new_trial"]]
    return table


def _md_cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def comparison_markdown(published: pd.DataFrame | None) -> str:
    """comparison_table as a GitHub-markdown table (header and separator even when there are no rows)."""
    table = comparison_table(published)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- HTML

_CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}.small{font-size:85%;color:#57606a}img{max-width:100%}
.disclaimer{border:2px solid #9a6700;background:#fff8c5;padding:.6em 1em;font-weight:bold}
tr.disagree td{background:#ffebe9}td.no{color:#cf222e;font-weight:bold}td.yes{color:#1a7f37}
figure{margin:1.5em 0}figcaption{font-size:90%;color:#57606a}"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], row_classes: Sequence[str] | None = None,
           empty: str = "none") -> str:
    """An HTML table; every cell is escaped. A cell may be (text, css class)."""
    e = html.escape
    if not rows:
        return f"<p class='small'>{e(empty)}</p>"
    head = "".join(f"<th>{e(str(h))}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes else ""
        cells = "".join(f"<td class='{e(c[1])}'>{e(str(c[0]))}</td>" if isinstance(c, tuple)
                        else f"<td>{e(str(c))}</td>" for c in row)
        body.append(f"<tr class='{e(cls)}'>{cells}</tr>" if cls else f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _embed(name: str, path: str | Path) -> str:
    path = Path(path)
    mime = _IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise InputError(f"figures[{name!r}]", str(path), f"an image file ending in {sorted(_IMAGE_TYPES)}")
    if not path.is_file():
        raise InputError(f"figures[{name!r}]", str(path), "an existing image file")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    e = html.escape
    return (f"<figure><img alt='{e(name)}' src='data:{mime};base64,{data}'>"
            f"<figcaption>{e(name)}</figcaption></figure>")


def _source_text(src: object) -> str:
    if isinstance(src, (list, tuple)):
        return ", ".join(map(str, src))
    return "" if _isnan(src) else str(src)


def write_html_report(path: str | Path, meta: Mapping, summary: pd.DataFrame | None,
                      comparisons: pd.DataFrame | None, published: pd.DataFrame | None,
                      safety: pd.DataFrame | None, power: pd.DataFrame | None,
                      figures: Mapping[str, str | Path], responders: pd.DataFrame | None = None,
                      interactive: Mapping[str, object] | None = None) -> Path:
    """Write the whole virtual-trial report as one HTML file, readable offline (PNG figures as base64, the
    interactive plots' BokehJS inline, plain CSS, no external resources): disclaimer, what was run, the answer
    (primary endpoint, published vs simulated), the figures (interactive, then static for slides), then the
    tables (summary, comparisons, power, who responds, safety), fitted parameters and citations."""
    if not isinstance(meta, Mapping):
        raise InputError("meta", type(meta).__name__, "a dict with name, title, arms, primary, ...")
    e = html.escape
    summ = _frame(summary, SUMMARY_COLUMNS, "summary")
    comp = _frame(comparisons, COMPARISON_COLUMNS, "comparisons")
    pub = _frame(published, PUBLISHED_COLUMNS, "published")
    saf = _frame(safety, SAFETY_COLUMNS, "safety")
    arm_label = _arm_labels(meta)
    title = str(meta.get("title") or meta.get("name") or "virtual trial")

    disclaimer = str(meta.get("disclaimer") or "").strip()
    if "medical advice" not in disclaimer.lower():
        disclaimer = f"{DEFAULT_DISCLAIMER} {disclaimer}".strip()

    primary = meta.get("primary") or {}
    primary_text = "not stated"
    if primary.get("endpoint") is not None:
        label, day = _endpoint_label(meta, str(primary.get("endpoint"))), _day(primary.get("visit_day"))
        primary_text = label if f"day {day}" in label or f"day-{day}" in label else f"{label} at day {day}"
    design = _table(["field", "value"], [
        ["design name", meta.get("name", "")],
        ["design file", meta.get("design_file", "")],
        ["patients", _count(meta.get("n_patients"))],
        ["primary endpoint", primary_text],
        ["seed", meta.get("seed", "")],
        ["mscsim version", meta.get("mscsim_version", "")],
    ])
    arms = _table(["arm", "label", "patients"],
                  [[a.get("name", ""), a.get("label", ""), _count(a.get("n"))] for a in meta.get("arms") or []],
                  empty="no arms listed")

    table = comparison_table(pub)
    if len(table):  # readable names in the page (the CSV and markdown keep the design's own names)
        table["endpoint"] = [_short_label(meta, x) for x in table["endpoint"]]
        table["arm"] = [arm_label.get(x, x) for x in table["arm"]]
    notes = [str(n) if not _isnan(n) else "" for n in pub["note"]]
    pub_rows = [[(v, v) if c.startswith("agrees") and v in ("yes", "no") else v for c, v in zip(table.columns, r)]
                + [n] for r, n in zip(table.itertuples(index=False), notes)]
    pub_html = _table(list(table.columns) + ["note"], pub_rows,
                      ["disagree" if r.agrees == "no" else "" for r in table.itertuples(index=False)],
                      empty="No published numbers to compare with for this design.")
    n_dis = int((table["agrees"] == "no").sum())
    pub_lead = (f"<p>{len(table)} published number(s); {n_dis} outside the simulated interval "
                f"(highlighted). 'Simulated' is the value over the whole virtual pool and its interval the 95% range "
                f"of the result across in-silico repeats of the trial at the published size (a prediction interval: "
                f"what running this trial again would show), or, without repeats, the one simulated trial's 95% "
                f"confidence interval; the 'interval' column says which.</p>" if len(table) else "")
    if "parameter uncertainty (90%)" in table.columns:
        pub_lead += ("<p>Bands from parameter uncertainty keep apart the three sources of spread: 'parameter "
                     "uncertainty (90%)' is the statistic over each parameter draw's pool of virtual patients, across "
                     "draws (median and 90% interval; the same patients in every draw); 'with parameter uncertainty "
                     "(95%)' repeats the trial at its published size from every draw's pool (parameters and "
                     "trial-repeat sampling together); the simulated interval is trial-repeat sampling at the "
                     "nominal parameters; between-patient ranges are in the summary by arm.</p>")
    if "as a new trial (95%)" in table.columns:
        pub_lead += ("<p>'As a new trial (95%)' runs the same repeats as new trials, each with its own common response "
                     "and cells' effect drawn at the posterior's between-trial SDs: what a new trial of this design "
                     "could report, wider than what the calibrated model expects of this one.</p>")

    summ_rows = []
    for _, r in summ.iterrows():
        binary = r["kind"] == "binary"
        f = _pct if binary else _num
        ci_of = "rate" if binary else ("mean" if _isnan(r["mean_change"]) else "change from baseline")
        summ_rows.append([arm_label.get(str(r["arm"]), r["arm"]), _endpoint_label(meta, str(r["endpoint"])),
                          _day(r["visit_day"]), r["kind"], _count(r["n"]), f(r["mean"]),
                          _DASH if binary else _num(r["sd"]), _DASH if binary else _num(r["mean_change"]),
                          _DASH if binary else _num(r["sd_change"]),
                          _interval(r["ci_low"], r["ci_high"], f), ci_of]
                         + ([_with_ci(r["param_median"], r["param_low90"], r["param_high90"], f),
                             _interval(r["patients_low90"], r["patients_high90"])] if "param_median" in summ else []))
    band_heads = ["parameter uncertainty (90%) of the same", "between patients (90%)"] if "param_median" in summ else []
    summ_html = _table(["arm", "endpoint", "day", "kind", "n", "mean or rate", "sd", "mean change", "sd change",
                        "95% CI", "CI of", *band_heads], summ_rows, empty="No summary statistics.")

    comp_html = _table(
        ["endpoint", "day", "arm", "control", "difference (95% CI)", "p", "test", "n arm", "n control"]
        + (["difference, parameter uncertainty (90%)"] if "param_median" in comp else []),
        [[_endpoint_label(meta, str(r["endpoint"])), _day(r["visit_day"]), arm_label.get(str(r["arm"]), r["arm"]),
          arm_label.get(str(r["control"]), r["control"]), _with_ci(r["estimate"], r["ci_low"], r["ci_high"]),
          _pvalue(r["p_value"]), r["test"], _count(r["n_arm"]), _count(r["n_control"])]
         + ([_with_ci(r["param_median"], r["param_low90"], r["param_high90"])] if "param_median" in comp else [])
         for _, r in comp.iterrows()],
        empty="No comparisons vs control.")

    power_html = ""
    if power is not None:
        pw = _frame(power, POWER_COLUMNS, "power")
        power_html = "<h2>Power</h2>" + _table(
            ["endpoint", "day", "arm", "patients per arm", "power (95% CI)"],
            [[_endpoint_label(meta, str(r["endpoint"])), _day(r["visit_day"]),
              arm_label.get(str(r["arm"]), r["arm"]), _count(r["n_per_arm"]),
              _with_ci(r["power"], r["ci_low"], r["ci_high"], _pct)] for _, r in pw.iterrows()],
            empty="No power estimates.")

    safety_html = _table(
        ["arm", "event", "patients", "events", "rate (95% CI)"],
        [[arm_label.get(str(r["arm"]), r["arm"]), r["event"], _count(r["n"]), _count(r["events"]),
          _with_ci(r["rate"], r["ci_low"], r["ci_high"], _pct)] for _, r in saf.iterrows()],
        empty="No safety events simulated for this design.")

    responders_html = ""
    if responders is not None and len(responders):
        parts = []
        for arm, block in responders.groupby("arm", sort=False):
            first = block.iloc[0]
            rate = first["measure"] == "rate"
            f = _pct if rate else _num
            parts.append(f"<h3>{e(arm_label.get(str(arm), str(arm)))}: {e(str(first['measure']))} of "
                         f"{e(_endpoint_label(meta, str(first['endpoint'])))} at day {_day(first['visit_day'])}</h3>")
            parts.append(_table(["covariate", "subgroup", "patients", f"{first['measure']} (95% CI)"],
                                [[r["covariate"], r["subgroup"], _count(r["n"]),
                                  _with_ci(r["mean"], r["ci_low"], r["ci_high"], f)] for _, r in block.iterrows()]))
        responders_html = ("<h2>Who responds (virtual cohort)</h2><p class='small'>The primary outcome by subgroup of "
                           "every covariate (continuous ones in thirds), over every simulated patient of the arm "
                           "(the power pool included). Outcomes are a distribution over patients (B18): the "
                           "covariates that move them say who responds, and why.</p>" + "".join(parts))

    fitted = "".join(
        f"<li><b>{e(str(f.get('parameter', '')))}</b> fitted to {e(str(f.get('fitted_to', '')))}"
        f"{' [' + e(_source_text(f.get('source'))) + ']' if _source_text(f.get('source')) else ''}</li>"
        for f in meta.get("fitted") or []) or "<li>none: every parameter comes from its own source</li>"
    figs = "".join(_embed(str(name), p) for name, p in (figures or {}).items()) or "<p class='small'>none</p>"
    refs = "".join(f"<li>{e(str(c))}</li>" for c in meta.get("citations") or []) or "<li>none</li>"
    description = f"<p>{e(str(meta['description']))}</p>" if meta.get("description") else ""
    from ..report.interactive import page as interactive_page

    live = interactive_page({e(str(k)): v for k, v in (interactive or {}).items()})
    live_html = f"<h2>Interactive figures</h2>{live}" if live else ""
    primary_rows = comp[(comp["endpoint"].astype(str) == str(primary.get("endpoint")))
                        & (comp["visit_day"].astype(float) == float(primary.get("visit_day") or -1))] \
        if len(comp) and primary.get("endpoint") is not None else comp.iloc[0:0]
    arm_sizes = ", ".join(f"{a.get('label') or a.get('name')}: {_count(a.get('n'))}" for a in meta.get("arms") or [])
    answer = "".join(
        f"<li>{e(arm_label.get(str(r['arm']), str(r['arm'])))} vs {e(arm_label.get(str(r['control']), str(r['control'])))}: "
        f"<b>{e(_with_ci(r['estimate'], r['ci_low'], r['ci_high']))}</b>, p = {e(_pvalue(r['p_value']))} "
        f"({e(str(r['test']))})</li>" for _, r in primary_rows.iterrows())
    primary_binary = bool(len(summ)) and (summ.loc[summ["endpoint"].astype(str) == str(primary.get("endpoint")),
                                                    "kind"] == "binary").any()
    compared = "difference in the rate" if primary_binary else "difference in change from baseline"
    answer_html = (f"<h2>Primary endpoint</h2><p>{e(primary_text)}: {compared} against "
                   f"control in this one virtual trial ({e(arm_sizes)} patients per arm):</p><ul>{answer}</ul>"
                   if answer else "")

    responses_html = _responses_html(meta)

    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_CSS}</style></head>
<body><h1>{e(title)}</h1>
<p class="disclaimer">{e(disclaimer)}</p>
{description}
<h2>Design</h2>{design}{arms}
{answer_html}
<h2>Published vs simulated</h2>{pub_lead}{pub_html}
{responses_html}
{live_html}
<h2>Figures</h2><p class="small">Static, for slides (each also as SVG and PDF beside the report).</p>{figs}
<h2>Summary by arm and visit</h2>{summ_html}
<h2>Comparisons vs control</h2>{comp_html}
{power_html}
{responders_html}
<h2>Safety</h2>{safety_html}
<h2>Fitted parameters</h2>
<p class="small">Parameters this trial's run uses whose value was fitted to a published number (so agreement there
is not independent validation):</p><ul>{fitted}</ul>
<h2>References</h2><ol>{refs}</ol>
<p class="small">{e(disclaimer)}</p></body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
