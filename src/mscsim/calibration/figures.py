"""Figures of a calibration: prior against posterior per parameter, the posterior's pairwise correlations, and
every published number against its prior and posterior predictive intervals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..display import disease_label, display  # noqa: E402

STATISTIC = {"rate": "rate", "complete_rate": "complete response rate", "partial_rate": "partial response rate",
             "mean": "mean", "median": "median", "mean_change": "mean change", "median_change": "median change",
             "difference_rate": "difference in rate", "difference_mean_change": "difference in mean change"}


def _label(name: str, p) -> str:
    units = p.parameter.units
    return f"{p.parameter.readable}" + (f" ({units})" if units not in ("1", "") else "")


def posterior_figure(cal, path: Path) -> None:
    names = cal.problem.names
    k = len(names)
    cols = min(3, k)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    prior = cal.problem.values(np.random.default_rng(3).random((4000, k)))
    post = cal.problem.values(cal.posterior_unit)
    for j, name in enumerate(names):
        ax = axes.flat[j]
        p = cal.problem.space[name]
        log = p.dist.distribution in ("loguniform", "lognormal")
        lo, hi = np.quantile(prior[:, j], [0.0, 1.0])
        bins = np.geomspace(lo, hi, 40) if log and lo > 0 else np.linspace(lo, hi, 40)
        # shares per bin (equal widths on the axis drawn, log or linear), so a log-uniform prior looks flat
        ax.hist(prior[:, j], bins=bins, weights=np.full(len(prior), 1 / len(prior)), color="0.8", label="prior")
        ax.hist(post[:, j], bins=bins, weights=np.full(len(post), 1 / len(post)), color="tab:blue", alpha=0.7,
                label="posterior")
        ax.axvline(p.parameter.value, color="k", lw=0.8, ls="--", label="data-file value")
        if log and lo > 0:
            ax.set_xscale("log")
            ticks = [lo, float(np.sqrt(lo * hi)), hi]  # the prior's ends and middle: always labelled, never crowded
            ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(_label(name, p), fontsize=8)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"Prior and posterior of the calibrated parameters ({disease_label(cal.problem.disease)})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def pairs_figure(cal, path: Path) -> None:
    names = cal.problem.names
    labels = [cal.problem.space[n].parameter.readable for n in names]
    corr = cal.correlations.to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(names) + 3.5, 0.6 * len(names) + 2.5))
    im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), labels, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="Spearman correlation (posterior)")
    ax.set_title("Which parameters the data trade off against each other", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def observation_label(row: pd.Series) -> str:
    """'Lamo-Espinosa 2016, HA + 1e7 BM-MSC: pain VAS median, day 365'."""
    endpoint = display(str(row["endpoint"])).label
    trial, arm = row.get("trial_label") or row["design"], row.get("arm_label") or row["arm"]
    return f"{trial}, {arm}: {endpoint} {STATISTIC.get(row['statistic'], row['statistic'])}, day {row['visit_day']:g}"


def predictive_figure(table: pd.DataFrame, problem, path: Path, title: str | None = None) -> None:
    """One row per published number, centred on it and in its standard errors: prior (grey) and posterior (blue;
    orange if held out) 95 % predictive intervals, the published value at 0."""
    n = len(table)
    fig, ax = plt.subplots(figsize=(10, 0.38 * n + 1.6))
    for i, (_, r) in enumerate(table.iterrows()):
        scale = float(r["se"]) if np.isfinite(r["se"]) and r["se"] > 0 else max(abs(r["published"]), 1e-9)
        y = n - 1 - i
        ax.plot([(r["prior_2.5%"] - r["published"]) / scale, (r["prior_97.5%"] - r["published"]) / scale],
                [y + 0.15] * 2, color="0.7", lw=4, solid_capstyle="butt")
        color = "tab:blue" if r["role"] == "calibrated against" else "tab:orange"
        ax.plot([(r["posterior_2.5%"] - r["published"]) / scale, (r["posterior_97.5%"] - r["published"]) / scale],
                [y - 0.15] * 2, color=color, lw=4, solid_capstyle="butt")
        ax.plot([(r["posterior_median"] - r["published"]) / scale], [y - 0.15], "o", color="white", ms=3)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(n)[::-1], [textwrap.fill(observation_label(r), 70) for _, r in table.iterrows()],
                  fontsize=7)
    ax.set_xlabel("predicted minus published, in standard errors of the published number\n(0 = published)")
    ax.plot([], [], color="0.7", lw=4, label="prior predictive 95 %")
    ax.plot([], [], color="tab:blue", lw=4, label="posterior predictive 95 % (calibrated against)")
    if (table["role"] != "calibrated against").any():
        ax.plot([], [], color="tab:orange", lw=4, label="posterior predictive 95 % (held out)")
    # beside the axes, not over its rows; the saved figure grows to hold the labels, legend and title whole
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(textwrap.fill(title or f"Published trial numbers against the model's 95 % predictive intervals "
                               f"({disease_label(problem.disease)})", 60), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
