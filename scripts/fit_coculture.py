"""Fit the in vitro suppression constants (K_kyn_T, K_pge2_T) and the PGE2 licensing fold (E_pge2) to the
co-culture targets, with the model's own mechanisms in a culture well (mscsim.coculture).

Re-run after changing a mechanism or a parameter the well uses:  python scripts/fit_coculture.py

Residuals (all from data/validation/tissue.yaml, nothing typed here):
  - IM09-pge2-fold: log of simulated / observed PGE2 fold at 24 h (MSC:PBMC 1:10 vs MSCs alone);
  - the suppression-vs-ratio targets (I1 at 1:3 and 1:30; IM-04 at 1:5 and 1:10): simulated inhibition minus the
    middle of each observed range;
  - kynurenine and PGE2 contribute equally to the suppressive signal at 1:3 at the end of the culture (log of
    the ratio of their terms): adding tryptophan (Meisel 2004) and blocking PGE2 (Am J Stem Cells 2012) each
    restore proliferation, so neither dominates. Without this the two constants are not identifiable.
Prints the fitted values and the simulated targets; tissue.yaml is edited by hand from the output.
"""

from __future__ import annotations

import copy

import numpy as np
from scipy.optimize import least_squares

from mscsim.analysis.validation import load_targets
from mscsim.coculture.measures import Runner, measure, target_spec
from mscsim.coculture.well import well_parameters
from mscsim.model.parameters import DATA_DIR

FITTED = ("E_pge2", "K_kyn_T", "K_pge2_T")
FOLD, HIGH = "IM09-pge2-fold", "I1-ratio-1to3"
RATIO_TARGETS = ("I1-ratio-1to3", "I1-ratio-1to30", "IM04-ratio-1to5", "IM04-ratio-1to10")


def targets() -> dict[str, dict]:
    return {t["id"]: t for t in load_targets([DATA_DIR / "validation" / "tissue.yaml"])}


def with_values(target: dict, values: dict[str, float]) -> dict:
    """The target with the trial parameter values as preset overrides (only the ratios it reads, no licensing)."""
    t = copy.deepcopy(target)
    cc = t.setdefault("coculture", {})
    cc["parameters"] = {**cc.get("parameters", {}), **values}
    return t


def middle(target: dict) -> float:
    obs = target["observed"]
    return 0.5 * (obs["low"] + obs["high"])


def residuals(logs: np.ndarray, tg: dict[str, dict]) -> np.ndarray:
    values = dict(zip(FITTED, np.exp(logs)))
    run = Runner()
    fold = measure(with_values(tg[FOLD], values), run)
    inhibition = {i: measure(with_values(tg[i], values), run) for i in RATIO_TARGETS}
    res = run(target_spec(with_values(tg[HIGH], values)))
    c = res.condition(tg[HIGH]["measure"]["ratio"])
    share = (res.value("kyn", c) / values["K_kyn_T"]) / (res.value("pge2", c) / values["K_pge2_T"])
    r = np.array([np.log(fold / tg[FOLD]["observed"]["value"]), *(v - middle(tg[i]) for i, v in inhibition.items()),
                  np.log(share)])
    print("  " + "  ".join(f"{k}={v:.4g}" for k, v in values.items()) + f"  -> fold {fold:.3g}, inhibition "
          + ", ".join(f"{tg[i]['measure']['ratio']} {v:.3f}" for i, v in inhibition.items())
          + f", kyn/PGE2 share {share:.3g}", flush=True)
    return r


def main() -> None:
    tg = targets()
    pset = well_parameters(target_spec(tg[HIGH]))
    start = np.log([pset[n].value for n in FITTED])
    lo = np.log([pset[n].bounds[0] for n in FITTED])
    hi = np.log([pset[n].bounds[1] for n in FITTED])
    fit = least_squares(residuals, start, bounds=(lo, hi), args=(tg,), x_scale=1.0, diff_step=1e-3, xtol=1e-4,
                        ftol=1e-6)
    print(f"\n{fit.message} ({fit.nfev} evaluations); residuals {np.round(fit.fun, 4)}")
    for name, v in zip(FITTED, np.exp(fit.x)):
        print(f"{name}: {pset[name].value:g} -> {float(f'{v:.3g}'):g} {pset[name].units}")


if __name__ == "__main__":
    main()
