"""``run_trial``: a design in, a finished virtual trial out (per-patient Parquet, arm summary, plots, report).

design -> chunks (runner) -> per-patient results (Parquet) -> statistics (analysis) -> report.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError, MscsimError
from ..endpoints import load_endpoints
from ..io.outputs import atomic_output_dir, check_output_dir
from ..model.references import resolve
from .analysis import TrialAnalysis, analyse
from .design import DesignSpec, design_record
from .observe import endpoint_kinds, response_parameters, response_parts
from .report import comparison_markdown, forest_plot, response_table, timecourse_plot, write_html_report
from .runner import collect, collect_draws, execute, screen, screening_record
from .safety import load_safety_parameters
from .uncertain import trial_parameter_names

DISCLAIMER = "mscsim is a research tool, never medical advice."
# the endpoints table's columns the analysis reads (``modelled``, the value before the observation model, is
# only written to endpoints.parquet)
ANALYSED = ("patient", "arm", "endpoint", "visit_day", "value", "baseline", "change")
RESULT_FILES = ("endpoints.parquet", "patients.parquet", "arm_summary.csv", "comparisons.csv",
                "published_vs_simulated.csv", "safety.csv", "responders.csv", "forest.png", "forest.svg", "forest.pdf",
                "timecourse.png", "timecourse.svg", "timecourse.pdf", "report.html",
                "manifest.json")


@dataclass(frozen=True)
class TrialResult:
    design: DesignSpec
    out: Path
    analysis: TrialAnalysis
    n_simulated: int


def _labels(design: DesignSpec) -> dict[str, str]:
    """Readable endpoint names with units, from the display-name table (pain VAS (mm), WOMAC total (points of
    96), overall response (complete or partial) at day 28, ...)."""
    from ..display import display

    eps = load_endpoints(design.disease)
    out = {}
    for name in design.endpoints:
        if name in eps.spec.responses:
            out[name] = f"overall response (complete or partial) {_when(eps.spec.responses[name])}"
        else:
            out[name] = display(name).axis_label()
    for name, (response, category) in response_parts(design).items():
        out[name] = f"{category} response {_when(eps.spec.responses[response])}"
    return out


def _when(response) -> str:
    """'at day 28' for a response judged at one visit, 'best by day 100' for the best over the visits."""
    return f"best by day {response.day:g}" if response.kind == "best_stage_response" else f"at day {response.day:g}"


def _better(design: DesignSpec, kinds: dict[str, str]) -> dict[str, str]:
    lower = {"pain_vas", "womac_total", "organ_stage"}
    return {n: "lower" if n in lower else "higher" for n in kinds}


def citation_keys(design: DesignSpec) -> list[str]:
    """Sources a trial run rests on: the trials it reproduces, the model's, the trial-level responses and AEs."""
    from .runner import _setup

    keys = list(design.source)
    for arm in design.arms:
        keys += _setup(design, arm.name)[2].citation_keys()
    keys += response_parameters().citations() + load_safety_parameters().citations()
    keys += list(design.cohort.source)
    for p in design.published:
        keys += p.source
    return list(dict.fromkeys(keys))


def fitted_parameters(design: DesignSpec) -> list[dict]:
    """Parameters this trial's run uses (model and trial-level) whose values were fitted to published numbers,
    with what they were fitted to (a knee trial does not list the fistula's fitted repair rate)."""
    from .runner import _setup

    seen, out = set(), []
    used = [(s.pset, s.parameter_names_used()) for s in (_setup(design, a.name)[2] for a in design.arms)]
    resp = response_parameters()
    used.append((resp, trial_parameter_names(design)))
    for pset, names in used:
        for name in names:
            par = pset[name]
            if par.fitted_to and name not in seen:
                seen.add(name)
                out.append({"parameter": name, "fitted_to": ", ".join(par.fitted_to), "source": ", ".join(par.source)})
    return out


def parameter_overrides(design: DesignSpec) -> list[dict]:
    """The design's what-if overrides as resolved (value in documented units, default, bounds, out of bounds)."""
    from .runner import _setup

    return [o.record() for o in _setup(design, design.arms[0].name)[2].overrides]


def parameter_draws_for(design: DesignSpec, progress=None):
    """The design's parameter draws (None without ``uncertainty``): the design's uncertain parameters, conditioned
    on its reference patient (the first arm's scenario, one typical patient) having the disease as enrolled."""
    spec = design.uncertainty
    if spec is None:
        return None
    from ..uncertainty.draws import parameter_draws
    from ..uncertainty.priors import run_posterior
    from .design import arm_scenario
    from .uncertain import design_space

    space = design_space(design)
    posterior = run_posterior(spec.posterior, design.disease, space, spec.draws)
    return parameter_draws(arm_scenario(design, design.arms[0]), space, design.seed, spec.draws,
                           posterior=posterior, condition=spec.condition, progress=progress)


def with_bands(design: DesignSpec, analysis: TrialAnalysis, draw_obs: pd.DataFrame,
               endpoints: pd.DataFrame, taus: dict[int, np.ndarray] | None = None) -> TrialAnalysis:
    """The analysis with the parameter-uncertainty bands (and between-patient ranges) beside each statistic;
    ``taus`` (draw key -> the posterior's between-trial SDs) adds the published numbers' new-trial intervals."""
    from dataclasses import replace

    from .bands import comparison_bands, published_bands, summary_bands

    return replace(analysis, summary=summary_bands(design, analysis.summary, draw_obs, endpoints),
                   comparisons=comparison_bands(design, analysis.comparisons, draw_obs),
                   published=published_bands(design, analysis.published, draw_obs, taus))


def run_trial(design: DesignSpec, out: str | Path, *, design_path: str | None = None, workers: int = 1,
              scheduler: str | None = None, chunk_size: int | None = None, progress=None,
              keep_chunks: bool = False, notice=None, screening=None) -> TrialResult:
    """Run (or resume) a trial and write its outputs, atomically, to ``out``. Finished chunks are kept in the
    sibling folder ``<out>.chunks`` while the trial runs (a rerun resumes from them) and removed once the trial is
    assembled, unless ``keep_chunks``. ``notice(text)`` is told when an earlier run's chunks are replaced. With
    ``design.uncertainty`` the parameter draws run as further chunks and every table gets its bands
    (``screening(done, total)`` reports the draws' conditioning)."""
    out = Path(out)
    check_output_dir(out)  # before any work: a folder of other files would be refused only at the end
    try:
        draws = parameter_draws_for(design, progress=screening)
    except InputError as exc:
        raise exc.with_file(design_path) from None
    store = chunk_store(out)
    try:
        chunks = execute(design, store, workers=workers, scheduler=scheduler, chunk_size=chunk_size,
                         progress=progress, notice=notice, draw_keys=None if draws is None else draws.index)
    except InputError as exc:
        raise exc.with_file(design_path) from None
    except MscsimError as exc:  # a run whose numbers cannot be trusted: say which design
        raise type(exc)(f"{design_path or design.name}: {exc}") from None
    table = store / "endpoints.parquet"  # every column, written while collecting; moved into the output below
    endpoints, patients = collect(store, chunks, columns=ANALYSED, write_to=table)
    patients = screen(design, patients)
    screened = screening_record(design, patients)
    short = [r for r in screened if r["in_trial"] < r["asked"]]
    if short and notice:
        notice("; ".join(f"arm '{r['arm']}': {r['in_trial']} of {r['asked']} patients enrolled ({r['screen_failures']}"
                         f" of {r['screened']} simulated failed the design's inclusion)" for r in short))
    analysis = analyse(design, endpoints, patients)
    draw_obs, failed = collect_draws(store, chunks)
    if draws is not None:
        taus = None if draws.taus is None else dict(zip((int(k) for k in draws.index), draws.taus))
        analysis = with_bands(design, analysis, draw_obs, endpoints, taus)
    kinds = endpoint_kinds(design)
    meta = {
        "name": design.name, "title": design.title, "description": design.description, "seed": design.seed,
        "mscsim_version": __version__, "design_file": design_path or "(in memory)",
        "n_patients": design.n_patients,
        "arms": [{"name": a.name, "label": a.label or a.name, "n": a.n} for a in design.arms],
        "primary": {"endpoint": design.primary.endpoint, "visit_day": design.primary.visit_day},
        "fitted": fitted_parameters(design),
        "citations": [r.formatted() for r in resolve(citation_keys(design))],
        "disclaimer": DISCLAIMER, "endpoint_labels": _labels(design), "better": _better(design, kinds),
        "uncertainty": None if draws is None else _uncertainty_record(design, draws, failed),
        "screening": screened,
        "responses": response_table(analysis.summary, response_parts(design)).to_dict("records"),
    }
    # complete and partial responses are in the tables (arm summary, published vs simulated, forest plot); the
    # panels over time show each response once, as its overall rate
    over_time = analysis.summary[~analysis.summary["endpoint"].isin(response_parts(design))]
    with atomic_output_dir(out) as tmp:
        os.replace(table, tmp / "endpoints.parquet")
        if draws is not None:
            draw_obs.to_parquet(tmp / "draws.parquet", index=False)
        patients.to_parquet(tmp / "patients.parquet", index=False)
        analysis.summary.to_csv(tmp / "arm_summary.csv", index=False)
        analysis.comparisons.to_csv(tmp / "comparisons.csv", index=False)
        analysis.published.to_csv(tmp / "published_vs_simulated.csv", index=False)
        analysis.safety.to_csv(tmp / "safety.csv", index=False)
        analysis.responders.to_csv(tmp / "responders.csv", index=False)
        if analysis.power is not None:
            analysis.power.to_csv(tmp / "power.csv", index=False)
        figures = {"Difference against control": forest_plot(analysis.comparisons, analysis.published, meta,
                                                             tmp / "forest.png"),
                   "Endpoints over time by arm": timecourse_plot(over_time, meta, tmp / "timecourse.png")}
        from ..report.interactive import trial_forest, trial_timecourse

        interactive = {k: v for k, v in (
            ("Endpoints over time by arm (mean or rate with 95% CI; day 0: baseline)",
             trial_timecourse(over_time, meta)),
            ("Difference against control (95% CI; red diamond: published)",
             trial_forest(analysis.comparisons, analysis.published, meta))) if v is not None}
        write_html_report(tmp / "report.html", meta, analysis.summary, analysis.comparisons, analysis.published,
                          analysis.safety, analysis.power, figures, responders=analysis.responders,
                          interactive=interactive)
        (tmp / "comparison.md").write_text(comparison_markdown(analysis.published))
        manifest = {"mscsim_version": __version__, "design": design_record(design), "design_file": design_path,
                    "seed": design.seed, "design_digest": design.digest(), "n_simulated": int(len(patients)),
                    "n_in_trial": int(patients["in_trial"].sum()), "screening": screened, "citations": citation_keys(design),
                    "fitted_parameters": meta["fitted"], "parameter_overrides": parameter_overrides(design),
                    "allow_out_of_bounds": list(design.allow_out_of_bounds), "uncertainty": meta["uncertainty"],
                    "files": sorted(p.name for p in tmp.iterdir()),
                    "disclaimer": DISCLAIMER}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str, allow_nan=False))
    if not keep_chunks:
        shutil.rmtree(store, ignore_errors=True)
    return TrialResult(design, out, analysis, int(len(patients)))


def _uncertainty_record(design: DesignSpec, draws, failed: pd.DataFrame) -> dict:
    n_failed = int(failed.loc[failed["failed"].astype(bool), "draw"].nunique()) if len(failed) else 0
    return {"draws": int(len(draws.index)), "pool_per_arm": design.uncertainty.pool_per_arm,
            "candidates_screened": int(draws.candidates), "condition": draws.condition,
            "acceptance": round(float(draws.acceptance), 4), "failed_draws": n_failed,
            "draw_keys": "draw d takes the d-th value of each parameter's generator keyed on (seed, 8117, name)",
            "uncertain_parameters": list(draws.space.names),
            "posterior": draws.posterior, "posterior_parameters": list(draws.posterior_parameters),
            "between_trial_sds": draws.taus is not None}


def chunk_store(out: str | Path) -> Path:
    """Where a trial writing to ``out`` keeps its finished chunks while it runs."""
    out = Path(out)
    return out.with_name(out.name + ".chunks")
