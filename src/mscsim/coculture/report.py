"""Co-culture outputs, written atomically: the readout table (CSV), a plot with published points, a manifest."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import __version__  # noqa: E402
from ..io import strict_json  # noqa: E402
from ..io.outputs import atomic_output_dir  # noqa: E402
from ..model.references import bibliography  # noqa: E402
from .spec import parse_ratio  # noqa: E402
from .well import COLUMNS, WELL_MECHANISMS, CocultureResult  # noqa: E402

DISCLAIMER = "Research tool output, not medical advice."
LABELS = {"inhibition": "inhibition of proliferation, cumulative (%)",
          "inhibition_pulse": "inhibition of proliferation, last-hours pulse (%)", "kyn": "kynurenine (umol/L)",
          "pge2": "PGE2 (ng/mL)",
          "m2_share": "M2 share of macrophages", "il10": "IL-10 (pg/mL)", "tnf": "TNF-alpha (pg/mL)",
          "il6": "IL-6 (pg/mL)"}


def published_points(result: CocultureResult) -> list[dict]:
    """Observations of the bundled validation targets measured on this preset: ratio, readout, range, source."""
    from ..analysis.validation import load_targets

    bib = bibliography()
    points = []
    for t in load_targets():
        m, cc = t["measure"], t.get("coculture", {})
        if m["kind"] != "coculture" or cc.get("preset") != result.spec.name or "ratio" not in m:
            continue
        obs = t.get("observed", {})
        ref = bib[t["source"]]
        first = ref.authors.split(",")[0].split(" ")[0]
        src = f"{first} {ref.year}" if first[:1].isupper() else ref.key  # authors not captured: the key
        points.append({"id": t["id"], "readout": m["readout"], "ratio": parse_ratio(m["ratio"]),
                       "prelicensed": bool(m.get("prelicensed", False)), "low": obs.get("low"),
                       "high": obs.get("high"), "value": obs.get("value"), "label": src})
    return points


def coculture_figure(result: CocultureResult, path: str | Path) -> Path:
    """One panel per readout against MSCs per responder (log axis), without and with pre-licensing; published
    observations (validation targets on this preset) drawn as ranges."""
    readouts = result.readouts()
    table = result.table()
    n = result.spec.well.responders_per_well
    fig, axes = plt.subplots(1, len(readouts), figsize=(4.6 * len(readouts), 4.2), constrained_layout=True)
    points = published_points(result)
    for ax, r in zip(np.atleast_1d(axes), readouts):
        col = COLUMNS[r]
        for pre, style in ((False, "o-"), (True, "s--")):
            rows = table[(table["prelicensed"] == pre) & (table["msc_per_well"] > 0)]
            if len(rows):
                ax.plot(rows["msc_per_well"] / n, rows[col], style,
                        label="IFN-gamma pre-licensed MSC" if pre else "MSC")
        scale = 100.0 if r.startswith("inhibition") else 1.0
        for p in (p for p in points if p["readout"] == r):
            lo = p["low"] if p["low"] is not None else p["value"]
            hi = p["high"] if p["high"] is not None else p["value"]
            if lo is None or hi is None:
                continue
            mid = p["value"] if p["value"] is not None else (lo + hi) / 2  # a range without a value: no marker
            ax.errorbar([p["ratio"]], [scale * mid], yerr=[[scale * (mid - lo)], [scale * (hi - mid)]],
                        fmt="k^" if p["value"] is not None else "none", ecolor="k", capsize=5, ms=6, lw=1.5,
                        label=f"published: {p['label']}")
        ax.set_xscale("log")
        ax.set_xlabel("MSC per responder cell (MSC:responder ratio)")
        ax.set_ylabel(LABELS[r])
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        keep = dict(zip(labels, handles))
        ax.legend(keep.values(), keep.keys(), fontsize=7)
    fig.suptitle(f"{result.spec.name}: {result.spec.duration_days:g}-day co-culture, "
                 f"{n:.3g} responders in {result.spec.well.volume_ml:g} mL (simulated)", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def manifest(result: CocultureResult, preset_path: str | None, files: list[str]) -> dict:
    return {"mscsim_version": __version__, "preset_file": preset_path, "preset": result.spec.resolved(),
            "mechanisms_enabled": sorted(result.model.model.enabled),
            "mechanisms_in_well": list(WELL_MECHANISMS), "citations": result.citation_keys(),
            "validation_targets_shown": [p["id"] for p in published_points(result)], "files": files,
            "disclaimer": DISCLAIMER}


def write_coculture(result: CocultureResult, out: str | Path, *, preset_path: str | None = None) -> Path:
    """Write coculture.csv, coculture.png and manifest.json into ``out`` (all or nothing)."""
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        result.table().to_csv(tmp / "coculture.csv", index=False)
        coculture_figure(result, tmp / "coculture.png")
        files = ["coculture.csv", "coculture.png", "manifest.json"]
        (tmp / "manifest.json").write_text(strict_json.dumps(manifest(result, preset_path, files), indent=2))
    return out
