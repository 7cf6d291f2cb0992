"""Repeats of a trial drawn with replacement from a simulated pool: the statistic a rerun of the trial would report.

Small repeats draw the patients themselves. A large one (a design scaled to 500,000 patients an arm, resampled from
a pool of a few hundred) draws how many times each pool patient is taken instead: the counts of n draws with
replacement from m patients are multinomial(n, 1/m each), so the repeat's mean or median is the same random
variable at O(m) memory instead of O(n) (2,000 repeats of 500,000 patients would be 8 GB of indices). NumPy has the
multinomial; the weighted median over counts is written here because neither NumPy nor SciPy has one.
"""

from __future__ import annotations

import warnings

import numpy as np

DIRECT_LIMIT = 4_000_000  # draws (repeats x patients) of one arm above which the counts are drawn instead


def trial_statistic(statistic: str, a: np.ndarray, c: np.ndarray | None) -> np.ndarray:
    """A published statistic over the last axis of resampled arms (NaN = missed visit): a (r, n), c (r, m)."""
    with warnings.catch_warnings():  # a replicate whose patients all missed the visit is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        if statistic in ("median", "median_change"):
            return np.nanmedian(a, axis=-1)
        if statistic.startswith("difference"):
            return np.nanmean(a, axis=-1) - np.nanmean(c, axis=-1)
        return np.nanmean(a, axis=-1)


def _counted(pool: np.ndarray, counts: np.ndarray, median: bool) -> np.ndarray:
    """Each repeat's nanmean (or nanmedian) of the pool taken ``counts`` times per patient: counts (r, m)."""
    ok = np.isfinite(pool)
    x, k = pool[ok], counts[:, ok]
    total = k.sum(axis=1)
    out = np.full(len(counts), np.nan)
    has = total > 0
    if not median:
        out[has] = (k[has] @ x) / total[has]
        return out
    order = np.argsort(x, kind="stable")
    x, cum = x[order], np.cumsum(k[:, order], axis=1)
    for i in np.flatnonzero(has):  # np.nanmedian's: the middle order statistic, or the mean of the two middle ones
        lo, hi = (total[i] - 1) // 2, total[i] // 2
        out[i] = 0.5 * (x[np.searchsorted(cum[i], lo, side="right")] + x[np.searchsorted(cum[i], hi, side="right")])
    return out


def repeated_statistic(statistic: str, a: np.ndarray, size_a: int, c: np.ndarray | None, size_c: int | None,
                       repeats: int, rng: np.random.Generator) -> np.ndarray:
    """The statistic of ``repeats`` trials of ``size_a`` (and ``size_c`` control) patients drawn with replacement
    from the pools ``a`` (and ``c``, for a difference against control)."""
    median = statistic in ("median", "median_change")
    if repeats * max(size_a, size_c or 0) <= DIRECT_LIMIT:  # the patients themselves (the bundled designs' numbers)
        ra = a[rng.integers(0, len(a), size=(repeats, size_a))]
        rc = None if c is None else c[rng.integers(0, len(c), size=(repeats, size_c))]
        return trial_statistic(statistic, ra, rc)
    va = _counted(a, rng.multinomial(size_a, np.full(len(a), 1.0 / len(a)), size=repeats), median)
    if c is None or not statistic.startswith("difference"):
        return va
    return va - _counted(c, rng.multinomial(size_c, np.full(len(c), 1.0 / len(c)), size=repeats), False)
