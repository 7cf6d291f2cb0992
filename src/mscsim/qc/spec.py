"""Release specifications as data: named presets in data/specs/*.yaml, or a user's own YAML file.

A spec is a list of criteria. Each criterion measures one thing (a marker's % positive, viability,
endotoxin, a categorical test ...) and states its limit (``op`` + ``limit`` + ``unit``) or the accepted
results (``accept``), with the citation keys the limit comes from. ``informative: true`` reports a
criterion without letting it decide release. ``extends: NAME`` starts from another spec; a criterion
with an ``id`` already there is merged field by field onto it (for example to make HLA-DR informative).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from .._schema import NumbersNotBooleans
from ..errors import DataError, InputError
from .lot import RESULT_VOCABULARY
from .settings import SPECS_DIR, vocabulary

#: Numeric measures and the units a limit on them may be written in.
NUMERIC_UNITS: dict[str, tuple[str, ...]] = {
    "marker": ("%",),
    "viability": ("%",),
    "endotoxin": ("EU/kg", "EU/mL", "EU"),
    "passage": ("passages",),
    "population_doublings": ("PD",),
    "t_cell_suppression": ("%",),
    "ido_fold_induction": ("fold",),
}
MEASURES = (*NUMERIC_UNITS, *RESULT_VOCABULARY)


class Criterion(NumbersNotBooleans):
    """One release criterion: what is measured, the limit or accepted results, and its source."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str
    label: str | None = None
    measure: Literal[MEASURES]  # type: ignore[valid-type]
    markers: tuple[str, ...] = ()
    op: Literal[">=", "<=", ">", "<"] | None = None
    limit: float | None = None
    unit: str | None = None
    accept: tuple[str, ...] = ()
    informative: bool = False
    source: tuple[str, ...] = Field(min_length=1)
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Criterion":
        if self.measure in NUMERIC_UNITS:
            if self.op is None or self.limit is None or self.unit is None:
                raise ValueError(f"criterion '{self.id}' ({self.measure}) needs op, limit and unit")
            if self.unit not in NUMERIC_UNITS[self.measure]:
                raise ValueError(f"criterion '{self.id}': unit {self.unit!r} not one of {NUMERIC_UNITS[self.measure]}")
            if self.accept:
                raise ValueError(f"criterion '{self.id}' is numeric: use op/limit, not accept")
        else:
            allowed = RESULT_VOCABULARY[self.measure]
            if not self.accept or any(a not in allowed for a in self.accept):
                raise ValueError(f"criterion '{self.id}' ({self.measure}) needs accept: a list from {list(allowed)}")
            if self.op is not None or self.limit is not None:
                raise ValueError(f"criterion '{self.id}' is categorical: use accept, not op/limit")
        if (self.measure == "marker") != bool(self.markers):
            raise ValueError(f"criterion '{self.id}': 'markers' goes with measure 'marker' (and only there)")
        return self

    @property
    def title(self) -> str:
        return self.label or self.id

    def limit_text(self) -> str:
        if self.measure in NUMERIC_UNITS:
            unit = "" if self.unit in ("passages", "PD", "fold") else f" {self.unit}"
            return f"{self.op} {self.limit:g}{unit}".replace(" %", "%")
        return " or ".join(self.accept)


class Spec(NumbersNotBooleans):
    """A named release specification (after ``extends`` is resolved)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str | None = None
    description: str | None = None
    criteria: tuple[Criterion, ...] = Field(min_length=1)
    file: str | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> "Spec":
        ids = [c.id for c in self.criteria]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"criterion ids {dupes} appear more than once")
        return self


def presets() -> list[str]:
    """Names of the bundled specs (data/specs/*.yaml, without the _settings files)."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml") if not p.name.startswith("_"))


def _read(path: Path) -> dict:
    from ..io._validation import read_yaml

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise InputError("(spec)", type(raw).__name__, "a mapping with name and criteria", file=str(path))
    return raw


def _locate(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    text = str(name_or_path)
    for p in ([relative_to / text] if relative_to else []) + [Path(text)]:
        if p.is_file():
            return p
    by_name = {n.casefold(): SPECS_DIR / f"{n}.yaml" for n in presets()}
    if text.casefold() in by_name:
        return by_name[text.casefold()]
    raise InputError("spec", text, f"a preset name ({', '.join(presets())}) or the path of a spec YAML file")


def _merged_criteria(raw: dict, path: Path, seen: tuple[Path, ...]) -> list[dict]:
    """The spec's criteria as dicts, with its ``extends`` chain applied."""
    criteria = raw.get("criteria") or []
    if not isinstance(criteria, list) or not all(isinstance(c, dict) and "id" in c for c in criteria):
        raise InputError("criteria", type(criteria).__name__, "a list of mappings, each with an id", file=str(path))
    parent = raw.get("extends")
    if not parent:
        return [dict(c) for c in criteria]
    ppath = _locate(parent, path.parent).resolve()
    if ppath in seen:
        raise InputError("extends", parent, "a spec that does not extend itself (directly or not)", file=str(path))
    base = _merged_criteria(_read(ppath), ppath, (*seen, ppath))
    index = {c["id"]: i for i, c in enumerate(base)}
    for c in criteria:
        if c["id"] in index:
            base[index[c["id"]]] = {**base[index[c["id"]]], **c}
        else:
            base.append(dict(c))
    return base


def load_spec(name_or_path: str | Path) -> Spec:
    """A bundled preset by name (case-insensitive, e.g. 'ISCT-2006') or a spec YAML file by path."""
    path = _locate(name_or_path).resolve()
    raw = _read(path)
    criteria = _merged_criteria(raw, path, (path,))
    vocab = vocabulary()
    for c in criteria:
        if isinstance(c.get("markers"), list):
            c["markers"] = [vocab.canonical_marker(m) for m in c["markers"]]
    body = {k: v for k, v in raw.items() if k not in ("criteria", "extends")}
    body.setdefault("name", path.stem)
    try:
        return Spec.model_validate({**body, "criteria": criteria, "file": str(path)})
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = list(e["loc"])
        if len(loc) > 1 and loc[0] == "criteria" and isinstance(loc[1], int) and loc[1] < len(criteria):
            loc[1] = f"[id={criteria[loc[1]]['id']}]"  # the merged list's index is not the file's: name the id
        where = ".".join(str(p) for p in loc).replace(".[", "[") or "(spec)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "finite_number":
            msg = "a finite number (not NaN or infinity)"
        raise InputError(where, e.get("input") if e["type"] != "missing" else "(missing)", msg,
                         file=str(path)) from None


def check_citations(spec: Spec) -> None:
    """Every source key of a bundled spec resolves in the bibliography (user specs may cite free text)."""
    from ..model.references import bibliography

    bib = bibliography()
    missing = sorted({k for c in spec.criteria for k in c.source if k not in bib})
    if missing:
        raise DataError(f"{spec.file}: citation keys not in data/references/*.yaml: {missing}")
