"""The model is data: states, processes (rate law + what moves where) and mechanisms, read from YAML.

A mechanism file declares the states it introduces, the parameter symbols it uses (with the internal
units the rate laws assume), optional derived expressions, and its processes. A :class:`Model` is a
composition of mechanisms, some of which may be switched off for a what-if.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import _yaml
from ..errors import DataError
from .parameters import DATA_DIR

StateKind = Literal["viable", "debris", "cleared", "signal"]
CELL_KINDS = ("viable", "debris", "cleared")  # these add up to the administered cells


@dataclass(frozen=True)
class State:
    """A model variable: name, units, compartment and kind (viable cells, debris, cleared, or a signal)."""

    name: str
    units: str
    compartment: str
    kind: StateKind
    description: str = ""
    scale: float = 1.0  # typical magnitude (sets the absolute tolerance of a signal state)
    initial: str | None = None  # parameter giving the state's value at the start (signals only)
    baseline: Literal["free", "held"] = "free"  # held: kept at its start value while the chronic state is found
    signed: bool = False  # a running total of a net rate, which may fall below zero (exempt from the positivity check)


@dataclass(frozen=True)
class Process:
    """A flux: a rate law (SymPy-parsable text) and the state it moves from and to (None = outside)."""

    name: str
    rate: str
    source: str | None
    target: str | None
    mechanism: str
    description: str = ""


@dataclass(frozen=True)
class Mechanism:
    """A group of processes that belong to one piece of biology; can be switched off as a whole."""

    name: str
    title: str
    biology: tuple[str, ...]
    enabled_by_default: bool
    states: tuple[State, ...]
    symbols: dict[str, str]  # parameter symbol -> internal units
    expressions: dict[str, str]
    processes: tuple[Process, ...]
    description: str = ""


class _StateRec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    units: str
    compartment: str
    kind: StateKind
    description: str = ""
    scale: float = Field(default=1.0, gt=0)
    initial: str | None = None
    baseline: Literal["free", "held"] = "free"
    signed: bool = False


class _ProcRec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str
    rate: str
    source: str | None = Field(default=None, alias="from")
    target: str | None = Field(default=None, alias="to")
    description: str = ""


class _MechRec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    biology: list[str] = []
    enabled_by_default: bool = True
    description: str = ""
    states: dict[str, _StateRec] = {}
    parameters: dict[str, str] = {}
    expressions: dict[str, str] = {}
    processes: list[_ProcRec] = []


def load_mechanism(path: str | Path) -> Mechanism:
    """Read and validate one mechanism file."""
    path = Path(path)
    try:
        rec = _MechRec.model_validate(_yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise DataError(f"{path}: invalid mechanism file: {exc}") from exc
    states = tuple(State(name=n, **s.model_dump()) for n, s in rec.states.items())
    procs = tuple(Process(name=p.name, rate=p.rate, source=p.source, target=p.target, mechanism=rec.name,
                          description=p.description) for p in rec.processes)
    return Mechanism(name=rec.name, title=rec.title, biology=tuple(rec.biology),
                     enabled_by_default=rec.enabled_by_default, states=states, symbols=dict(rec.parameters),
                     expressions=dict(rec.expressions), processes=procs, description=rec.description)


def bundled_mechanism(name: str) -> Mechanism:
    path = DATA_DIR / "mechanisms" / f"{name}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in (DATA_DIR / "mechanisms").glob("*.yaml"))
        raise DataError(f"no bundled mechanism '{name}'; available: {available}")
    return load_mechanism(path)


@dataclass(frozen=True)
class Model:
    """A composition of mechanisms with an on/off switch for each; states of switched-off mechanisms stay (at 0)."""

    mechanisms: tuple[Mechanism, ...]
    enabled: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def compose(cls, names: list[str], switches: dict[str, bool] | None = None) -> "Model":
        mechs = tuple(bundled_mechanism(n) for n in names)
        switches = switches or {}
        unknown = sorted(set(switches) - {m.name for m in mechs})
        if unknown:
            raise DataError(f"mechanism switches name mechanisms not in the model: {unknown}; "
                            f"the model has {[m.name for m in mechs]}")
        enabled = frozenset(m.name for m in mechs if switches.get(m.name, m.enabled_by_default))
        model = cls(mechs, enabled)
        model.check()
        return model

    def with_switches(self, switches: dict[str, bool]) -> "Model":
        enabled = set(self.enabled)
        for name, on in switches.items():
            (enabled.add if on else enabled.discard)(name)
        return replace(self, enabled=frozenset(enabled))

    @property
    def states(self) -> tuple[State, ...]:
        return tuple(s for m in self.mechanisms for s in m.states)

    @property
    def processes(self) -> tuple[Process, ...]:
        return tuple(p for m in self.mechanisms if m.name in self.enabled for p in m.processes)

    @property
    def expressions(self) -> dict[str, str]:
        """Derived quantities of the enabled mechanisms. An expression may take the name of a parameter symbol of
        another mechanism: it then replaces that parameter (e.g. the tissue's inflammation drives homing's
        ``S_target``), so a mechanism written for a fixed input can be coupled to a dynamic one."""
        out: dict[str, str] = {}
        for m in self.mechanisms:
            if m.name in self.enabled:
                for k, v in m.expressions.items():
                    if k in out and out[k] != v:
                        raise DataError(f"expression '{k}' is defined differently by two enabled mechanisms")
                    out[k] = v
        return out

    @property
    def symbols(self) -> dict[str, str]:
        """Parameter symbols (name -> internal units) of the enabled mechanisms, less those an expression defines."""
        out: dict[str, str] = {}
        for m in self.mechanisms:
            if m.name in self.enabled:
                out.update(m.symbols)
        for k in self.expressions:
            out.pop(k, None)
        return out

    def state(self, name: str) -> State:
        for s in self.states:
            if s.name == name:
                return s
        raise DataError(f"no state '{name}' in the model")

    def check(self) -> None:
        """Structural checks: unique names, processes between declared states, cells neither made nor lost."""
        names = [s.name for s in self.states]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"states declared twice: {dupes}")
        kinds = {s.name: s.kind for s in self.states}
        for s in self.states:
            if s.initial is not None and s.kind in CELL_KINDS:
                raise DataError(f"state '{s.name}': only signal states take an initial value (cells start at 0)")
        pnames = [p.name for m in self.mechanisms for p in m.processes]
        if len(set(pnames)) != len(pnames):
            raise DataError("process names must be unique across mechanisms")
        for m in self.mechanisms:
            for p in m.processes:
                for end in (p.source, p.target):
                    if end is not None and end not in kinds:
                        raise DataError(f"process '{p.name}' ({m.name}) names undeclared state '{end}'")
                ends = [kinds[e] in CELL_KINDS for e in (p.source, p.target) if e is not None]
                if any(ends) and (len(ends) != 2 or not all(ends)):
                    raise DataError(f"process '{p.name}' ({m.name}) creates or destroys cells: a flux of cells "
                                    f"must go from one cell state to another (use 'cleared' as the sink)")
