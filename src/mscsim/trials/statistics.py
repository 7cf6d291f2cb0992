"""Trial statistics: per-arm summaries, arm-versus-control tests, OMERACT-OARSI responders and simulated power.

Input is the trial runner's long table of observed endpoints (one row per patient x endpoint x visit, columns
patient, arm, endpoint, visit_day, value, baseline, change) plus each endpoint's kind ("continuous" or
"binary", binary values 0/1). Missing values (NaN) are dropped per arm x endpoint x visit cell, so a patient
who dropped out only counts at the visits they attended (an available-case analysis, no imputation).
Continuous endpoints are analysed as change from baseline, or as the raw value when the endpoint has no
baseline.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError

__all__ = [
    "CONTINUOUS_TESTS",
    "BINARY_TESTS",
    "REFERENCES",
    "arm_visit_summary",
    "compare_to_control",
    "omeract_oarsi_responder",
    "power_from_pvalues",
    "simulated_power",
    "sample_size_for_power",
]

KINDS = ("continuous", "binary")
CONTINUOUS_TESTS = ("welch_t", "student_t", "mann_whitney", "ancova")
BINARY_TESTS = ("chi2", "fisher")
DEFAULT_TEST = {"continuous": "welch_t", "binary": "chi2"}
# citation keys for the published rules implemented here (bibliography: data/references/*.yaml)
REFERENCES = {"omeract_oarsi_responder": ("pham2004",)}
# random stream of the in-silico trial replicates: generator keyed on (seed, replicate, POWER_STREAM)
POWER_STREAM = 53

_OBS_COLUMNS = ("patient", "arm", "endpoint", "visit_day", "value", "baseline", "change")
_SUMMARY_COLUMNS = ["arm", "endpoint", "visit_day", "kind", "n", "mean", "sd", "mean_change", "sd_change",
                    "ci_low", "ci_high"]
_COMPARE_COLUMNS = ["arm", "control", "endpoint", "visit_day", "estimate", "ci_low", "ci_high", "p_value",
                    "test", "n_arm", "n_control"]


# ----------------------------------------------------------------------------------------------------------
# input checks


def _check_confidence(confidence: float, where: str = "confidence") -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise InputError(where, confidence, "a number strictly between 0 and 1")
    return c


def _check_obs(obs: pd.DataFrame, kinds: Mapping[str, str]) -> dict[str, str]:
    """Validate the observation table and endpoint kinds; returns the kind of every endpoint in obs."""
    if not isinstance(obs, pd.DataFrame):
        raise InputError("obs", type(obs).__name__, "a pandas DataFrame")
    missing = [c for c in _OBS_COLUMNS if c not in obs.columns]
    if missing:
        raise InputError("obs", f"missing columns {missing}", f"columns {list(_OBS_COLUMNS)}")
    out: dict[str, str] = {}
    for ep in pd.unique(obs["endpoint"]):
        kind = kinds.get(ep)
        if kind not in KINDS:
            raise InputError(f"kinds.{ep}", kind, "'continuous' or 'binary'")
        out[ep] = kind
        if kind == "binary":
            vals = obs.loc[obs["endpoint"] == ep, "value"].to_numpy(dtype=float)
            vals = vals[~np.isnan(vals)]
            bad = vals[(vals != 0.0) & (vals != 1.0)]
            if bad.size:
                raise InputError(f"obs.value (endpoint {ep})", bad[:5].tolist(), "0 or 1 for a binary endpoint")
    return out


def _has_baseline(obs: pd.DataFrame) -> dict[str, bool]:
    """Whether each endpoint carries a baseline (then continuous analyses use change from baseline)."""
    return obs.groupby("endpoint", sort=False, observed=True)["baseline"].apply(lambda s: bool(s.notna().any())).to_dict()


# ----------------------------------------------------------------------------------------------------------
# intervals


def _wilson(successes, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial rate (vectorised); NaN where n == 0."""
    x = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z / denom * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
        low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    bad = ~(n > 0)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def _newcombe(x1: float, n1: float, x0: float, n0: float, confidence: float) -> tuple[float, float]:
    """Newcombe (1998, method 10) hybrid score interval of the rate difference x1/n1 - x0/n0."""
    l1, u1 = _wilson(x1, n1, confidence)
    l0, u0 = _wilson(x0, n0, confidence)
    p1, p0 = x1 / n1, x0 / n0
    d = p1 - p0
    return (float(d - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)),
            float(d + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)))


def _t_interval(mean, sd, n, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """t-interval of a mean (vectorised); NaN where n < 2."""
    mean, sd, n = (np.asarray(v, dtype=float) for v in (mean, sd, n))
    ok = n >= 2
    df = np.where(ok, n - 1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = stats.t.ppf(0.5 + confidence / 2.0, df) * sd / np.sqrt(np.where(ok, n, 1.0))
    return np.where(ok, mean - half, np.nan), np.where(ok, mean + half, np.nan)


# ----------------------------------------------------------------------------------------------------------
# 1. per-arm summaries


def arm_visit_summary(obs: pd.DataFrame, kinds: Mapping[str, str], confidence: float = 0.95) -> pd.DataFrame:
    """Per arm x endpoint x visit: n, mean, SD, mean change and a confidence interval.

    Continuous: the CI is the t-interval of the mean change from baseline (of the mean when the endpoint has
    no baseline); it uses the patients with a non-missing change. Binary: mean is the responder rate, the CI
    is the Wilson score interval and the change columns are NaN. n counts non-missing values.
    """
    confidence = _check_confidence(confidence)
    kind_of = _check_obs(obs, kinds)
    if obs.empty:
        return pd.DataFrame(columns=_SUMMARY_COLUMNS)
    g = obs.groupby(["arm", "endpoint", "visit_day"], sort=True, observed=True)  # reads only the aggregated columns
    out = g.agg(n=("value", "count"), mean=("value", "mean"), sd=("value", "std"), n_change=("change", "count"),
                mean_change=("change", "mean"), sd_change=("change", "std"), successes=("value", "sum"))
    out = out.reset_index()
    out["kind"] = out["endpoint"].map(kind_of)
    binary = (out["kind"] == "binary").to_numpy()
    with_base = out["endpoint"].map(_has_baseline(obs)).to_numpy(dtype=bool)

    c_low, c_high = _t_interval(out["mean_change"], out["sd_change"], out["n_change"], confidence)
    v_low, v_high = _t_interval(out["mean"], out["sd"], out["n"], confidence)
    w_low, w_high = _wilson(out["successes"], out["n"], confidence)
    out["ci_low"] = np.where(binary, w_low, np.where(with_base, c_low, v_low))
    out["ci_high"] = np.where(binary, w_high, np.where(with_base, c_high, v_high))
    out.loc[binary, ["mean_change", "sd_change"]] = np.nan
    out["n"] = out["n"].astype(int)
    return out[_SUMMARY_COLUMNS]


# ----------------------------------------------------------------------------------------------------------
# 2. arm versus control


def _resolve_tests(kind_of: dict[str, str], with_base: dict[str, bool],
                   tests: Mapping[str, str] | None) -> dict[str, str]:
    """The test for every endpoint: the user's choice where given and allowed, else the kind's default."""
    tests = dict(tests or {})
    chosen: dict[str, str] = {}
    for ep, test in tests.items():
        if ep not in kind_of:
            raise InputError(f"tests.{ep}", test, f"a test for an endpoint in obs: {sorted(kind_of)}")
    for ep, kind in kind_of.items():
        test = tests.get(ep, DEFAULT_TEST[kind])
        allowed = CONTINUOUS_TESTS if kind == "continuous" else BINARY_TESTS
        if test not in allowed:
            raise InputError(f"tests.{ep}", test, f"one of {list(allowed)} for a {kind} endpoint")
        if test == "ancova" and not with_base[ep]:
            raise InputError(f"tests.{ep}", test, "a baseline for 'ancova'; this endpoint has none, use one of "
                             f"{[t for t in CONTINUOUS_TESTS if t != 'ancova']}")
        chosen[ep] = test
    return chosen


def _hodges_lehmann_ci(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    """Distribution-free (Hodges-Lehmann/Moses) CI of the location shift a - b from the sorted pairwise
    differences; order statistic from the normal approximation of the Mann-Whitney null (floored, so
    conservative). NaN when the samples are too small for the confidence level."""
    m, n = a.size, b.size
    diffs = np.sort(np.subtract.outer(a, b).ravel())
    mn = m * n
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    k = int(np.floor(mn / 2.0 - z * np.sqrt(mn * (m + n + 1) / 12.0)))
    if k < 1:
        return float("nan"), float("nan")
    return float(diffs[k - 1]), float(diffs[mn - k])


def _ancova(y: np.ndarray, group: np.ndarray, baseline: np.ndarray):
    """Least-squares fit of y ~ 1 + group + baseline, batched over the leading axis.

    Returns (group coefficient, its standard error, residual df); NaN where the design is rank deficient.
    """
    X = np.stack([np.ones_like(y), group, baseline], axis=-1)  # (..., N, 3)
    nobs = y.shape[-1]
    df = nobs - 3
    XtX = np.einsum("...ni,...nj->...ij", X, X)
    Xty = np.einsum("...ni,...n->...i", X, y)
    full = np.linalg.matrix_rank(X) == 3
    safe = np.where(full[..., None, None], XtX, np.eye(3))
    inv = np.linalg.inv(safe)
    beta = np.einsum("...ij,...j->...i", inv, Xty)
    resid = y - np.einsum("...ni,...i->...n", X, beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma2 = np.einsum("...n,...n->...", resid, resid) / df if df > 0 else np.full(beta.shape[:-1], np.nan)
        se = np.sqrt(sigma2 * inv[..., 1, 1])
    ok = full & (df > 0)
    return np.where(ok, beta[..., 1], np.nan), np.where(ok, se, np.nan), df


def _binary_table(x1: float, n1: float, x0: float, n0: float) -> np.ndarray:
    return np.array([[x1, n1 - x1], [x0, n0 - x0]], dtype=float)


def _compare_two(test: str, arm: np.ndarray, control: np.ndarray, confidence: float):
    """Estimate, CI and p-value of arm versus control for one cell. arm/control are 1-D (or, for 'ancova',
    2-column [change, baseline]) arrays without NaN; fewer than 2 observations per group gives NaN."""
    nan4 = (np.nan, np.nan, np.nan, np.nan)
    if len(arm) < 2 or len(control) < 2:
        return nan4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if test in ("welch_t", "student_t"):
            res = stats.ttest_ind(arm, control, equal_var=(test == "student_t"))
            ci = res.confidence_interval(confidence)
            est = float(np.mean(arm) - np.mean(control))
            return est, float(ci.low), float(ci.high), float(res.pvalue)
        if test == "mann_whitney":
            p = stats.mannwhitneyu(arm, control, alternative="two-sided").pvalue
            low, high = _hodges_lehmann_ci(arm, control, confidence)
            return float(np.median(arm) - np.median(control)), low, high, float(p)
        if test == "ancova":
            y = np.concatenate([arm[:, 0], control[:, 0]])
            base = np.concatenate([arm[:, 1], control[:, 1]])
            grp = np.concatenate([np.ones(len(arm)), np.zeros(len(control))])
            beta, se, df = _ancova(y, grp, base)
            if not np.isfinite(beta):
                return nan4
            beta, se = float(beta), float(se)
            half = stats.t.ppf(0.5 + confidence / 2.0, df) * se
            p = float(2.0 * stats.t.sf(abs(beta / se), df)) if se > 0 else float("nan")
            return beta, beta - half, beta + half, p
        # binary
        x1, n1, x0, n0 = float(arm.sum()), float(len(arm)), float(control.sum()), float(len(control))
        low, high = _newcombe(x1, n1, x0, n0, confidence)
        table = _binary_table(x1, n1, x0, n0)
        if test == "fisher":
            p = float(stats.fisher_exact(table).pvalue)
        elif (table.sum(axis=0) == 0).any():
            p = 1.0  # every patient in both arms has the same outcome: no difference to test
        else:
            p = float(stats.chi2_contingency(table, correction=False).pvalue)
        return x1 / n1 - x0 / n0, low, high, p


def compare_to_control(obs: pd.DataFrame, kinds: Mapping[str, str], control_arm: str,
                       tests: Mapping[str, str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Each non-control arm against the control arm, per endpoint and visit: effect estimate, CI and p-value.

    Continuous endpoints compare change from baseline (the value when there is no baseline):
    "welch_t" (default; difference of means, Welch CI), "student_t" (pooled-variance CI), "mann_whitney"
    (estimate = difference of medians, p from scipy's two-sided Mann-Whitney U, CI = Hodges-Lehmann/Moses
    interval of the location shift, normal approximation, NaN for samples too small for the level) or
    "ancova" (change ~ 1 + arm + baseline by least squares; estimate = arm coefficient, t CI).
    Binary endpoints: estimate = difference in rates with the Newcombe hybrid score CI; "chi2" (default,
    Pearson without Yates correction; p = 1 when all patients share one outcome) or "fisher" (exact).
    A group with fewer than 2 observations gives NaN estimate, CI and p.
    """
    confidence = _check_confidence(confidence)
    kind_of = _check_obs(obs, kinds)
    arms = pd.unique(obs["arm"])
    if control_arm not in arms:
        raise InputError("control_arm", control_arm, f"an arm in obs: {sorted(map(str, arms))}")
    with_base = _has_baseline(obs)
    chosen = _resolve_tests(kind_of, with_base, tests)
    # each endpoint x visit's rows by position (no copy of the table, which for a million patients is millions of
    # rows), in the groups' sorted order and each group's rows in table order, as iterating the groupby gives them
    groups = obs.groupby(["endpoint", "visit_day"], sort=True, observed=True)
    number = groups.ngroup().to_numpy(dtype=float)
    order = np.argsort(number, kind="stable")
    sizes = groups.size()
    starts = np.concatenate([[0], np.cumsum(sizes.to_numpy())])
    arm_code, arm_name = pd.factorize(obs["arm"])
    values = {c: obs[c].to_numpy(dtype=float, na_value=np.nan)
              for c in ("value", "change", "baseline") if c in obs.columns}

    rows = []
    for g, (ep, visit) in enumerate(sizes.index):
        test = chosen[ep]
        if kind_of[ep] == "binary":
            cols = ["value"]
        elif test == "ancova":
            cols = ["change", "baseline"]
        else:
            cols = ["change"] if with_base[ep] else ["value"]
        at = order[starts[g]:starts[g + 1]]
        by_arm = {}
        for code in pd.unique(arm_code[at]):
            if code < 0:
                continue
            rows_of = at[arm_code[at] == code]
            m = np.column_stack([values[c][rows_of] for c in cols])
            by_arm[arm_name[code]] = m[~np.isnan(m).any(axis=1)]
        ctrl = by_arm.get(control_arm, np.empty((0, len(cols))))
        if test != "ancova":
            ctrl = ctrl[:, 0]
        for arm in sorted(a for a in arms if a != control_arm):
            vals = by_arm.get(arm, np.empty((0, len(cols))))
            if test != "ancova":
                vals = vals[:, 0]
            est, low, high, p = _compare_two(test, vals, ctrl, confidence)
            rows.append((arm, control_arm, ep, visit, est, low, high, p, test, len(vals), len(ctrl)))
    return pd.DataFrame(rows, columns=_COMPARE_COLUMNS)


# ----------------------------------------------------------------------------------------------------------
# 3. OMERACT-OARSI responder


def _scale(x, where: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    finite = arr[np.isfinite(arr)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 100.0):
        raise InputError(where, float(finite.min() if finite.min() < 0 else finite.max()),
                         "scores on a 0-100 normalised scale (higher = worse)")
    return arr


def _improved(before: np.ndarray, after: np.ndarray, relative: float, absolute: float) -> np.ndarray:
    """Improvement (before - after, higher = worse) of at least `relative` of baseline and `absolute` points."""
    gain = before - after
    with np.errstate(invalid="ignore"):
        return (gain >= absolute) & (gain >= relative * before)


def omeract_oarsi_responder(pain0, pain1, function0, function1, global0=None, global1=None) -> np.ndarray:
    """OMERACT-OARSI responder (Pham et al. 2004, key ``pham2004``) on 0-100 scales where higher = worse.

    Responder if pain or function improves by >= 50% and >= 20 points, or if at least two of pain, function
    and patient global improve by >= 20% and >= 10 points. Without a patient global, the second rule needs
    both pain and function. Arrays broadcast; a missing (NaN) score counts as no improvement.
    """
    p0, p1 = _scale(pain0, "pain0"), _scale(pain1, "pain1")
    f0, f1 = _scale(function0, "function0"), _scale(function1, "function1")
    if (global0 is None) != (global1 is None):
        raise InputError("global0" if global0 is None else "global1", None,
                         "both global0 and global1, or neither")
    try:
        shape = np.broadcast_shapes(p0.shape, p1.shape, f0.shape, f1.shape,
                                    *(() if global0 is None else (np.shape(global0), np.shape(global1))))
    except ValueError as exc:
        raise InputError("pain0, pain1, function0, function1, global0, global1", str(exc),
                         "arrays of broadcastable shapes") from exc
    high = _improved(p0, p1, 0.5, 20.0) | _improved(f0, f1, 0.5, 20.0)
    moderate = [_improved(p0, p1, 0.2, 10.0), _improved(f0, f1, 0.2, 10.0)]
    if global0 is not None:
        moderate.append(_improved(_scale(global0, "global0"), _scale(global1, "global1"), 0.2, 10.0))
    count = np.sum(np.broadcast_arrays(*moderate), axis=0)
    return np.broadcast_to(high | (count >= 2), shape).copy()


# ----------------------------------------------------------------------------------------------------------
# 4-6. power


def power_from_pvalues(p_values, alpha: float = 0.05) -> tuple[float, float, float]:
    """Power = share of replicate trials with p < alpha, with its 95% Wilson interval.

    A NaN p-value (a replicate the test could not analyse) counts as not significant.
    """
    alpha = _check_confidence(alpha, "alpha")
    p = np.asarray(p_values, dtype=float).ravel()
    if p.size == 0:
        raise InputError("p_values", "an empty array", "at least one replicate's p-value")
    with np.errstate(invalid="ignore"):
        hits = int(np.count_nonzero(p < alpha))
    low, high = _wilson(hits, p.size, 0.95)
    return hits / p.size, float(low), float(high)


def _pool(values, test: str, where: str) -> np.ndarray:
    """A per-patient pool as float array: 1-D, or (n, 2) [change, baseline] for 'ancova'; NaN rows dropped."""
    arr = np.asarray(values, dtype=float)
    if test == "ancova":
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(where, f"array of shape {arr.shape}", "a 2-column array [change, baseline] for 'ancova'")
        arr = arr[~np.isnan(arr).any(axis=1)]
    else:
        if arr.ndim != 1:
            raise InputError(where, f"array of shape {arr.shape}", f"a 1-D array for '{test}'")
        arr = arr[~np.isnan(arr)]
        if test in BINARY_TESTS and not np.isin(arr, (0.0, 1.0)).all():
            raise InputError(where, arr[~np.isin(arr, (0.0, 1.0))][:5].tolist(), f"0/1 values for '{test}'")
    if len(arr) == 0:
        raise InputError(where, "no non-missing values", "at least one patient")
    return arr


def _draw(pool: np.ndarray, n: int, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """(replicates, n, ...) draws from the pool: without replacement if it holds >= n patients, else with."""
    size = len(pool)
    if size >= n:
        idx = np.stack([rng.choice(size, n, replace=False) for rng in rngs])
    else:
        idx = np.stack([rng.integers(0, size, n) for rng in rngs])
    return pool[idx]


def _pvalues(test: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sided p-values of `test` for every replicate (rows of a and b), vectorised where scipy allows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if test in ("welch_t", "student_t"):
            return stats.ttest_ind(a, b, axis=1, equal_var=(test == "student_t")).pvalue
        if test == "mann_whitney":
            return stats.mannwhitneyu(a, b, axis=1, alternative="two-sided").pvalue
        if test == "ancova":
            y = np.concatenate([a[..., 0], b[..., 0]], axis=1)
            base = np.concatenate([a[..., 1], b[..., 1]], axis=1)
            grp = np.broadcast_to(np.r_[np.ones(a.shape[1]), np.zeros(b.shape[1])], y.shape)
            beta, se, df = _ancova(y, grp, base)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(se > 0, 2.0 * stats.t.sf(np.abs(beta / se), max(df, 1)), np.nan)
        x1, x0 = a.sum(axis=1), b.sum(axis=1)
        n1, n0 = float(a.shape[1]), float(b.shape[1])
        if test == "chi2":
            # Pearson statistic of the 2x2 table, no continuity correction (= chi2_contingency(correction=False))
            s, f = x1 + x0, (n1 - x1) + (n0 - x0)
            with np.errstate(divide="ignore", invalid="ignore"):
                stat = (n1 + n0) * (x1 * (n0 - x0) - x0 * (n1 - x1)) ** 2 / (n1 * n0 * s * f)
            return np.where((s > 0) & (f > 0), stats.chi2.sf(stat, 1), 1.0)
        # fisher: scipy's exact test is scalar; evaluate each distinct table once
        tables, inverse = np.unique(np.stack([x1, x0], axis=1), axis=0, return_inverse=True)
        p = np.array([stats.fisher_exact(_binary_table(t1, n1, t0, n0)).pvalue for t1, t0 in tables])
        return p[np.ravel(inverse)]


def simulated_power(arm_values, control_values, n_per_arm: int, test: str, replicates: int, seed: int,
                    alpha: float = 0.05) -> dict:
    """Power of a two-arm trial with n_per_arm patients per arm, by repeating it in silico.

    Each replicate draws n_per_arm patients from each per-patient pool (without replacement when the pool is
    large enough, else with) and runs `test`; pools are 1-D arrays of the analysed quantity (e.g. change at the
    primary visit; 0/1 for "chi2"/"fisher") or, for "ancova", 2-column arrays [change, baseline]. Replicate r
    draws from np.random.default_rng([seed, r, POWER_STREAM]), so results are reproducible and replicate r is
    the same trial whatever the number of replicates (and across n_per_arm it reuses the same random stream).
    """
    allowed = CONTINUOUS_TESTS + BINARY_TESTS
    if test not in allowed:
        raise InputError("test", test, f"one of {list(allowed)}")
    if int(n_per_arm) != n_per_arm or n_per_arm < 2:
        raise InputError("n_per_arm", n_per_arm, "an integer >= 2")
    if int(replicates) != replicates or replicates < 1:
        raise InputError("replicates", replicates, "an integer >= 1")
    if test == "ancova" and n_per_arm < 3:
        raise InputError("n_per_arm", n_per_arm, "an integer >= 3 for 'ancova' (residual degrees of freedom)")
    alpha = _check_confidence(alpha, "alpha")
    arm = _pool(arm_values, test, "arm_values")
    ctrl = _pool(control_values, test, "control_values")
    n, reps = int(n_per_arm), int(replicates)
    rngs = [np.random.default_rng([int(seed), r, POWER_STREAM]) for r in range(reps)]
    a = _draw(arm, n, rngs)
    b = _draw(ctrl, n, rngs)
    power, low, high = power_from_pvalues(_pvalues(test, a, b), alpha)
    return {"power": power, "ci_low": low, "ci_high": high, "replicates": reps, "n_per_arm": n}


def sample_size_for_power(arm_values, control_values, test: str, target: float = 0.8,
                          sizes: Sequence[int] = (5, 10, 20, 40, 80, 160, 320), replicates: int = 500,
                          seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Simulated power at each candidate n per arm, marking the smallest n whose power reaches target.

    Columns n_per_arm, power, ci_low, ci_high and reaches_target (True only on the row of the smallest n whose
    point estimate of power is >= target, judged in order of increasing n); the same n (or None if no size
    reaches it) is in ``result.attrs["n_for_target"]``. Every size uses the same seed (common random numbers).
    """
    target = _check_confidence(target, "target")
    try:
        ordered = sorted({int(s) for s in sizes})
    except (TypeError, ValueError) as exc:
        raise InputError("sizes", sizes, "integers >= 2") from exc
    if not ordered or ordered[0] < 2 or any(int(s) != s for s in sizes):
        raise InputError("sizes", list(sizes), "a non-empty list of integers >= 2")
    rows = [simulated_power(arm_values, control_values, n, test, replicates, seed, alpha) for n in ordered]
    out = pd.DataFrame(rows)[["n_per_arm", "power", "ci_low", "ci_high"]]
    reached = np.flatnonzero(out["power"].to_numpy() >= target)
    out["reaches_target"] = False
    n_for_target = None
    if reached.size:
        out.loc[reached[0], "reaches_target"] = True
        n_for_target = int(out.loc[reached[0], "n_per_arm"])
    out.attrs["n_for_target"] = n_for_target
    out.attrs["target"] = target
    return out
