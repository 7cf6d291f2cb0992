"""A finished virtual trial's statistics: per-arm summaries, comparisons against control, the published results
beside the simulated ones, power and sample size by repeating the trial in silico, and the safety table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..endpoints import load_endpoints
from .design import DesignSpec
from .observe import endpoint_kinds
from .resample import trial_statistic, repeated_statistic
from .safety import safety_table
from .statistics import DEFAULT_TEST, _t_interval, _wilson, arm_visit_summary, compare_to_control, \
    sample_size_for_power

RESPONDER_COLUMNS = ["arm", "endpoint", "visit_day", "covariate", "subgroup", "n", "mean", "ci_low", "ci_high",
                     "measure"]


@dataclass(frozen=True)
class TrialAnalysis:
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    published: pd.DataFrame
    safety: pd.DataFrame
    power: pd.DataFrame | None
    responders: pd.DataFrame


def _tests(design: DesignSpec, kinds: dict[str, str]) -> dict[str, str]:
    return {name: spec.test or DEFAULT_TEST[kinds[name]] for name, spec in design.endpoints.items()}


def trial_patients(design: DesignSpec, endpoints: pd.DataFrame, patients: pd.DataFrame
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patients of the trial as designed (the first n of each arm); the rest are the power pool. When every
    simulated patient is in the trial (no pool) the tables are returned as they are: a million-patient trial's
    endpoint table is not copied (the analysis only reads them)."""
    in_trial = patients["in_trial"].to_numpy(dtype=bool)
    if in_trial.all():
        return endpoints, patients
    ids = patients["patient"].to_numpy()
    pid = endpoints["patient"].to_numpy()
    keep = np.zeros(int(max(ids.max(initial=-1), pid.max(initial=-1))) + 1, dtype=bool)
    keep[ids[in_trial]] = True
    return endpoints[keep[pid]], patients[in_trial]


def _median_ci(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Median with its distribution-free interval from binomial order statistics."""
    x = np.sort(x[~np.isnan(x)])
    n = len(x)
    if n == 0:
        return np.nan, np.nan, np.nan
    lo = int(stats.binom.ppf((1 - confidence) / 2, n, 0.5))
    hi = int(stats.binom.isf((1 - confidence) / 2, n, 0.5))
    return float(np.median(x)), float(x[max(lo - 1, 0)]), float(x[min(hi, n - 1)])


PREDICTION_STREAM = 71  # random stream of the replicate trials: generator keyed on (seed, STREAM, published row)


def _replicated(design: DesignSpec, p, k: int, obs_all: pd.DataFrame) -> tuple[float, float, float]:
    """The statistic over the whole virtual pool, and the 95% range of its value across ``replicates`` trials of
    the published size drawn (with replacement) from the pool: what running this trial would show, and how
    sure one can be of it."""
    spec = design.prediction
    sizes = {a.name: a.n for a in design.arms}
    endpoint, statistic = p.measured
    column = "change" if statistic in ("mean_change", "median_change", "difference_mean_change") else "value"
    at = obs_all[(obs_all["endpoint"] == endpoint) & (obs_all["visit_day"] == p.visit_day)]

    def pool(arm: str) -> np.ndarray:
        return at.loc[at["arm"] == arm, column].to_numpy(dtype=float)

    a = pool(p.arm)
    c = pool(design.control.name) if statistic.startswith("difference") else None
    value = float(trial_statistic(statistic, a[None, :], None if c is None else c[None, :])[0])
    rng = np.random.default_rng([int(design.seed), PREDICTION_STREAM, k])
    reps = repeated_statistic(statistic, a, sizes[p.arm], c, sizes[design.control.name] if c is not None else None,
                              spec.replicates, rng)
    reps = reps[~np.isnan(reps)]
    if not len(reps):
        return value, np.nan, np.nan
    low, high = np.quantile(reps, [0.025, 0.975])
    return value, float(low), float(high)


def published_comparison(design: DesignSpec, obs: pd.DataFrame, summary: pd.DataFrame,
                         comparisons: pd.DataFrame, obs_all: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each published result beside the simulated statistic of the same arm, endpoint and visit, with an interval;
    'agrees' when the published value lies inside it. With ``design.prediction`` (and ``obs_all``, the whole
    virtual pool), the value is the pool's and the interval the 95% range of repeated trials of the published size
    (a prediction interval); otherwise it is the one simulated trial's result with its 95% confidence interval."""
    responses = set(load_endpoints(design.disease).spec.responses)
    rows = []
    for k, p in enumerate(design.published):
        if design.prediction is not None and obs_all is not None:
            value, low, high = _replicated(design, p, k, obs_all)
            rows.append(_published_row(p, value, low, high, f"95% range of {design.prediction.replicates} trials",
                                       responses))
            continue
        endpoint, statistic = p.measured
        sel = (obs["arm"] == p.arm) & (obs["endpoint"] == endpoint) & (obs["visit_day"] == p.visit_day)
        s = summary[(summary["arm"] == p.arm) & (summary["endpoint"] == endpoint)
                    & (summary["visit_day"] == p.visit_day)]
        if statistic in ("rate", "mean", "mean_change"):
            col = "mean_change" if statistic == "mean_change" else "mean"
            r = s.iloc[0]
            value, low, high = float(r[col]), float(r["ci_low"]), float(r["ci_high"])
            if statistic == "mean" and not np.isnan(r["mean_change"]):  # the summary's CI is of the change
                sd, n = float(r["sd"]), float(r["n"])
                half = stats.t.ppf(0.975, max(n - 1, 1)) * sd / np.sqrt(n) if n > 1 else np.nan
                low, high = value - half, value + half
        elif statistic in ("median", "median_change"):
            value, low, high = _median_ci(obs.loc[sel, "change" if statistic == "median_change" else "value"]
                                          .to_numpy(dtype=float))
        else:
            c = comparisons[(comparisons["arm"] == p.arm) & (comparisons["endpoint"] == p.endpoint)
                            & (comparisons["visit_day"] == p.visit_day)]
            r = c.iloc[0]
            value, low, high = float(r["estimate"]), float(r["ci_low"]), float(r["ci_high"])
        rows.append(_published_row(p, value, low, high, "95% CI of the simulated trial", responses))
    columns = ["endpoint", "visit_day", "arm", "quantity", "published", "published_ci_low", "published_ci_high",
               "simulated", "simulated_ci_low", "simulated_ci_high", "simulated_interval", "source", "agrees",
               "note"]
    return pd.DataFrame(rows, columns=columns)


_QUANTITY = {"rate": "rate", "mean_change": "mean change from baseline", "median_change":
             "median change from baseline", "mean": "mean", "median": "median",
             "difference_rate": "difference in rate vs control",
             "difference_mean_change": "difference in mean change vs control",
             "complete_rate": "complete response rate", "partial_rate": "partial response rate"}


def _published_row(p, value: float, low: float, high: float, interval: str, responses=frozenset()) -> dict:
    agrees = bool(low <= p.value <= high) if not (np.isnan(low) or np.isnan(high)) else False
    quantity = _QUANTITY[p.statistic]
    if p.statistic == "rate" and p.endpoint in responses:
        quantity = "overall response rate (complete or partial)"
    return {"endpoint": p.endpoint, "visit_day": p.visit_day, "arm": p.arm, "quantity": quantity,
            "published": p.value, "published_ci_low": p.ci_low if p.ci_low is not None else np.nan,
            "published_ci_high": p.ci_high if p.ci_high is not None else np.nan,
            "simulated": value, "simulated_ci_low": low, "simulated_ci_high": high, "simulated_interval": interval,
            "source": ",".join(p.source), "agrees": agrees, "note": p.note}


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


def _subgroups(values: pd.Series) -> pd.Series:
    """Subgroup labels of one covariate: its levels (yes/no, categories, grades), or thirds of a continuous one."""
    v = values
    if v.dtype == bool or v.dtype == object or str(v.dtype) in ("str", "string", "category") or \
            (np.issubdtype(v.dtype, np.integer) and v.nunique() <= 6):
        return v.astype(str)
    edges = np.unique(np.quantile(v.to_numpy(dtype=float), [0, 1 / 3, 2 / 3, 1]))
    if len(edges) < 3:
        return v.astype(str)
    bins = pd.cut(v.astype(float), edges, include_lowest=True, duplicates="drop")
    return bins.map(lambda b: f"{b.left:.3g}-{b.right:.3g}").astype(str)


def who_responds(design: DesignSpec, endpoints: pd.DataFrame, patients: pd.DataFrame,
                 kinds: dict[str, str]) -> pd.DataFrame:
    """B18: the primary outcome of every arm by patient subgroup (each covariate of the virtual cohort, continuous
    ones in thirds): a response rate for a binary endpoint, the mean change from baseline for a continuous one,
    with 95% intervals (Wilson; t). It uses every simulated patient of the arm (the power pool included), so the
    subgroups are as precise as the virtual cohort allows; it shows who responds, and the covariates say why."""
    ep, day = design.primary.endpoint, design.primary.visit_day
    rows = endpoints[(endpoints["endpoint"] == ep) & (endpoints["visit_day"] == day)]
    binary = kinds[ep] == "binary"
    column = "value" if binary or rows["change"].isna().all() else "change"
    outcome = rows.set_index("patient")[column]
    covariates = [c for c in [*design.cohort.covariates, "weight_kg"] if c in patients.columns]
    table = patients.set_index("patient")
    out = []
    for arm in design.arms:
        ids = table.index[table["arm"] == arm.name]
        y = outcome.reindex(ids)
        for cov in dict.fromkeys(covariates):
            groups = _subgroups(table.loc[ids, cov])
            for label, idx in groups.groupby(groups, sort=True).groups.items():
                v = y.loc[idx].dropna().to_numpy(dtype=float)
                n = len(v)
                if binary:
                    mean = float(v.mean()) if n else np.nan
                    lo, hi = _wilson(v.sum(), n)
                else:
                    mean = float(v.mean()) if n else np.nan
                    lo, hi = _t_interval(mean, float(v.std(ddof=1)) if n > 1 else np.nan, n, 0.95)
                out.append({"arm": arm.name, "endpoint": ep, "visit_day": day, "covariate": cov, "subgroup": label,
                            "n": n, "mean": mean, "ci_low": float(lo), "ci_high": float(hi),
                            "measure": "rate" if binary else ("mean change" if column == "change" else "mean")})
    return pd.DataFrame(out, columns=RESPONDER_COLUMNS)


def plain_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with categorical columns (the collected endpoints table holds arm and endpoint as categories) as
    plain strings: the tables a trial writes and merges do not depend on how the big table was held."""
    cats = [c for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)]
    return df.astype({c: str for c in cats}) if cats else df


def analyse(design: DesignSpec, endpoints: pd.DataFrame, patients: pd.DataFrame) -> TrialAnalysis:
    kinds = endpoint_kinds(design)
    obs, pts = trial_patients(design, endpoints, patients)
    summary = arm_visit_summary(obs, kinds)
    control = design.control
    comparisons = compare_to_control(obs, kinds, control.name, _tests(design, kinds)) if control else \
        pd.DataFrame(columns=["arm", "control", "endpoint", "visit_day", "estimate", "ci_low", "ci_high", "p_value",
                              "test", "n_arm", "n_control"])
    published = published_comparison(design, obs, summary, comparisons, endpoints)
    ae_cols = [c for c in pts.columns if c.startswith("ae_")]
    events = pts[ae_cols].rename(columns=lambda c: c[3:]).astype(bool)
    events.index = pts["patient"].to_numpy()
    safety = safety_table(events, pd.Series(pts["arm"].to_numpy(), index=events.index))
    power = power_table(design, endpoints, kinds)
    return TrialAnalysis(plain_labels(summary), plain_labels(comparisons), plain_labels(published), safety,
                         None if power is None else plain_labels(power),
                         plain_labels(who_responds(design, endpoints, patients, kinds)))
