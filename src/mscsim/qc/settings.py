"""Flow-analysis settings and the channel/marker vocabulary, read from data/specs/_*.yaml (numbers live in data)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import yaml

from ..errors import DataError

SPECS_DIR = Path(__file__).resolve().parent.parent / "data" / "specs"


@dataclass(frozen=True)
class FlowSettings:
    """Numbers of the automatic analysis (see _flow_analysis.yaml for each one's source and meaning)."""

    default_spec: str
    control_fraction_above: float
    min_gated_events: int
    asinh_cofactor: float
    scatter_bins: int
    scatter_smoothing_bins: float
    scatter_max_valley_height: float
    singlet_k_mad: float
    viability_k_sd: float


@dataclass(frozen=True)
class Vocabulary:
    """Scatter channel names by role, and marker spellings mapped to one canonical name each."""

    channels: dict[str, tuple[str, ...]]
    aliases: dict[str, str]

    def canonical_marker(self, name: str) -> str:
        """'HLADR', 'hla-dr' and 'MHC-II' all become 'HLA-DR'; unknown markers keep their spelling."""
        return self.aliases.get(_key(name), str(name).strip())


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).casefold()


def _read(name: str) -> dict:
    path = SPECS_DIR / name
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping")
    return data


@lru_cache(maxsize=1)
def flow_settings() -> FlowSettings:
    raw = _read("_flow_analysis.yaml")
    values = {}
    for f in fields(FlowSettings):
        entry = raw.get(f.name)
        if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
            raise DataError(f"{SPECS_DIR / '_flow_analysis.yaml'}: '{f.name}' needs a value and a source")
        caster = {"str": str, "int": int, "float": float}[f.type if isinstance(f.type, str) else f.type.__name__]
        values[f.name] = caster(entry["value"])
    return FlowSettings(**values)


@lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    raw = _read("_panel.yaml")
    channels = {role: tuple(names) for role, names in (raw.get("channels") or {}).items()}
    aliases: dict[str, str] = {}
    for canonical, others in (raw.get("markers") or {}).items():
        for name in [canonical, *(others or [])]:
            aliases[_key(name)] = canonical
    return Vocabulary(channels=channels, aliases=aliases)
