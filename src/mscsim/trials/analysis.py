"""A finished virtual trial's statistics: per-arm summaries, comparisons against control, the published results
beside the simulated ones, power and sample size by repeating the trial in silico, and the safety table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .design import DesignSpec
from .observe import endpoint_kinds
from .safety import safety_table
from .statistics import DEFAULT_TEST, arm_visit_summary, compare_to_control, sample_size_for_power


@dataclass(frozen=True)
class TrialAnalysis:
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    published: pd.DataFrame
    safety: pd.DataFrame
    power: pd.DataFrame | None


def _tests(design: DesignSpec, kinds: dict[str, str]) -> dict[str, str]:
    return {name: spec.test or DEFAULT_TEST[kinds[name]] for name, spec in design.endpoints.items()}


def trial_patients(design: DesignSpec, endpoints: pd.DataFrame, patients: pd.DataFrame
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patients of the trial as designed (the first n of each arm); the rest are the power pool."""
    keep = set(patients.loc[patients["in_trial"], "patient"])
    return endpoints[endpoints["patient"].isin(keep)], patients[patients["in_trial"]]


def _median_ci(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Median with its distribution-free interval from binomial order statistics."""
    x = np.sort(x[~np.isnan(x)])
    n = len(x)
    if n == 0:
        return np.nan, np.nan, np.nan
    lo = int(stats.binom.ppf((1 - confidence) / 2, n, 0.5))
    hi = int(stats.binom.isf((1 - confidence) / 2, n, 0.5))
    return float(np.median(x)), float(x[max(lo - 1, 0)]), float(x[min(hi, n - 1)])


def published_comparison(design: DesignSpec, obs: pd.DataFrame, summary: pd.DataFrame,
                         comparisons: pd.DataFrame) -> pd.DataFrame:
    """Each published result beside the simulated statistic of the same arm, endpoint and visit, with the
    simulated trial's 95 % interval; 'agrees' when the published value lies inside that interval."""
    rows = []
    for p in design.published:
        sel = (obs["arm"] == p.arm) & (obs["endpoint"] == p.endpoint) & (obs["visit_day"] == p.visit_day)
        s = summary[(summary["arm"] == p.arm) & (summary["endpoint"] == p.endpoint)
                    & (summary["visit_day"] == p.visit_day)]
        if p.statistic in ("rate", "mean", "mean_change"):
            col = "mean_change" if p.statistic == "mean_change" else "mean"
            r = s.iloc[0]
            value, low, high = float(r[col]), float(r["ci_low"]), float(r["ci_high"])
            if p.statistic == "mean" and not np.isnan(r["mean_change"]):  # the summary's CI is of the change
                sd, n = float(r["sd"]), float(r["n"])
                half = stats.t.ppf(0.975, max(n - 1, 1)) * sd / np.sqrt(n) if n > 1 else np.nan
                low, high = value - half, value + half
        elif p.statistic in ("median", "median_change"):
            value, low, high = _median_ci(obs.loc[sel, "change" if p.statistic == "median_change" else "value"]
                                          .to_numpy(dtype=float))
        else:
            c = comparisons[(comparisons["arm"] == p.arm) & (comparisons["endpoint"] == p.endpoint)
                            & (comparisons["visit_day"] == p.visit_day)]
            r = c.iloc[0]
            value, low, high = float(r["estimate"]), float(r["ci_low"]), float(r["ci_high"])
        agrees = bool(low <= p.value <= high) if not (np.isnan(low) or np.isnan(high)) else False
        label = {"rate": "rate", "mean_change": "mean change from baseline", "median_change":
                 "median change from baseline", "mean": "mean", "median": "median",
                 "difference_rate": "difference in rate vs control",
                 "difference_mean_change": "difference in mean change vs control"}[p.statistic]
        rows.append({"endpoint": p.endpoint, "visit_day": p.visit_day, "arm": p.arm, "quantity": label,
                     "published": p.value, "published_ci_low": p.ci_low if p.ci_low is not None else np.nan,
                     "published_ci_high": p.ci_high if p.ci_high is not None else np.nan,
                     "simulated": value, "simulated_ci_low": low, "simulated_ci_high": high,
                     "source": ",".join(p.source), "agrees": agrees, "note": p.note})
    columns = ["endpoint", "visit_day", "arm", "quantity", "published", "published_ci_low", "published_ci_high",
               "simulated", "simulated_ci_low", "simulated_ci_high", "source", "agrees", "note"]
    return pd.DataFrame(rows, columns=columns)


def power_table(design: DesignSpec, obs_all: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame | None:
    """Power of the primary comparison at each sample size, by redrawing trials from the simulated patients."""
    spec, control = design.power, design.control
    if spec is None or control is None:
        return None
    ep, day = design.primary.endpoint, design.primary.visit_day
    test = _tests(design, kinds)[ep]
    prim = obs_all[(obs_all["endpoint"] == ep) & (obs_all["visit_day"] == day)]
    column = "change" if kinds[ep] == "continuous" and prim["baseline"].notna().any() else "value"

    def pool(arm: str) -> np.ndarray:
        rows = prim[prim["arm"] == arm]
        if test == "ancova":
            return rows[["change", "baseline"]].to_numpy(dtype=float)
        return rows[column].to_numpy(dtype=float)

    frames = []
    for arm in design.arms:
        if arm.control:
            continue
        table = sample_size_for_power(pool(arm.name), pool(control.name), test, target=spec.target,
                                      sizes=tuple(spec.sizes), replicates=spec.replicates, seed=design.seed,
                                      alpha=spec.alpha)
        table.insert(0, "arm", arm.name)
        table.insert(0, "visit_day", day)
        table.insert(0, "endpoint", ep)
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else None


def analyse(design: DesignSpec, endpoints: pd.DataFrame, patients: pd.DataFrame) -> TrialAnalysis:
    kinds = endpoint_kinds(design)
    obs, pts = trial_patients(design, endpoints, patients)
    summary = arm_visit_summary(obs, kinds)
    control = design.control
    comparisons = compare_to_control(obs, kinds, control.name, _tests(design, kinds)) if control else \
        pd.DataFrame(columns=["arm", "control", "endpoint", "visit_day", "estimate", "ci_low", "ci_high", "p_value",
                              "test", "n_arm", "n_control"])
    published = published_comparison(design, obs, summary, comparisons)
    ae_cols = [c for c in pts.columns if c.startswith("ae_")]
    events = pts[ae_cols].rename(columns=lambda c: c[3:]).astype(bool)
    events.index = pts["patient"].to_numpy()
    safety = safety_table(events, pd.Series(pts["arm"].to_numpy(), index=events.index))
    return TrialAnalysis(summary, comparisons, published, safety, power_table(design, endpoints, kinds))
