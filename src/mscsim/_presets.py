"""The bundled example scenarios, listed without importing the simulator (``mscsim presets`` answers at once)."""

from __future__ import annotations

from pathlib import Path


def preset_dir() -> Path:
    """Folder of the bundled example scenarios."""
    return Path(__file__).parent / "data" / "examples"


def preset_rows() -> list[dict]:
    """name, disease (if any), description and file of each bundled scenario (not lots or co-culture presets)."""
    from ._yaml import safe_load

    rows = []
    for path in sorted(preset_dir().glob("*.yaml")):
        data = safe_load(path.read_text(encoding="utf-8")) or {}
        if "regimen" not in data:
            continue  # lot records and co-culture presets
        rows.append({"name": path.stem, "disease": data.get("disease") or "",
                     "description": " ".join(str(data.get("description", "")).split()), "file": str(path)})
    return rows
