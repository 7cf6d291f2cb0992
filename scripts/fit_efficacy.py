"""Fit each disease's one MSC-efficacy parameter to one published trial number, on the virtual cohort.

Re-run after changing a mechanism or a parameter the tissue model uses:
    python scripts/fit_efficacy.py knee_oa          # or: perianal_fistula, all

Each fit runs a bundled trial design (data/trials/) with a large pool per arm and the same seed, so every
candidate value sees the same patients, noise, placebo and standard-care draws, and solves (Brent) for the
parameter value at which the simulated arm-vs-control difference equals the published one. Targets are read
from the design's `published` rows (nothing is typed here); every other published number of every design is a
prediction of the fitted model, and `mscsim trial` says which parameters were fitted to what.

  knee_oa: g_trophic (MSC trophic support of repair, tissue.yaml) to the pooled RCT difference in pain VAS change
    at the last follow-up (-13.2 mm; Bone Joint Res 2020 meta-analysis of 7 RCTs), read from the Lee 2019 design
    at day 180. The pooled WOMAC difference (-7.2) is a check, not a target.
  perianal_fistula: k_struct_rep (disease_perianal_fistula.yaml: bridging of the tract wall at saturating growth
    factors) to ADMIRE-CD's week-24 difference in combined remission (+15.8 points, Panes 2016). Week 52 (Panes
    2018) and the Japanese single-arm trial (Furukawa 2023) are predictions.
Prints the fitted values; the data files are edited by hand from the output.
"""

from __future__ import annotations

import argparse

import numpy as np
import yaml
from scipy.optimize import brentq

from mscsim.trials.design import DESIGN_DIR, design_from_dict
from mscsim.trials.runner import Chunk, arm_offsets, run_chunk

FITS = {
    "knee_oa": {"design": "knee_oa_lee_2019", "parameter": "g_trophic", "endpoint": "pain_vas",
                "bracket": (2.0, 30.0), "log": False},
    "perianal_fistula": {"design": "perianal_fistula_admire_cd", "parameter": "k_struct_rep",
                         "endpoint": "combined_remission", "bracket": (3e-4, 3e-3), "log": True},
}
STATISTIC = {"difference_mean_change": "change", "difference_rate": "value"}


def differences(design_data: dict, parameter: str, value: float, pool: int, day: float) -> dict[str, float]:
    """Simulated (cells - control) difference at ``day`` per endpoint: in mean change and in mean value."""
    data = {**design_data, "parameters": {**design_data.get("parameters", {}), parameter: float(value)},
            "dropout": {"rate_per_year": 0.0}}
    data.pop("power", None)
    data["arms"] = [{**a, "n": pool} for a in design_data["arms"] if a.get("control") or "regimen" in a]
    design = design_from_dict(data, file="fit")
    offsets = arm_offsets(design)
    means = {}
    for arm in design.arms:
        long, _ = run_chunk(design, Chunk(arm.name, offsets[arm.name], arm.n))
        means[arm.name] = long[long["visit_day"] == day].groupby("endpoint")[["change", "value"]].mean()
    control = design.control.name
    cells = next(a.name for a in design.arms if not a.control)
    d = means[cells] - means[control]
    return {f"{ep}.{col}": float(d.loc[ep, col]) for ep in d.index for col in d.columns}


def fit(name: str, pool: int) -> float:
    spec = FITS[name]
    data = yaml.safe_load((DESIGN_DIR / f"{spec['design']}.yaml").read_text())
    rows = [p for p in data["published"] if p["statistic"] in STATISTIC]
    target = next(p for p in rows if p["endpoint"] == spec["endpoint"])
    day, key = float(target["visit_day"]), f"{spec['endpoint']}.{STATISTIC[target['statistic']]}"
    print(f"{name}: {spec['parameter']} -> {key} at day {day:g} = {target['value']} ({target['source']})", flush=True)

    def residual(x: float) -> float:
        v = float(np.exp(x)) if spec["log"] else x
        d = differences(data, spec["parameter"], v, pool, day)
        shown = ", ".join(f"{k} {d[k]:+.3g}" for k in sorted(d) if k.split(".")[0] in data["endpoints"])
        print(f"  {spec['parameter']} = {v:.4g}: {shown}", flush=True)
        return d[key] - target["value"]

    lo, hi = spec["bracket"]
    x = brentq(residual, *((np.log(lo), np.log(hi)) if spec["log"] else (lo, hi)), xtol=0.01, rtol=0.005)
    value = float(np.exp(x)) if spec["log"] else x
    d = differences(data, spec["parameter"], value, pool, day)
    print(f"fitted {spec['parameter']} = {value:.3g}")
    for p in rows:
        if float(p["visit_day"]) == day:
            k = f"{p['endpoint']}.{STATISTIC[p['statistic']]}"
            print(f"  {k}: simulated {d[k]:+.3g}, published {p['value']:+.3g}  "
                  f"({'fitted' if p is target else 'check'})")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("disease", choices=[*FITS, "all"])
    ap.add_argument("--pool", type=int, default=300, help="virtual patients per arm (default 300)")
    args = ap.parse_args()
    for name in (FITS if args.disease == "all" else [args.disease]):
        fit(name, args.pool)


if __name__ == "__main__":
    main()
