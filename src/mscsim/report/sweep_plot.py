"""The sweep figure: each output against the first varied field (a dose-response curve), the median patient
with bands holding 90 % and 95 % of patients, further varied fields as separate lines, the untreated course
dashed. Readable names and units come from ``mscsim.display``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..display import field_display, fmt  # noqa: E402
from .plots import _COLOURS, _finish  # noqa: E402


def _x(values: list, scale: str) -> tuple[np.ndarray, list[str] | None]:
    """Numeric x positions, or positions 0..k-1 with tick labels for categorical or list values."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float), None
    labels = [str(v) if not isinstance(v, list) else "days " + ", ".join(f"{d:g}" for d in v) for v in values]
    return np.arange(len(values), dtype=float), labels


def sweep_figure(result, path: str | Path | None = None):
    """One panel per output; see the module docstring."""
    table: pd.DataFrame = result.table
    first, rest = result.varies[0], result.varies[1:]
    n_out = len(result.outputs)
    ncols = min(n_out, 2)
    nrows = int(np.ceil(n_out / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.6 * nrows), layout="constrained", squeeze=False)
    for ax in axes.ravel()[n_out:]:
        ax.set_axis_off()
    xdisp = field_display(first.path)
    groups = [((), table)] if not rest else list(table.groupby([v.path for v in rest], sort=False))
    for ax, name in zip(axes.ravel(), result.outputs):
        rows_all = table[table["output"] == name]
        r0 = rows_all.iloc[0]
        share = str(r0["statistic"]).startswith("share")
        scale = 100.0 if share else 1.0
        for k, (key, block) in enumerate(groups):
            rows = block[block["output"] == name]
            order = list(dict.fromkeys(map(repr, first.values)))
            rows = rows.assign(_o=[order.index(repr(v)) for v in rows[first.path]]).sort_values("_o")
            x, ticks = _x(list(rows[first.path]), first.scale)
            colour = _COLOURS[k % 10]
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{field_display(v.path).label} {fmt(x_) if isinstance(x_, float) else x_}"
                              for v, x_ in zip(rest, key)) or "treated"
            y = rows["median"].to_numpy(dtype=float) * scale
            ax.plot(x, y, "o-", color=colour, label=label, ms=4, lw=1.6)
            if not share and r0["n"] > 1:
                ax.fill_between(x, rows["q025"] * scale, rows["q975"] * scale, color=colour, alpha=0.10, lw=0)
                ax.fill_between(x, rows["q05"] * scale, rows["q95"] * scale, color=colour, alpha=0.22, lw=0)
            if ticks is not None:
                ax.set_xticks(x, ticks, rotation=20 if max(len(t) for t in ticks) > 12 else 0)
            if rows["untreated_median"].notna().any() and k == 0:
                u = rows["untreated_median"].to_numpy(dtype=float) * scale
                ax.plot(x, u, "--", color="#57606a", lw=1.4, label="untreated")
                if not share and r0["n"] > 1:
                    ax.fill_between(x, rows["untreated_q05"] * scale, rows["untreated_q95"] * scale,
                                    color="#57606a", alpha=0.10, lw=0)
        if first.scale == "log":
            ax.set_xscale("log")
        ax.set_xlabel(xdisp.axis_label())
        units = "share of patients, %" if share else r0["units"]
        ax.set_ylabel(f"{r0['label']} ({units})" if units else r0["label"])
        ax.set_title(f"{r0['label']}: {r0['statistic']}" + ("" if share or r0["n"] == 1 else
                                                            "; bands: 90% and 95% of patients"),
                     fontsize=10, loc="left")
        ax.grid(alpha=0.3, which="both", lw=0.5)
        ax.legend(fontsize=8)
    import textwrap

    width = int(62 * ncols)
    title = textwrap.fill(f"{result.scenario.name}: {xdisp.label} sweep", width)
    fig.suptitle(title, fontsize=11)
    return _finish(fig, path)
