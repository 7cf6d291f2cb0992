"""Global sensitivity of one scalar output over the parameters' uncertainty distributions, with SALib.

1. Morris elementary effects screen every uncertain parameter (``trajectories`` trajectories, 4 levels).
2. Sobol first-order and total indices with bootstrap confidence intervals (Saltelli's estimator on a scrambled
   Sobol sequence of ``samples`` base points) for the ``top`` parameters of the screen; every other parameter
   varies too, as one group ("other parameters"), so the indices are shares of the output's whole variance and the
   group's total index says how much the unscreened parameters still explain.
3. A convergence check: the same indices from the first half of the sample (half the trajectories; the first
   ``samples / 2`` Sobol points, itself a Sobol design) beside the full sample.

Each sample point is mapped to parameter values through each parameter's inverse CDF, trimmed to its 0.5-99.5 %
quantiles (a normal or lognormal prior has no end). Rows are evaluated in chunks, each as one batch of parameter sets
through the batched solver, in this process or in local worker processes; a finished chunk is written to disk
atomically, so a stopped run resumes, and a row's number does not depend on its chunk or worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from SALib.analyze import morris as morris_analyze
from SALib.analyze import sobol as sobol_analyze
from SALib.sample import morris as morris_sample
from SALib.sample import sobol as sobol_sample

from .. import __version__
from ..errors import InputError, MscsimError
from ..io.outputs import atomic_output_dir, check_output_dir
from ..uncertainty.priors import prior_text

EPS = 0.005  # unit samples map to the 0.5-99.5 % quantiles of each distribution
LEVELS = 4  # Morris grid levels
RESAMPLES = 1000  # bootstrap resamples of the confidence intervals
CONF = 0.95
INFLUENTIAL = 0.05  # total Sobol index above which a parameter "matters"
STABLE_ST = 0.05  # Sobol total indices within this (absolute) between half and full sample: converged
OTHERS = "other parameters"
RESULT_FILES = ("sensitivity.csv", "convergence.csv", "sensitivity.png", "evaluations.npz", "manifest.json")
DEFAULT_CHUNK_ROWS = 128


@dataclass(frozen=True)
class SensitivityResult:
    out: Path
    table: pd.DataFrame
    convergence: pd.DataFrame
    manifest: dict


def _problem(names, groups=None) -> dict:
    p = {"num_vars": len(names), "names": list(names), "bounds": [[0.0, 1.0]] * len(names)}
    if groups is not None:
        p["groups"] = list(groups)
    return p


def _unit(x: np.ndarray) -> np.ndarray:
    return EPS + (1.0 - 2.0 * EPS) * np.asarray(x, dtype=float)


def check_options(method: str, samples: int, trajectories: int, top: int, workers: int, chunk_rows: int) -> None:
    """Bad options are errors naming the option, before any work."""
    if method not in ("morris", "sobol"):
        raise InputError("--method", method, "'morris' (screening) or 'sobol' (screening, then Sobol indices)")
    if not isinstance(samples, int) or samples < 2:
        raise InputError("--samples", samples, "an integer >= 2 (Morris trajectories, or Sobol base samples)")
    if method == "sobol" and (samples < 4 or samples & (samples - 1)):
        raise InputError("--samples", samples, "a power of two >= 4 for Sobol (the convergence check halves it)")
    if not isinstance(trajectories, int) or trajectories < 2:
        raise InputError("--trajectories", trajectories, "an integer >= 2 (Morris trajectories)")
    if not isinstance(top, int) or top < 1:
        raise InputError("--top", top, "an integer >= 1 (parameters given their own Sobol indices)")
    if workers < 1:
        raise InputError("--workers", workers, "an integer >= 1 (local processes)")
    if chunk_rows < 1:
        raise InputError("--chunk-size", chunk_rows, "an integer >= 1 (parameter sets per batch)")


# --- chunked, resumable evaluation -------------------------------------------------------------------------------

def _chunk_file(store: Path, stage: str, a: int, b: int) -> Path:
    return store / f"{stage}_{a:09d}_{b:09d}.npy"


def _evaluate(target, values: np.ndarray) -> np.ndarray:
    return target.evaluate(values)


def evaluate_rows(target, values: np.ndarray, store: Path, stage: str, *, chunk_rows: int, workers: int,
                  progress=None) -> np.ndarray:
    """The output for every row of ``values`` (parameter sets), chunk by chunk; chunks already in ``store`` are
    read back, new ones written atomically as they finish."""
    n = len(values)
    bounds = [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]
    y = np.full(n, np.nan)
    pending = []
    for a, b in bounds:
        f = _chunk_file(store, stage, a, b)
        if f.exists():
            y[a:b] = np.load(f)
        else:
            pending.append((a, b))
    done = len(bounds) - len(pending)
    if progress:
        progress(done, len(bounds))

    def store_chunk(a, b, out):
        f = _chunk_file(store, stage, a, b)
        tmp = f.with_name(f".{f.name}.tmp{os.getpid()}.npy")
        np.save(tmp, np.asarray(out, dtype=float))
        os.replace(tmp, f)
        y[a:b] = out

    if workers <= 1 or len(pending) <= 1:
        for a, b in pending:
            store_chunk(a, b, _evaluate(target, values[a:b]))
            done += 1
            if progress:
                progress(done, len(bounds))
        return y
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    target.prepare()  # compile once, into the on-disk cache the workers load it from
    # workers by 'forkserver' (or 'spawn'), never 'fork': forking a process whose libraries run threads (Numba's
    # OpenMP layer, JAX, a BLAS) can kill or deadlock the child
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["mscsim.analysis.sensitivity"])
    from ..trials.runner import one_thread_per_worker

    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=one_thread_per_worker) as pool:
        futures = {pool.submit(_evaluate, target, values[a:b]): (a, b) for a, b in pending}
        for fut in as_completed(futures):
            a, b = futures[fut]
            store_chunk(a, b, fut.result())
            done += 1
            if progress:
                progress(done, len(bounds))
    return y


# --- the analyses ------------------------------------------------------------------------------------------------

def morris_indices(names, X: np.ndarray, Y: np.ndarray, trajectories: int, seed: int) -> tuple[pd.DataFrame, int]:
    """Morris mu*, its bootstrap CI half-width and sigma per parameter from the first ``trajectories`` trajectories;
    a trajectory with a failed evaluation is left out (returns the table and how many were left out)."""
    k = len(names)
    step = k + 1
    Xt = X[:trajectories * step].reshape(trajectories, step, k)
    Yt = Y[:trajectories * step].reshape(trajectories, step)
    keep = np.isfinite(Yt).all(axis=1)
    if keep.sum() < 2:
        raise MscsimError(f"Morris screening: only {int(keep.sum())} of {trajectories} trajectories evaluated; the "
                          "output could not be computed for most parameter sets")
    Si = morris_analyze.analyze(_problem(names), Xt[keep].reshape(-1, k), Yt[keep].ravel(), num_resamples=RESAMPLES,
                                conf_level=CONF, num_levels=LEVELS, seed=seed)
    table = pd.DataFrame({"parameter": list(names), "mu_star": Si["mu_star"], "mu_star_conf": Si["mu_star_conf"],
                          "mu": Si["mu"], "sigma": Si["sigma"]})
    return table, int((~keep).sum())


def sobol_indices(names, groups, Y: np.ndarray, n_base: int, seed: int) -> tuple[pd.DataFrame, int]:
    """Sobol first-order and total indices with bootstrap CIs per group from the first ``n_base`` base points; a
    base point with a failed evaluation is left out."""
    labels = list(dict.fromkeys(groups))
    step = len(labels) + 2
    Yb = Y[:n_base * step].reshape(n_base, step)
    keep = np.isfinite(Yb).all(axis=1)
    if keep.sum() < 2:
        raise MscsimError(f"Sobol indices: only {int(keep.sum())} of {n_base} base samples evaluated")
    if np.nanvar(Yb[keep]) == 0:
        zero = np.zeros(len(labels))
        return pd.DataFrame({"parameter": labels, "S1": zero, "S1_conf": zero, "ST": zero, "ST_conf": zero}), \
            int((~keep).sum())
    Si = sobol_analyze.analyze(_problem(names, groups), Yb[keep].ravel(), calc_second_order=False,
                               num_resamples=RESAMPLES, conf_level=CONF, seed=seed)
    table = pd.DataFrame({"parameter": labels, "S1": Si["S1"], "S1_conf": Si["S1_conf"], "ST": Si["ST"],
                          "ST_conf": Si["ST_conf"]})
    return table, int((~keep).sum())


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


# --- the run -----------------------------------------------------------------------------------------------------

def _digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_store(store: Path, record: dict) -> None:
    run_file = store / "run.json"
    if run_file.exists():
        old = json.loads(run_file.read_text())
        if old.get("digest") != record["digest"]:
            raise InputError("--out", str(store.with_name(store.name.removesuffix(".chunks"))),
                             "a new folder, or the folder of an interrupted run of the same target, output, options "
                             f"and mscsim version (its digest is {old.get('digest')!r}, this run's "
                             f"{record['digest']!r}); remove {store} to start afresh")
    else:
        store.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(record, indent=2, default=str))


def chunk_store(out: Path) -> Path:
    return out.with_name(out.name + ".chunks")


def run_sensitivity(target, out: str | Path, *, method: str = "sobol", samples: int | None = None,
                    trajectories: int = 10, top: int = 10, seed: int = 0, workers: int = 1,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, progress=None, keep_chunks: bool = False
                    ) -> SensitivityResult:
    """Morris screening of every uncertain parameter of ``target``, then (``method='sobol'``) Sobol indices of the
    ``top`` ones; writes sensitivity.csv (ranked), convergence.csv, sensitivity.png, evaluations.npz and a manifest
    to ``out`` (atomically). ``samples``: Morris trajectories for 'morris' (default ``trajectories``), Sobol base
    samples for 'sobol' (default 256). ``progress(done, total, stage)`` reports chunks."""
    samples = samples if samples is not None else (trajectories if method == "morris" else 256)
    if method == "morris":
        trajectories = samples
    check_options(method, samples, trajectories, top, workers, chunk_rows)
    out = Path(out)
    check_output_dir(out)
    space = target.space
    names = list(space.names)
    if len(names) < 2:
        raise InputError("--output", target.output, "an output of a run with at least 2 uncertain parameters")
    started = time.time()
    record = {"target": target.record(), "method": method, "samples": samples, "trajectories": trajectories,
              "top": top, "seed": seed, "chunk_rows": chunk_rows, "mscsim_version": __version__, "eps": EPS,
              "parameters": names}
    record["digest"] = _digest(record)
    store = chunk_store(out)
    _check_store(store, record)
    target.prepare()

    def report(stage):
        return None if progress is None else (lambda done, total: progress(done, total, stage))

    # 1. Morris over every parameter
    Xm = morris_sample.sample(_problem(names), trajectories, num_levels=LEVELS, seed=seed)
    Ym = evaluate_rows(target, space.values(_unit(Xm)), store, "morris", chunk_rows=chunk_rows, workers=workers,
                       progress=report("Morris screening"))
    morris, dropped_m = morris_indices(names, Xm, Ym, trajectories, seed)
    half = max(2, trajectories // 2)
    morris_half, _ = morris_indices(names, Xm, Ym, half, seed)
    morris["morris_rank"] = morris["mu_star"].rank(ascending=False, method="first").astype(int)
    ranked = morris.sort_values("morris_rank")["parameter"].tolist()
    k_top = min(top, len(names))
    conv = [{"method": "morris", "index": "mu_star", "parameter": p, "half": h, "full": f,
             "half_size": half, "full_size": trajectories}
            for p, h, f in zip(names, morris_half["mu_star"], morris["mu_star"])]
    top_half = set(morris_half.sort_values("mu_star", ascending=False)["parameter"][:k_top])
    convergence = {"morris": {"trajectories": [half, trajectories],
                              "top_overlap": len(top_half & set(ranked[:k_top])) / k_top,
                              "spearman_mu_star": _spearman(morris_half["mu_star"].to_numpy(),
                                                            morris["mu_star"].to_numpy()),
                              "dropped_trajectories": dropped_m}}
    convergence["morris"]["stable"] = bool(convergence["morris"]["top_overlap"] >= 0.8)
    Y_sobol = X_sobol = sobol = None
    if method == "sobol":
        # 2. Sobol on the top parameters, the rest as one group
        chosen = ranked[:k_top]
        groups = [n if n in chosen else OTHERS for n in names]
        if all(g != OTHERS for g in groups):
            groups = list(names)
        X_sobol = sobol_sample.sample(_problem(names, groups), samples, calc_second_order=False, scramble=True,
                                      seed=seed)
        Y_sobol = evaluate_rows(target, space.values(_unit(X_sobol)), store, "sobol", chunk_rows=chunk_rows,
                                workers=workers, progress=report("Sobol indices"))
        sobol, dropped_s = sobol_indices(names, groups, Y_sobol, samples, seed)
        sobol_half, _ = sobol_indices(names, groups, Y_sobol, samples // 2, seed)
        diff = np.abs(sobol["ST"].to_numpy() - sobol_half["ST"].to_numpy())
        conv += [{"method": "sobol", "index": idx, "parameter": p, "half": h, "full": f, "half_size": samples // 2,
                  "full_size": samples}
                 for idx in ("S1", "ST") for p, h, f in zip(sobol["parameter"], sobol_half[idx], sobol[idx])]
        order_full = sobol.sort_values("ST", ascending=False)["parameter"].tolist()
        order_half = sobol_half.sort_values("ST", ascending=False)["parameter"].tolist()
        convergence["sobol"] = {"samples": [samples // 2, samples], "max_abs_change_ST": float(np.nanmax(diff)),
                                "same_top3": order_full[:3] == order_half[:3],
                                "spearman_ST": _spearman(sobol_half["ST"].to_numpy(), sobol["ST"].to_numpy()),
                                "dropped_base_samples": dropped_s,
                                "stable": bool(np.nanmax(diff) <= STABLE_ST)}
    table = ranked_table(space, morris, sobol)
    conv_df = pd.DataFrame(conv)
    failed = int(np.isnan(Ym).sum() + (np.isnan(Y_sobol).sum() if Y_sobol is not None else 0))
    nominal = float(target.evaluate(space.nominal()[None, :])[0])
    manifest = {
        "mscsim_version": __version__, "target": target.record(), "output": target.output,
        "output_units": getattr(target, "units", ""), "nominal_output": nominal, "method": method,
        "samples": samples, "trajectories": trajectories, "top": top, "seed": seed, "eps": EPS, "levels": LEVELS,
        "bootstrap_resamples": RESAMPLES, "confidence": CONF, "influential_threshold_ST": INFLUENTIAL,
        "uncertain_parameters": len(names), "evaluations": int(len(Ym) + (len(Y_sobol) if Y_sobol is not None else 0)),
        "failed_evaluations": failed, "convergence": convergence, "wall_time_s": round(time.time() - started, 1),
        "workers": workers, "chunk_rows": chunk_rows, "citations": target.citation_keys(),
        "sampling": "Morris: SALib morris.sample (4 levels); Sobol: SALib sobol.sample (scrambled Sobol sequence, "
                    "Saltelli 2010 estimators, first order and total); unit samples mapped through each parameter's "
                    "inverse CDF on its 0.5-99.5 % quantiles",
        "disclaimer": "Research tool output, not medical advice.",
    }
    with atomic_output_dir(out) as tmp:
        table.to_csv(tmp / "sensitivity.csv", index=False)
        conv_df.to_csv(tmp / "convergence.csv", index=False)
        np.savez_compressed(tmp / "evaluations.npz", morris_unit=Xm, morris_output=Ym,
                            **({"sobol_unit": X_sobol, "sobol_output": Y_sobol} if Y_sobol is not None else {}),
                            parameters=np.array(names))
        sensitivity_figure(table, manifest, tmp / "sensitivity.png")
        manifest["files"] = sorted(p.name for p in tmp.iterdir()) + ["manifest.json"]
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    if not keep_chunks:
        shutil.rmtree(store, ignore_errors=True)
    return SensitivityResult(out, table, conv_df, manifest)


def _prior_text(p) -> str:
    return prior_text(p.dist)


def ranked_table(space, morris: pd.DataFrame, sobol: pd.DataFrame | None) -> pd.DataFrame:
    """One row per parameter (and the 'other parameters' group), ranked: by Sobol total index where it was
    computed, then by Morris mu*."""
    rows = []
    for p in space.parameters:
        par = p.parameter
        rows.append({"parameter": p.name, "label": par.readable, "role": p.role, "file": par.origin,
                     "grade": par.grade, "nominal": par.value, "units": par.units, "prior": _prior_text(p),
                     "fitted": bool(par.fitted_to)})
    table = pd.DataFrame(rows).merge(morris, on="parameter", how="left")
    if sobol is not None:
        table = pd.concat([table, pd.DataFrame([{"parameter": OTHERS, "label": "every parameter not listed above, "
                                                 "varied together"}])], ignore_index=True)
        table = table.merge(sobol, on="parameter", how="left")
        for idx in ("S1", "ST"):
            table[f"{idx}_low"] = table[idx] - table[f"{idx}_conf"]
            table[f"{idx}_high"] = table[idx] + table[f"{idx}_conf"]
        table["influential"] = table["ST"] > INFLUENTIAL
        single = table["parameter"] != OTHERS  # the group is shown, not ranked among the parameters
        table["sobol_rank"] = table["ST"].where(single).rank(ascending=False, method="first")
        order = table["sobol_rank"].fillna(pd.Series(np.where(single, np.inf, len(table) + 0.5), index=table.index))
        table = table.assign(_order=order).sort_values(["_order", "morris_rank"], na_position="last",
                                                        kind="stable").drop(columns="_order")
        table["sobol_rank"] = table["sobol_rank"].astype("Int64")
    else:
        table = table.sort_values("morris_rank", kind="stable")
    table["morris_rank"] = table["morris_rank"].astype("Int64")
    return table.reset_index(drop=True)


def sensitivity_figure(table: pd.DataFrame, manifest: dict, path: Path, n_morris: int = 20) -> Path:
    """Morris mu* (with its 95 % CI) for the top parameters and, after a Sobol step, first-order and total indices
    (with bootstrap 95 % CIs); bars labelled with each parameter's readable name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sobol = "ST" in table.columns
    m = table[table["parameter"] != OTHERS].sort_values("morris_rank").head(n_morris)
    st = table[table["ST"].notna()].sort_values("ST", ascending=False) if sobol else None
    heights = [0.6 + 0.3 * len(m)] + ([0.8 + 0.45 * len(st)] if sobol else [])
    fig, axes = plt.subplots(len(heights), 1, figsize=(11, 1.0 + sum(heights)), height_ratios=heights,
                             constrained_layout=True, squeeze=False)
    ax = axes[0, 0]
    y = np.arange(len(m))[::-1]
    ax.barh(y, m["mu_star"], xerr=m["mu_star_conf"], color="#0969da", alpha=0.8, capsize=2)
    ax.set_yticks(y, [_label(r) for _, r in m.iterrows()], fontsize=8)
    units = manifest.get("output_units") or ""
    ax.set_xlabel(f"Morris mu*: mean |elementary effect| on the output{' (' + units + ')' if units and units != '1' else ''}"
                  ", with bootstrap 95% CI", fontsize=9)
    ax.set_title(f"Screening: the top {len(m)} of {manifest['uncertain_parameters']} uncertain parameters "
                 f"({manifest['trajectories']} Morris trajectories)", fontsize=10, loc="left")
    ax.grid(axis="x", color="#eaeef2")
    if sobol:
        ax = axes[1, 0]
        y = np.arange(len(st))[::-1]
        ax.barh(y + 0.2, st["ST"], height=0.4, xerr=st["ST_conf"], color="#cf222e", alpha=0.8, capsize=2,
                label="total (ST)")
        ax.barh(y - 0.2, st["S1"], height=0.4, xerr=st["S1_conf"], color="#1a7f37", alpha=0.8, capsize=2,
                label="first order (S1)")
        ax.axvline(INFLUENTIAL, color="#57606a", ls=":", lw=1)
        ax.set_yticks(y, [_label(r) for _, r in st.iterrows()], fontsize=8)
        ax.set_xlabel(f"Sobol index: share of the output's variance, with bootstrap 95% CI (dotted: {INFLUENTIAL})",
                      fontsize=9)
        ax.set_title(f"Sobol indices of the top {len(st) - 1} parameters and the rest as one group "
                     f"({manifest['samples']} base samples)", fontsize=10, loc="left")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", color="#eaeef2")
    nominal = manifest.get("nominal_output")
    fig.suptitle(f"Sensitivity of {manifest['output']}" + (f" (nominal {nominal:.3g} {units})" if nominal is not None
                                                           and np.isfinite(nominal) else ""), fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(r) -> str:
    if r["parameter"] == OTHERS:
        return OTHERS
    text = str(r.get("label") or "")
    if len(text) > 55:
        text = text[:52].rsplit(" ", 1)[0] + "..."
    return f"{r['parameter']}: {text}" if text else str(r["parameter"])
