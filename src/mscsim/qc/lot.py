"""The lot record: what a QC scientist knows about one MSC lot, validated with pydantic v2.

A lot is a YAML file. Paths to flow-cytometry files are relative to the lot file. Every problem is
reported as an :class:`~mscsim.errors.InputError` naming the lot file, the field, the value and what is
allowed, so a QC scientist can fix the record without reading code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import (ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .._schema import NumbersNotBooleans
from ..errors import InputError
from .fcs import Spillover, check_spillover

Source = Literal["bone_marrow", "adipose", "umbilical_cord"]
CryoState = Literal["fresh", "thawed", "recovered"]
MicrobialResult = Literal["negative", "positive", "pending"]
KaryotypeResult = Literal["normal", "abnormal", "pending"]
AdherenceResult = Literal["pass", "fail"]
DifferentiationResult = Literal["positive", "negative", "pending"]
ControlType = Literal["isotype", "fmo", "unstained"]
EndotoxinUnit = Literal["EU/mL", "EU/kg", "EU"]

#: The words each categorical release test may report, by test name (the spec's ``accept`` uses these).
RESULT_VOCABULARY: dict[str, tuple[str, ...]] = {
    "sterility": get_args(MicrobialResult),
    "mycoplasma": get_args(MicrobialResult),
    "karyotype": get_args(KaryotypeResult),
    "plastic_adherence": get_args(AdherenceResult),
    "osteogenic": get_args(DifferentiationResult),
    "adipogenic": get_args(DifferentiationResult),
    "chondrogenic": get_args(DifferentiationResult),
}


class _Record(NumbersNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _as_result(value: Any) -> Any:
    """Accept ``negative`` as shorthand for ``{result: negative}``."""
    return {"result": value} if isinstance(value, (str, bool)) else value


class Donor(_Record):
    """Who the cells came from; ``type`` is informative here (the scenario sets donor type for simulation)."""

    id: str
    type: Literal["autologous", "allogeneic"] | None = None
    age_years: float | None = Field(default=None, ge=0, le=120)
    sex: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"id": str(value)} if isinstance(value, (str, int)) else value


class Viability(_Record):
    """Viable fraction (0-1) and the method; written as 0.92, '92%' or {value: 92, unit: percent, method: ...}."""

    value: float = Field(ge=0.0, le=1.0)
    method: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, raw: Any) -> Any:
        if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
            raw = {"value": raw}
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        value, unit = raw.get("value"), raw.pop("unit", None)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return {**raw, **({"unit": unit} if unit is not None else {})}  # pydantic names the problem
        if isinstance(value, str):
            text = value.strip()
            if text.endswith("%"):
                value, unit = text[:-1].strip(), unit or "percent"
            try:
                value = float(value)
            except ValueError as exc:
                raise ValueError(f"viability {text!r} is not a number") from exc
        if unit not in (None, "fraction", "percent", "%"):
            raise ValueError(f"viability unit {unit!r}: use 'fraction' or 'percent'")
        if unit in ("percent", "%"):
            if not 0 <= value <= 100:
                raise ValueError(f"viability {value}% is outside 0-100%")
            value = value / 100.0
        elif isinstance(value, (int, float)) and value > 1:
            raise ValueError(f"viability {value} looks like a percent; write '{value}%' or "
                             f"{{value: {value}, unit: percent}} (a bare number is a fraction 0-1)")
        raw["value"] = value
        return raw


class _Result(_Record):
    """A categorical test result with its method; ``negative`` is shorthand for ``{result: negative}``."""

    method: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _as_result(value)


class MicrobialTest(_Result):
    """Sterility or mycoplasma: negative, positive or pending."""

    result: MicrobialResult


class Karyotype(_Result):
    result: KaryotypeResult


class PlasticAdherence(_Result):
    """Adherence to tissue-culture plastic; ``true``/``false`` are read as pass/fail."""

    result: AdherenceResult

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {"result": "pass" if value else "fail"}
        return _as_result(value)


class Differentiation(_Record):
    """Trilineage differentiation in vitro (for example Alizarin red, Oil red O, Alcian blue)."""

    osteogenic: DifferentiationResult | None = None
    adipogenic: DifferentiationResult | None = None
    chondrogenic: DifferentiationResult | None = None
    method: str | None = None


class Endotoxin(_Record):
    """Bacterial endotoxin, in EU/mL (with dose volume and patient weight to express it per kg), EU/kg or EU."""

    value: float = Field(ge=0)
    unit: EndotoxinUnit
    dose_volume_mL: float | None = Field(default=None, gt=0)
    patient_weight_kg: float | None = Field(default=None, gt=0)
    infusion_hours: float | None = Field(default=None, gt=0)
    method: str | None = None

    def total_eu(self) -> float | None:
        """Endotoxin in the whole dose, when the record allows it."""
        if self.unit == "EU":
            return self.value
        if self.unit == "EU/mL" and self.dose_volume_mL is not None:
            return self.value * self.dose_volume_mL
        if self.unit == "EU/kg" and self.patient_weight_kg is not None:
            return self.value * self.patient_weight_kg
        return None

    def convert(self, unit: str) -> float | None:
        """The value in ``unit``, or None when the record lacks the dose volume or weight to convert.

        EU/kg follows USP <85> (limit K/M, M the dose per kg given within one hour): a dose infused over
        more than an hour is divided by its hours; a bare EU/kg value is taken as already per kg and hour.
        """
        if unit == self.unit and unit != "EU/kg":
            return self.value
        if unit == "EU/kg":
            if self.unit == "EU/kg":
                return self.value
            total = self.total_eu()
            if total is None or self.patient_weight_kg is None:
                return None
            return total / self.patient_weight_kg / max(1.0, self.infusion_hours or 1.0)
        total = self.total_eu()
        if total is None:
            return None
        if unit == "EU":
            return total
        if unit == "EU/mL" and self.dose_volume_mL is not None:
            return total / self.dose_volume_mL
        return None


class Potency(_Record):
    """Potency assays where given: % inhibition of T-cell proliferation, IDO induction after IFN-gamma."""

    t_cell_suppression_pct: float | None = Field(default=None, ge=0, le=100, description="% inhibition, 0-100")
    ido_fold_induction: float | None = Field(default=None, gt=0)
    assay: str | None = None


def _resolve(path: Any, info: ValidationInfo, field: str) -> Path:
    """A path from the lot file, relative to it; it must exist."""
    base = Path((info.context or {}).get("base", "."))
    p = Path(str(path)).expanduser()
    p = p if p.is_absolute() else (base / p)
    if not p.is_file():
        raise ValueError(f"{field} file not found: {p}")
    return p.resolve()


class Tube(_Record):
    """One stained tube, its channel-to-marker panel and its matched control(s).

    ``control`` serves every channel; ``controls`` gives one per channel (FMO); ``thresholds`` sets a
    channel's positivity threshold explicitly (compensated linear units), for a channel without a control
    (an explicit threshold overrides a control).
    A channel may carry several markers (a negative cocktail in one colour): each gets the channel's %.
    """

    name: str | None = None
    file: Path
    panel: dict[str, str | list[str]] = Field(min_length=1)
    control: Path | None = None
    controls: dict[str, Path] = Field(default_factory=dict)
    control_type: ControlType = "isotype"
    viability_channel: str | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("file", "control", mode="before")
    @classmethod
    def _path(cls, value: Any, info: ValidationInfo) -> Any:
        return None if value is None else _resolve(value, info, info.field_name)

    @field_validator("controls", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        return {str(ch): _resolve(p, info, f"controls[{ch}]") for ch, p in value.items()}

    @model_validator(mode="after")
    def _every_channel_has_a_reference(self) -> "Tube":
        missing = [ch for ch in self.panel if self.control is None and ch not in self.controls
                   and ch not in self.thresholds]
        if missing:
            raise ValueError(f"channel(s) {missing} have no control: give 'control' (all channels), "
                             "'controls' (per channel) or an explicit 'thresholds' value")
        extra = [ch for ch in [*self.controls, *self.thresholds] if ch not in self.panel]
        if extra:
            raise ValueError(f"controls/thresholds name channel(s) {extra} that are not in the panel "
                             f"{sorted(self.panel)}")
        return self

    def markers_of(self, channel: str) -> list[str]:
        m = self.panel[channel]
        return [m] if isinstance(m, str) else list(m)


class Gates(_Record):
    """Explicit gates that replace the automatic ones (compensated linear units)."""

    fsc_min: float | None = None
    fsc_max: float | None = None
    ssc_min: float | None = None
    ssc_max: float | None = None
    singlet_min: float | None = None
    singlet_max: float | None = None
    viability_max: float | None = None


class ScatterChannels(_Record):
    """Scatter channel names, where they differ from the usual ones (data/specs/_panel.yaml)."""

    fsc_area: str | None = None
    fsc_height: str | None = None
    fsc_width: str | None = None
    ssc_area: str | None = None


class Compensation(_Record):
    """An explicit spillover matrix (rows: fluorochrome, columns: detector) for the given channels."""

    channels: list[str] = Field(min_length=1)
    matrix: list[list[float]]

    @model_validator(mode="after")
    def _square(self) -> "Compensation":
        n = len(self.channels)
        if len(self.matrix) != n or any(len(r) != n for r in self.matrix):
            raise ValueError(f"matrix must be {n} x {n} to match channels {self.channels}")
        try:
            check_spillover(Spillover(tuple(self.channels), np.array(self.matrix, dtype=float), "lot record"),
                            "matrix", "")
        except InputError as exc:
            raise ValueError(f"{exc.allowed} (got {exc.value})") from None
        return self


class Flow(_Record):
    """Flow cytometry: tubes, compensation (from the file, none, or a matrix) and optional explicit gates."""

    tubes: list[Tube] = Field(min_length=1)
    compensation: Literal["file", "none"] | Compensation = "file"
    gates: Gates = Gates()
    scatter: ScatterChannels = ScatterChannels()


class Lot(_Record):
    """One MSC lot: identity, culture history, release-test results and flow cytometry."""

    lot_id: str
    product: str | None = None
    source: Source
    donor: Donor | None = None
    passage: int | None = Field(default=None, ge=0)
    population_doublings: float | None = Field(default=None, ge=0)
    viability: Viability
    cryo_state: CryoState
    sterility: MicrobialTest | None = None
    mycoplasma: MicrobialTest | None = None
    endotoxin: Endotoxin | None = None
    karyotype: Karyotype | None = None
    plastic_adherence: PlasticAdherence | None = None
    differentiation: Differentiation | None = None
    potency: Potency | None = None
    flow: Flow | None = None
    spec: str | None = None
    notes: str | None = None
    file: Path | None = Field(default=None, exclude=True)

    @field_validator("lot_id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value

    def result_of(self, test: str) -> str | None:
        """The reported word of a categorical test (sterility, osteogenic, ...), or None if not reported."""
        if test in ("osteogenic", "adipogenic", "chondrogenic"):
            return getattr(self.differentiation, test) if self.differentiation else None
        record = getattr(self, test)
        return None if record is None else record.result


_HINTS = {
    "lot_id": "a text identifier of the lot",
    "source": "one of bone_marrow, adipose, umbilical_cord",
    "viability": "a fraction 0-1, a percent such as '92%', or {value, unit: fraction|percent, method}",
    "cryo_state": "one of fresh, thawed, recovered",
}


def _is_tag(part) -> bool:
    """A union member's tag in a pydantic error location (``literal['file','none']``, ``function-after[...]``)."""
    return isinstance(part, str) and ("[" in part or part[:1].isupper())


def _input_error(exc: ValidationError, file: Path) -> InputError:
    errors = exc.errors()
    # a union (compensation: 'file' | 'none' | a matrix) reports every member; a mapping meant the matrix
    meant = [e for e in errors if not (e["type"] == "literal_error" and isinstance(e.get("input"), dict))]
    errors = meant or errors
    errors = [{**e, "loc": tuple(p for p in e["loc"] if not _is_tag(p))} for e in errors]
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(lot)"
    top = str(first["loc"][0]) if first["loc"] else ""
    value = "(missing)" if first["type"] == "missing" else first.get("input")
    allowed = first["msg"].removeprefix("Value error, ")
    if top in _HINTS and first["type"] in ("missing", "literal_error"):
        allowed = f"required: {_HINTS[top]}" if first["type"] == "missing" else _HINTS[top]
    if len(errors) > 1:
        more = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                         for e in errors[1:4])
        allowed += f" (also: {more}{'; ...' if len(errors) > 4 else ''})"
    return InputError(where, value, allowed, file=str(file))


def lot_from_dict(data: Any, *, base: str | Path = ".", file: str | Path | None = None) -> Lot:
    """Validate a lot record given as a mapping; relative paths are resolved against ``base``."""
    label = Path(file) if file else Path("<lot>")
    if not isinstance(data, dict):
        raise InputError("(lot)", type(data).__name__, "a YAML mapping of lot fields", file=str(label))
    try:
        lot = Lot.model_validate(data, context={"base": str(base)})
    except ValidationError as exc:
        raise _input_error(exc, label) from None
    return lot.model_copy(update={"file": Path(file).resolve() if file else None})


def load_lot(path: str | Path) -> Lot:
    """Read and validate a lot record (YAML); paths inside it are relative to the lot file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("lot", str(path), "an existing lot YAML file")
    from ..io._validation import read_yaml

    return lot_from_dict(read_yaml(path), base=path.parent, file=path)


def lot_product_fields(lot: Lot) -> dict:
    """What the simulator's product takes from a lot: source, passage, doublings, viability (fraction),
    cryo state and lot id - exactly these keys."""
    return {
        "source": lot.source,
        "passage": lot.passage,
        "population_doublings": lot.population_doublings,
        "viability": float(lot.viability.value),
        "cryo_state": lot.cryo_state,
        "lot_id": lot.lot_id,
    }
