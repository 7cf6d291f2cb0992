"""A credibility page per disease, in the spirit of ASME V&V 40 (2018): what the model is asked, how much of it
rests on evidence (the evidence-grade mix of the parameters the disease preset uses, overall and among the
influential ones), which parameters matter most (the global sensitivity ranking), which were fitted to what,
how it compares with observations (validation targets) and with published trials, and what is known to be missing.

The sensitivity rankings and the trial comparisons are records of runs (``mscsim sensitivity``, ``mscsim trial``):
the page reads the bundled records (data/credibility/, written by scripts/record_credibility.py with the version and
date that made them) or the output folders a user gives. The validation targets are run when the page is made.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..display import disease_label
from ..errors import InputError
from ..io.outputs import atomic_output_dir
from ..io.scenario import load_scenario
from ..model.parameters import DATA_DIR
from ..model.references import resolve
from .sensitivity import INFLUENTIAL, OTHERS
from .validation import EXAMPLES, _scenario_dict, load_targets, run_validation

CREDIBILITY_DIR = DATA_DIR / "credibility"
GRADES = ("human", "animal", "in_vitro", "assumed")


@dataclass(frozen=True)
class DiseaseContext:
    disease: str
    preset: str
    question: str
    primary: str
    designs: tuple[str, ...]


DISEASES = {
    "knee_osteoarthritis": DiseaseContext(
        "knee_osteoarthritis", "knee_oa_ia_5e7",
        "How much do intra-articular MSCs change knee pain (VAS) and function (WOMAC) over 6-12 months, against "
        "saline or hyaluronic acid, in adults with Kellgren-Lawrence 2-4 knee osteoarthritis?",
        "pain VAS at day 180", ("knee_oa_lee_2019", "knee_oa_lamo_espinosa_2016")),
    "acute_gvhd": DiseaseContext(
        "acute_gvhd", "acute_gvhd_iv_2e6_per_kg",
        "What share of children and adults with steroid-refractory acute GVHD respond (completely or partly) by day "
        "28 to 2e6/kg intravenous MSCs twice weekly for 4 weeks, against second-line care alone?",
        "day-28 overall response (organ stage)",
        ("sr_agvhd_msb_gvhd001", "sr_agvhd_study275", "sr_agvhd_adults_muroi2013")),
    "perianal_fistula": DiseaseContext(
        "perianal_fistula", "perianal_fistula_120e6",
        "What share of adults with complex perianal Crohn's fistulas reach combined remission by week 24 after 120e6 "
        "allogeneic adipose MSCs injected into the tract, against curettage and saline?",
        "combined remission at week 24", ("perianal_fistula_admire_cd", "perianal_fistula_japan_2023")),
    "lumbar_disc_degeneration": DiseaseContext(
        "lumbar_disc_degeneration", "lumbar_disc_intradiscal_25e6",
        "How much does one intradiscal injection of 25e6 allogeneic bone-marrow MSCs change low-back pain (VAS) and "
        "disability (ODI) over 12 months, against a sham injection, in adults with chronic discogenic pain from one "
        "degenerate lumbar disc?",
        "pain VAS at day 180", ("lumbar_disc_noriega_2017",)),
    "diabetic_foot_ulcer": DiseaseContext(
        "diabetic_foot_ulcer", "dfu_topical_sheet_weekly",
        "What share of adults with a diabetic foot ulcer and adequate foot perfusion have the ulcer completely "
        "closed by week 12 when an allogeneic adipose MSC hydrogel sheet is applied weekly under standard care, "
        "against a polyurethane film dressing?",
        "complete closure by week 12 (open area of the enrolment area)", ("dfu_moon_2019",)),
    "tendinopathy": DiseaseContext(
        "tendinopathy", "tendinopathy_intratendinous_1e7",
        "How much does one ultrasound-guided intratendinous injection of 1e7 allogeneic adipose MSCs change tendon "
        "pain (VAS) and elbow function (Mayo elbow performance index) over a year in adults with chronic lateral "
        "epicondylosis, beyond what an injection without cells gives?",
        "pain VAS at day 182", ("tendinopathy_lee_2015",)),
    "lupus_nephritis": DiseaseContext(
        "lupus_nephritis", "lupus_nephritis_iv_ucmsc_2e8",
        "Do 2e8 intravenous umbilical-cord MSCs added to induction immunosuppression raise the share of adults with "
        "active class III-IV lupus nephritis who reach a renal response (proteinuria halved, or below 0.5 g/day) "
        "within 12 months, against placebo on the same immunosuppression?",
        "24-h proteinuria at day 168", ("lupus_nephritis_deng_2017",)),
}


def disease_context(disease: str) -> DiseaseContext:
    if disease not in DISEASES:
        raise InputError("DISEASE", disease, f"one of {sorted(DISEASES)}")
    return DISEASES[disease]


def grade_mix(disease: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every parameter the disease preset's run uses (model, product, placement, patient, endpoint maps), with its
    grade, uncertainty and fit; and the grade counts (all parameters, and those with a non-fixed uncertainty)."""
    from ..endpoints import load_endpoints
    from ..simulation import resolve_setup

    ctx = disease_context(disease)
    scenario = load_scenario(EXAMPLES / f"{ctx.preset}.yaml")
    from ..model.parameters import load_parameter_sets
    from ..simulation import parameter_files

    raw = load_parameter_sets(parameter_files(scenario))
    names = resolve_setup(scenario).parameter_names_used()
    params = [raw[n] for n in names if n in raw] + list(load_endpoints(disease).coefficients.parameters.values())
    table = pd.DataFrame([{"parameter": p.name, "label": p.readable, "file": p.origin, "grade": p.grade,
                           "uncertainty": p.uncertainty.distribution, "fitted_to": ", ".join(p.fitted_to),
                           "source": ", ".join(p.source), "why_no_source": p.why_no_source} for p in params])
    rows = []
    for which, sub in (("all parameters the run uses", table),
                       ("uncertain (not fixed)", table[table["uncertainty"] != "fixed"])):
        counts = sub["grade"].value_counts()
        rows.append({"set": which, "n": len(sub), **{g: int(counts.get(g, 0)) for g in GRADES},
                     "share_assumed": float(counts.get("assumed", 0) / max(len(sub), 1))})
    return table, pd.DataFrame(rows)


def bundled_sensitivity(disease: str) -> list[tuple[str, pd.DataFrame, dict]]:
    """The recorded sensitivity runs of the disease preset: (output, ranked table, manifest) each."""
    out = []
    for manifest_path in sorted((CREDIBILITY_DIR / "sensitivity" / disease).glob("*.json")):
        m = json.loads(manifest_path.read_text())
        table = pd.read_csv(manifest_path.with_suffix(".csv"))
        out.append((m["output"], table, m))
    return out


def user_sensitivity(folders: list[str]) -> list[tuple[str, pd.DataFrame, dict]]:
    out = []
    for folder in folders:
        f = Path(folder)
        if not (f / "sensitivity.csv").is_file() or not (f / "manifest.json").is_file():
            raise InputError("--sensitivity", str(f), "the output folder of 'mscsim sensitivity' (sensitivity.csv and "
                             "manifest.json)")
        m = json.loads((f / "manifest.json").read_text())
        out.append((m["output"], pd.read_csv(f / "sensitivity.csv"), m))
    return out


def influential(rankings: list[tuple[str, pd.DataFrame, dict]]) -> set[str]:
    """Parameters whose total Sobol index exceeds INFLUENTIAL on any of the outputs."""
    names: set[str] = set()
    for _, table, _ in rankings:
        if "ST" in table:
            names |= set(table.loc[(table["ST"] > INFLUENTIAL) & (table["parameter"] != OTHERS), "parameter"])
    return names


def disease_targets(disease: str) -> list[dict]:
    """Validation targets about the disease's tissue response or its route of delivery (same site)."""
    from ..delivery.routes import DEFAULT_SITE

    ctx = disease_context(disease)
    preset = load_scenario(EXAMPLES / f"{ctx.preset}.yaml")
    site = preset.regimen.site or DEFAULT_SITE[preset.regimen.route]
    out = []
    for t in load_targets():
        if "scenario" not in t:
            continue
        sc = _scenario_dict(t["scenario"])
        reg = sc.get("regimen", {})
        t_site = reg.get("site") or DEFAULT_SITE.get(reg.get("route", ""), "")
        if sc.get("disease") == disease or (sc.get("disease") is None and t_site == site):
            out.append(t)
    return out


def trial_agreement(disease: str, folders: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """Published vs simulated rows of the disease's bundled designs (the record) or of given trial outputs."""
    if folders:
        frames = []
        for folder in folders:
            f = Path(folder)
            if not (f / "published_vs_simulated.csv").is_file():
                raise InputError("--trials", str(f), "the output folder of 'mscsim trial'")
            m = json.loads((f / "manifest.json").read_text())
            frames.append(pd.read_csv(f / "published_vs_simulated.csv").assign(design=m["design"]["name"]))
        return pd.concat(frames, ignore_index=True), "the trial outputs given (--trials)"
    path = CREDIBILITY_DIR / "trials.csv"
    record = json.loads((CREDIBILITY_DIR / "trials.json").read_text()) if path.exists() else {}
    if not path.exists():
        return pd.DataFrame(), "no record"
    table = pd.read_csv(path)
    table = table[table["design"].isin(disease_context(disease).designs)]
    return table, (f"recorded by scripts/record_credibility.py with mscsim {record.get('mscsim_version')} on "
                   f"{record.get('date')}")


def _table(headers, rows) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p class='small'>none</p>"


def _num(v, fmt="{:.3g}") -> str:
    try:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(float(v))
    except (TypeError, ValueError):
        return str(v)


_CSS = """body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}.small{font-size:85%;color:#57606a}
.disclaimer{border:2px solid #9a6700;background:#fff8c5;padding:.6em 1em;font-weight:bold}"""


def write_credibility(disease: str, out: str | Path, *, sensitivity: list[str] | None = None,
                      trials: list[str] | None = None, progress=None) -> Path:
    """Write ``credibility_<disease>.html`` and ``credibility_<disease>.json`` to ``out`` (atomically)."""
    ctx = disease_context(disease)
    params, mix = grade_mix(disease)
    rankings = user_sensitivity(sensitivity) if sensitivity else bundled_sensitivity(disease)
    infl = influential(rankings)
    infl_table = params[params["parameter"].isin(infl)]
    infl_mix = infl_table["grade"].value_counts()
    targets = disease_targets(disease)
    results = run_validation(targets, progress=progress) if targets else []
    agreement, agreement_source = trial_agreement(disease, trials)
    fitted = params[params["fitted_to"] != ""]
    from ..trials.observe import response_parameters

    trial_fitted = [p for p in response_parameters().parameters.values() if p.fitted_to]
    e = html.escape
    record = {
        "disease": disease, "preset": ctx.preset, "mscsim_version": __version__,
        "grade_mix": mix.to_dict(orient="records"),
        "influential": sorted(infl), "influential_grades": {g: int(infl_mix.get(g, 0)) for g in GRADES},
        "sensitivity_outputs": [m["output"] for _, _, m in rankings],
        "validation": [r.as_dict() for r in results],
        "trials": agreement.to_dict(orient="records"), "trials_source": agreement_source,
    }
    sens_html = []
    for output, table, m in rankings:
        t = table[table["parameter"] != OTHERS]
        key = "sobol_rank" if "ST" in t else "morris_rank"
        t = t.sort_values(key).head(10)
        rest = table[table["parameter"] == OTHERS]
        conv = m.get("convergence", {}).get("sobol", {})
        sens_html.append(
            f"<h3>{e(output)} (nominal {_num(m.get('nominal_output'))} {e(str(m.get('output_units', '')))})</h3>"
            f"<p class='small'>{m.get('uncertain_parameters')} uncertain parameters; Morris {m.get('trajectories')} "
            f"trajectories, Sobol {m.get('samples')} base samples; mscsim {e(str(m.get('mscsim_version')))}; "
            f"total indices changed by at most {_num(conv.get('max_abs_change_ST'))} between half and full sample"
            + (f"; the other parameters, together, total index {_num(rest['ST'].iloc[0])}" if len(rest) and
               "ST" in rest else "") + "</p>"
            + _table(["rank", "parameter", "what it is", "grade", "total index ST (95% CI)", "first order S1",
                      "Morris mu*"],
                     [[_num(r.get(key), "{:.0f}"), r["parameter"], r.get("label", ""), r.get("grade", ""),
                       f"{_num(r.get('ST'))} ({_num(r.get('ST_low'))}-{_num(r.get('ST_high'))})" if "ST" in t else "",
                       _num(r.get("S1")) if "S1" in t else "", _num(r.get("mu_star"))] for _, r in t.iterrows()]))
    val_html = _table(["target", "observed", "simulated", "tolerance", "pass", "fitted to it"],
                      [[r.id, r.observed_text or r.observed, _num(r.simulated) if isinstance(r.simulated, float)
                        else r.simulated, r.tolerance, "PASS" if r.passed else "FAIL", ", ".join(r.fitted)]
                       for r in results])
    tri_cols = [c for c in ("design", "endpoint", "visit_day", "arm", "quantity", "published", "simulated",
                            "simulated_ci_low", "simulated_ci_high", "agrees", "param_median", "param_low90",
                            "param_high90", "agrees_with_uncertainty", "new_trial_low95", "new_trial_high95",
                            "agrees_as_new_trial") if c in agreement.columns]
    tri_html = _table(tri_cols, [[_num(r[c]) if isinstance(r[c], float) else r[c] for c in tri_cols]
                                 for _, r in agreement.iterrows()])
    n_pass = sum(r.passed for r in results)
    share_all = mix.iloc[0]["share_assumed"]
    factors = [
        ["Context of use", ctx.question, "The model informs trial design and the reading of results; it is never "
         "used to decide on a patient's treatment."],
        ["Model form", "Mechanisms as data files (cell kinetics, secretion and licensing, immune cells, tissue damage "
         "and repair, endpoints), compiled with SymPy; one patient or a virtual cohort.",
         "Structure follows published models where they exist; the disease state is each patient's untreated chronic "
         "steady state, found directly (pseudo-transient continuation, checked stable) or by integrating 1,000 days "
         "where a patient has none."],
        ["Model inputs", f"{mix.iloc[0]['n']} parameters; {share_all:.0%} graded assumed "
         f"({int(infl_mix.get('assumed', 0))} of the {len(infl)} influential ones).",
         "Every parameter has units, a source, a grade and an uncertainty distribution (a stated prior where "
         "assumed)."],
        ["Verification (code and calculation)", "Solvers checked against SciPy Radau and libRoadRunner (the SBML "
         "export) to 1e-6; mass balance checked on every run; reproducible for any chunking or worker count.",
         "Test suite (pytest); the solver agreement and reproducibility tests."],
        ["Validation (comparator)", f"{n_pass} of {len(results)} validation targets pass; "
         f"{int(agreement['agrees'].sum()) if 'agrees' in agreement else 0} of {len(agreement)} published trial "
         "numbers inside the simulated interval.", "Fitted parameters (below) make some agreements consistency "
         "checks, not predictions."],
        ["Uncertainty quantification", "Bands from parameter draws conditioned on the disease as enrolled, kept "
         "apart from between-patient variability and trial-repeat sampling.", "Priors of assumed parameters are "
         "wide and stated, not measured."],
        ["Sensitivity", ", ".join(f"{o}" for o, _, _ in rankings) or "no ranking recorded",
         "Morris screening of every parameter, Sobol indices (with bootstrap CIs) of the top ten."],
        ["Applicability", "Animal and in vitro values applied to patients unchanged where no human data exist "
         f"({mix.iloc[0]['animal']} animal, {mix.iloc[0]['in_vitro']} in vitro parameters).",
         "See the README's honest list of limitations."],
    ]
    refs = resolve(sorted({k for p in params["source"] for k in p.split(", ") if k}))
    doc = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Credibility: {e(disease)}</title><style>{_CSS}</style></head><body>
<h1>Credibility of mscsim for {e(disease_label(disease))}</h1>
<p class="disclaimer">mscsim is a research tool, never medical advice.</p>
<p class="small">Preset {e(ctx.preset)}; primary endpoint: {e(ctx.primary)}; mscsim {e(__version__)}. Organised after
the credibility factors of ASME V&amp;V 40-2018 (verification, validation, applicability, uncertainty).</p>
<h2>Credibility factors</h2>{_table(["factor", "what mscsim has", "how, and what is missing"], factors)}
<h2>Evidence grades of the parameters</h2>
{_table(["parameters", "n", *GRADES, "share assumed"],
        [[r["set"], r["n"], *[r[g] for g in GRADES], f"{r['share_assumed']:.0%}"] for _, r in mix.iterrows()]
        + [["influential (total Sobol index > 0.05 on a primary output)", len(infl),
            *[int(infl_mix.get(g, 0)) for g in GRADES], f"{infl_mix.get('assumed', 0) / max(len(infl), 1):.0%}"]])}
<h2>Which parameters matter (top 10 by total Sobol index)</h2>{''.join(sens_html) or "<p>none recorded</p>"}
<h2>Influential parameters and their evidence</h2>
{_table(["parameter", "what it is", "grade", "source", "why no measured value (assumed)", "file"],
        [[r["parameter"], r["label"], r["grade"], r["source"], r["why_no_source"], r["file"]]
         for _, r in infl_table.iterrows()])}
<h2>What was fitted to what</h2>
{_table(["parameter", "fitted to", "file"], [[r["parameter"], r["fitted_to"], r["file"]] for _, r in fitted.iterrows()]
        + [[p.name, ", ".join(p.fitted_to), p.origin] for p in trial_fitted])}
<h2>Validation targets (run now)</h2>{val_html}
<h2>Published trials beside the simulated ones</h2><p class="small">Source: {e(agreement_source)}.</p>{tri_html}
<h2>References</h2><ol>{''.join(f"<li>{e(r.formatted())}</li>" for r in refs)}</ol>
<p class="small">Research tool output, not medical advice.</p></body></html>
"""
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        (tmp / f"credibility_{disease}.html").write_text(doc, encoding="utf-8")
        (tmp / f"credibility_{disease}.json").write_text(json.dumps(record, indent=2, default=str))
        (tmp / "manifest.json").write_text(json.dumps({"mscsim_version": __version__, "disease": disease,
                                                       "files": [f"credibility_{disease}.html",
                                                                 f"credibility_{disease}.json", "manifest.json"],
                                                       "disclaimer": "Research tool output, not medical advice."},
                                                      indent=2))
    return out
