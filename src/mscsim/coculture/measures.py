"""Validation measures on co-culture presets: a readout at a ratio, a fold change, an IFN-gamma series.

A target names a bundled preset (``coculture: {preset: NAME, ...}``, other fields deep-merged into it) and a
measure; ``analysis.validation`` hands such targets here.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import yaml

from ..errors import DataError
from ..model.parameters import DATA_DIR
from .spec import CocultureSpec, coculture_from_dict, parse_ratio
from .well import CocultureResult, msc_alone_readout, run_coculture

KINDS = ("coculture", "coculture_fold", "msc_licensing_series")
STATISTICS = ("min_rise", "last_step_share")


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def target_spec(target: dict) -> CocultureSpec:
    """The preset a target runs: the bundled preset it names, with the target's changes merged in."""
    cc = dict(target.get("coculture") or {})
    name = cc.pop("preset", None)
    path = DATA_DIR / "examples" / f"{name}.yaml"
    if name is None or not path.exists():
        raise DataError(f"validation target {target['id']}: 'coculture.preset' must name a bundled co-culture preset")
    return coculture_from_dict(_merge(yaml.safe_load(path.read_text()), cc), file=f"validation target {target['id']}")


class Runner:
    """Runs each distinct preset once, however many targets read it."""

    def __init__(self):
        self._cache: dict[str, CocultureResult] = {}

    def __call__(self, spec: CocultureSpec) -> CocultureResult:
        key = json.dumps(spec.resolved(), sort_keys=True)
        if key not in self._cache:
            self._cache[key] = run_coculture(spec)
        return self._cache[key]


def series_statistic(y: np.ndarray, statistic: str) -> float:
    """'min_rise': the smallest step of a series as a share of its whole rise (> 0: it rises at every step);
    'last_step_share': the last step's share of the whole rise (near 0: it has saturated)."""
    span = y[-1] - y[0]
    if span <= 0:
        return float("-inf") if statistic == "min_rise" else float("inf")
    if statistic == "min_rise":
        return float(np.min(np.diff(y)) / span)
    if statistic == "last_step_share":
        return float((y[-1] - y[-2]) / span)
    raise DataError(f"unknown series statistic '{statistic}'; one of {STATISTICS}")


def measure(target: dict, run: Runner) -> float:
    """Evaluate a co-culture target's measure."""
    m = target["measure"]
    spec = target_spec(target)
    kind = m["kind"]
    if kind == "msc_licensing_series":
        y = msc_alone_readout(spec, m["readout"], float(m["msc_per_well"]), m["ifng_ng_per_ml"], m["hours"])
        return series_statistic(y, m["statistic"])
    res = run(spec)
    cond = res.condition(m["ratio"], bool(m.get("prelicensed", False)))
    value = res.value(m["readout"], cond, m.get("time_h"))
    if kind == "coculture":
        return value
    if kind == "coculture_fold":
        if m["compare"] == "no_msc":
            return value / res.value(m["readout"], res.control, m.get("time_h"))
        if m["compare"] == "msc_alone":  # the same MSCs, alone in medium for as long
            msc = parse_ratio(m["ratio"]) * spec.well.responders_per_well
            hours = m.get("time_h", spec.duration_days * 24.0)
            return value / float(msc_alone_readout(spec, m["readout"], msc, 0.0, hours)[0])
        raise DataError(f"validation target {target['id']}: compare must be 'no_msc' or 'msc_alone'")
    raise DataError(f"unknown co-culture measure kind '{kind}'")
