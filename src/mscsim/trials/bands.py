"""A trial's bands from parameter uncertainty, kept apart from the other two sources of spread:

- parameter uncertainty: the statistic (an arm's mean change, a difference vs control, a published statistic) over
  each draw's pool of patients, across draws (columns ``param_median``, ``param_low90`` ... ``param_high95``);
- between-patient variability: the 5th-95th percentile of the patients' own values at the nominal parameters
  (``patients_low90``, ``patients_high90``; continuous endpoints);
- trial-repeat sampling: the existing confidence and prediction intervals at the nominal parameters
  (``ci_low``/``ci_high``, ``simulated_ci_low``/``simulated_ci_high``);
and, for the published numbers, both together: repeats of the trial at its published size drawn from every draw's
pool (``predictive_low95``, ``predictive_high95``), against which ``agrees_with_uncertainty`` is judged.

With a posterior that carries between-trial SDs (``mscsim calibrate``'s ``tau_trial``, ``tau_cells``), the published
numbers also get the interval of the same repeats run as new trials (``new_trial_low95``, ``new_trial_high95``,
``agrees_as_new_trial``): each repeat draws its own trial effects, the common response and the cells' effect, at
its draw's SDs, as the calibration's held-out predictions do (Higgins, Thompson and Spiegelhalter 2009): what a
trial like this one, run again elsewhere, may show.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..uncertainty.bands import QUANTILES, quantiles
from .analysis import PREDICTION_STREAM, plain_labels
from .design import RATE_STATISTICS, DesignSpec
from .observe import endpoint_kinds
from .resample import trial_statistic, repeated_statistic

PARAM_COLUMNS = [f"param_{k}" for k in QUANTILES]
PREDICTIVE_STREAM = PREDICTION_STREAM + 1  # repeats per draw: generator keyed on (seed, stream, row, draw key)
NEW_TRIAL_STREAM = PREDICTION_STREAM + 2  # the repeats' trial effects (its own stream: the repeats stay as they were)
NEW_TRIAL_COLUMNS = ["new_trial_low95", "new_trial_high95", "agrees_as_new_trial"]


def _with_quantity(obs: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """obs with column 'q': the analysed quantity per patient (change from baseline where the endpoint has one,
    else the value; 0/1 for a binary endpoint), as the trial's summary and comparisons use it."""
    has_base = obs.groupby("endpoint", observed=True)["baseline"].apply(lambda s: bool(s.notna().any())).to_dict()
    use_change = obs["endpoint"].map(lambda e: kinds.get(e) == "continuous" and has_base.get(e, False))
    return obs.assign(q=np.where(use_change.to_numpy(dtype=bool), obs["change"], obs["value"]))


def _param(values) -> dict[str, float]:
    return {f"param_{k}": v for k, v in quantiles(values).items()}


def summary_bands(design: DesignSpec, summary: pd.DataFrame, draws: pd.DataFrame, obs_all: pd.DataFrame
                  ) -> pd.DataFrame:
    """The arm summary with, per arm, endpoint and visit, the parameter band of the analysed quantity (mean change,
    mean or rate) across draws and the between-patient 90 % range at the nominal parameters."""
    kinds = endpoint_kinds(design)
    keys = ["arm", "endpoint", "visit_day"]
    per_draw = _with_quantity(draws, kinds).groupby(["draw", *keys])[["q", "value"]].mean().reset_index()
    bands = per_draw.groupby(keys)["q"].apply(lambda v: pd.Series(_param(v))).unstack().reset_index()
    mean_band = per_draw.groupby(keys)["value"].quantile([0.05, 0.95]).unstack().reset_index()
    mean_band.columns = [*keys, "param_mean_low90", "param_mean_high90"]
    bands = bands.merge(mean_band, on=keys, how="left")
    nominal = _with_quantity(obs_all[[*keys, "value", "baseline", "change"]], kinds)
    spread = plain_labels(nominal.groupby(keys, observed=True)["q"].quantile([0.05, 0.95]).unstack().reset_index())
    spread.columns = [*keys, "patients_low90", "patients_high90"]
    out = summary.merge(bands, on=keys, how="left").merge(spread, on=keys, how="left")
    binary = out["kind"] == "binary"
    out.loc[binary, ["patients_low90", "patients_high90"]] = np.nan  # a 0/1 outcome has no patient range
    out["param_quantity"] = np.where(binary, "rate", np.where(out["mean_change"].notna(), "mean change", "mean"))
    return out


def comparison_bands(design: DesignSpec, comparisons: pd.DataFrame, draws: pd.DataFrame) -> pd.DataFrame:
    """The comparisons with the parameter band of each difference vs control (difference of mean changes, or of
    rates) across draws."""
    if comparisons.empty or design.control is None:
        return comparisons.assign(**{c: np.nan for c in PARAM_COLUMNS})
    kinds = endpoint_kinds(design)
    means = _with_quantity(draws, kinds).groupby(["draw", "arm", "endpoint", "visit_day"])["q"].mean()
    means = means.unstack("arm")
    rows = []
    for _, r in comparisons.iterrows():
        idx = (means.index.get_level_values("endpoint") == r["endpoint"]) & \
              (means.index.get_level_values("visit_day") == r["visit_day"])
        sel = means[idx]
        diff = sel[r["arm"]] - sel[r["control"]] if r["arm"] in sel and r["control"] in sel else pd.Series([], dtype=float)
        rows.append(_param(diff.to_numpy(dtype=float)))
    return pd.concat([comparisons.reset_index(drop=True), pd.DataFrame(rows, columns=PARAM_COLUMNS)], axis=1)


def published_bands(design: DesignSpec, published: pd.DataFrame, draws: pd.DataFrame,
                    taus: dict[int, np.ndarray] | None = None) -> pd.DataFrame:
    """The published-vs-simulated rows with the statistic's parameter band across draws (each draw's pool), and
    the predictive 95 % interval of repeats of the trial at the published size drawn from every draw's pool
    (parameter uncertainty and trial-repeat sampling together). ``taus`` (draw key -> tau_trial, tau_cells) adds
    the interval of those repeats as new trials (module docstring)."""
    cols = PARAM_COLUMNS + ["predictive_low95", "predictive_high95", "agrees_with_uncertainty"]
    if taus:
        cols += NEW_TRIAL_COLUMNS
    if published.empty:
        return published.assign(**{c: pd.Series(dtype=float) for c in cols})
    sizes = {a.name: a.n for a in design.arms}
    cells = {a.name: a.has_cells for a in design.arms}
    control = design.control.name if design.control else None
    keys = sorted(draws["draw"].unique())
    replicates = design.prediction.replicates if design.prediction else 2000
    per_draw = max(1, math.ceil(replicates / max(len(keys), 1)))
    rows = []
    for k, p in enumerate(design.published):
        endpoint, statistic = p.measured
        column = "change" if statistic in ("mean_change", "median_change", "difference_mean_change") else "value"
        at = draws[(draws["endpoint"] == endpoint) & (draws["visit_day"] == p.visit_day)]
        values, reps, new = [], [], []
        for key, g in at.groupby("draw", sort=True):
            a = g.loc[g["arm"] == p.arm, column].to_numpy(dtype=float)
            c = g.loc[g["arm"] == control, column].to_numpy(dtype=float) if statistic.startswith("difference") \
                else None
            if not len(a) or (c is not None and not len(c)):
                continue
            values.append(float(trial_statistic(statistic, a[None, :], None if c is None else c[None, :])[0]))
            rng = np.random.default_rng([int(design.seed), PREDICTIVE_STREAM, k, int(key)])
            r = repeated_statistic(statistic, a, sizes[p.arm], c, sizes[control] if c is not None else None,
                                   per_draw, rng)
            reps.append(r)
            if taus:
                z = np.random.default_rng([int(design.seed), NEW_TRIAL_STREAM, k, int(key)]).standard_normal((2, len(r)))
                new.append(new_trial(r, statistic, cells[p.arm], taus[int(key)], z, design.disease, a, c,
                                     sizes[p.arm], sizes.get(control)))
        low, high = _interval(reps)
        row = {**_param(values), "predictive_low95": low, "predictive_high95": high,
               "agrees_with_uncertainty": bool(low <= p.value <= high) if np.isfinite(low) else False}
        if taus:
            low, high = _interval(new)
            row.update(new_trial_low95=low, new_trial_high95=high,
                       agrees_as_new_trial=bool(low <= p.value <= high) if np.isfinite(low) else False)
        rows.append(row)
    return pd.concat([published.reset_index(drop=True), pd.DataFrame(rows, columns=cols)], axis=1)


def _interval(parts: list[np.ndarray]) -> tuple[float, float]:
    """The central 95 % of the finite values of ``parts`` (NaN, NaN when there are none)."""
    x = np.concatenate(parts) if parts else np.array([])
    x = x[np.isfinite(x)]
    return tuple(float(v) for v in np.quantile(x, [0.025, 0.975])) if x.size else (np.nan, np.nan)


def new_trial(reps: np.ndarray, statistic: str, has_cells: bool, tau: np.ndarray, z: np.ndarray, disease: str,
              a: np.ndarray, c: np.ndarray | None, n: int, n_control: int | None) -> np.ndarray:
    """Repeats of a statistic moved by new trial effects ``z`` (2, repeats: the common response and the cells'
    effect, standard normal) at SDs ``tau`` on the disease's heterogeneity scale, as the calibration's model has
    them (calibration.heterogeneity): a continuous statistic by the effect times the between-patient SD of the
    draw's pool (a difference: the pooled SD), a rate on the log-odds, a difference of rates linearly at 1/2; the
    common response does not move a difference, a partial-response rate takes no effect."""
    from ..calibration.heterogeneity import LOGIT_PER_SMD, SCALES, load_prior

    if statistic == "partial_rate":
        return reps
    per_logit = LOGIT_PER_SMD if load_prior(disease).scale == SCALES[0] else 1.0
    difference = statistic.startswith("difference")
    e = (0.0 if difference else tau[0] * z[0]) + (tau[1] * z[1] if (has_cells or difference) else 0.0)
    if statistic in RATE_STATISTICS:
        p = np.clip(reps, 1e-6, 1 - 1e-6)
        return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + per_logit * e)))
    if statistic == "difference_rate":
        return reps + per_logit * 0.25 * e
    a = a[np.isfinite(a)]  # a patient missing at the visit (the design's dropouts) has no value
    if c is None:
        scale = float(np.std(a, ddof=1)) if len(a) > 1 else np.nan
    else:
        c = c[np.isfinite(c)]
        w = n / max(n_control or n, 1)
        scale = float(np.sqrt((np.var(a, ddof=1) + np.var(c, ddof=1) * w) / (1 + w))) if min(len(a), len(c)) > 1 \
            else np.nan
    return reps + scale * e * per_logit / LOGIT_PER_SMD
