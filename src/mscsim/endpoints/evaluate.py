"""Evaluate a disease's endpoints on simulated states: results -> endpoints (one way, no model re-run).

Endpoints are SymPy expressions of the model's states and the endpoint file's coefficients, printed once as
NumPy code. ``step(x)`` is 1 where x >= 0 and 0 elsewhere (thresholds such as 'fistula closed'). The printed code
is kept in the model cache (:mod:`mscsim.model.cache`), so a process whose endpoints are cached never imports
SymPy (about half a second of a cached ``mscsim simulate``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from functools import lru_cache

import numpy as np
import xarray as xr

from .. import __version__
from ..errors import DataError
from .definitions import EndpointSet, Response, load_endpoints

RESPONSE_CODES = {"complete": 0, "partial": 1, "none": 2, "progression": 3}
_FORMAT = "mscsim-endpoints-1"  # change when the printed code changes
_MODULES = ("numpy", "functools", "math")  # what printed code may name (NumPyPrinter's imports)


def _step(x):
    return np.where(np.asarray(x) >= 0, 1.0, 0.0)


@lru_cache(maxsize=None)
def _compiled(disease: str, name: str, state_names: tuple[str, ...]):
    """(function, arguments) for one endpoint expression; the arguments are states and coefficients, so a
    coefficient can take a value per patient (a parameter set drawn from its uncertainty)."""
    from ..model.cache import cache_root, write_file_atomically

    eps = load_endpoints(disease)
    digest = hashlib.sha256(json.dumps([_FORMAT, __version__, eps.path.read_text(encoding="utf-8"), name,
                                        list(state_names)]).encode()).hexdigest()[:40]
    root = cache_root()
    path = None if root is None else root / "endpoints" / f"{digest}.json"
    entry = _read_printed(path)
    if entry is not None:
        try:
            return _function(entry), tuple(entry["args"])
        except (SyntaxError, ImportError, TypeError, ValueError):  # readable but not code: print it again
            pass
    entry = _printed(eps, name, state_names)
    if path is not None:
        write_file_atomically(path, json.dumps(entry))
    return _function(entry), tuple(entry["args"])


def _printed(eps: EndpointSet, name: str, state_names: tuple[str, ...]) -> dict:
    """Parse and check one endpoint expression with SymPy and print it as NumPy code: {"args", "code",
    "modules"}."""
    import sympy as sp
    from sympy.printing.numpy import NumPyPrinter

    ep = eps.spec.endpoints[name]
    local = {s: sp.Symbol(s) for s in (*state_names, *eps.coefficients.names())}
    local["step"] = sp.Function("step")
    try:
        expr = sp.sympify(ep.expression, locals=local)
    except (sp.SympifyError, SyntaxError, TypeError) as exc:
        raise DataError(f"{eps.path}: endpoint '{name}': cannot parse {ep.expression!r}: {exc}") from exc
    unknown = sorted(str(s) for s in expr.free_symbols if str(s) not in local)
    if unknown:
        raise DataError(f"{eps.path}: endpoint '{name}' uses {unknown}, which are neither model states "
                        f"nor coefficients of the file")
    printer = NumPyPrinter({"allow_unknown_functions": True, "fully_qualified_modules": True})
    code = printer.doprint(expr)
    modules = sorted(printer.module_imports)
    if set(modules) - set(_MODULES):
        raise DataError(f"{eps.path}: endpoint '{name}': {ep.expression!r} needs {modules}; endpoint expressions "
                        f"may use functions of {list(_MODULES)} and step()")
    return {"args": sorted(str(s) for s in expr.free_symbols), "code": code, "modules": modules}


def _read_printed(path) -> dict | None:
    """A cached printed endpoint, or None when there is none or it is unreadable (then it is printed afresh)."""
    if path is None:
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(entry.get("code"), str) and isinstance(entry.get("args"), list) \
                and set(entry.get("modules", [])) <= set(_MODULES):
            return entry
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _function(entry: dict):
    """The NumPy function of printed endpoint code (fresh or cached: the same path)."""
    namespace = {m: importlib.import_module(m) for m in entry["modules"]} | {"step": _step}
    return eval(f"lambda {', '.join(entry['args'])}: {entry['code']}", namespace)  # noqa: S307 - our own printout


def endpoint_values(disease: str, states: dict[str, np.ndarray], state_names: tuple[str, ...],
                    coefficients: dict[str, float | np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Each endpoint's values (same shape as the state arrays), clipped to its range. ``coefficients`` replaces
    the file's coefficient values by name: a number, or one value per patient (the state arrays' first axis)."""
    eps = load_endpoints(disease)
    shape = next(iter(states.values())).shape
    values = {c: eps.coefficients[c].value for c in eps.coefficients.names()}
    unknown = sorted(set(coefficients or {}) - set(values))
    if unknown:
        raise DataError(f"{eps.path}: no endpoint coefficient(s) {unknown}; known: {sorted(values)}")
    for c, v in (coefficients or {}).items():
        v = np.asarray(v, dtype=float)
        values[c] = v.reshape(v.shape + (1,) * (len(shape) - v.ndim)) if v.ndim else float(v)
    out = {}
    for name, ep in eps.spec.endpoints.items():
        fn, args = _compiled(disease, name, tuple(state_names))
        val = np.broadcast_to(np.asarray(fn(*[states[a] if a in states else values[a] for a in args]),
                                         dtype=float), shape).copy()
        if ep.range is not None:
            np.clip(val, ep.range[0], ep.range[1], out=val)
        out[name] = val
    return out


def stage_response(stage: np.ndarray, t_days: np.ndarray, day: float) -> np.ndarray:
    """Response category code per patient at ``day`` from a staged endpoint (patient x time), against the
    stage at time 0: complete (stage 0), partial (lower), none (same), progression (higher)."""
    i = int(np.argmin(np.abs(t_days - day)))
    base, now = np.rint(stage[:, 0]), np.rint(stage[:, i])
    return np.select([now == 0, now < base, now == base], [RESPONSE_CODES["complete"], RESPONSE_CODES["partial"],
                                                           RESPONSE_CODES["none"]], RESPONSE_CODES["progression"])


def best_stage_response(stage: np.ndarray, t_days: np.ndarray, days) -> np.ndarray:
    """The best response category code per patient over the visits ``days`` (complete < partial < none <
    progression), each judged against the stage at time 0 as ``stage_response``."""
    return np.stack([stage_response(stage, t_days, d) for d in days]).min(axis=0)


def reduction_response(values: np.ndarray, t_days: np.ndarray, day: float, response: Response) -> np.ndarray:
    """Response category code per patient at ``day`` for an endpoint that should fall (patient x time), against
    its value at time 0: complete (below ``complete_below``), partial (fallen by ``partial_fall`` of baseline and
    below ``partial_below``), progression (risen by more than ``progression_rise`` of baseline), none otherwise."""
    i = int(np.argmin(np.abs(t_days - day)))
    base, now = values[:, 0], values[:, i]
    partial = (now <= (1.0 - response.partial_fall) * base) & (now < response.partial_below)
    return np.select([now < response.complete_below, partial, now <= (1.0 + response.progression_rise) * base],
                     [RESPONSE_CODES["complete"], RESPONSE_CODES["partial"], RESPONSE_CODES["none"]],
                     RESPONSE_CODES["progression"])


def response_codes(response: Response, stage: np.ndarray, t_days: np.ndarray, visits_days) -> np.ndarray:
    """A response's category codes per patient: at its day, or the best over the visits up to its day."""
    if response.kind.endswith("reduction_response"):
        days = [d for d in visits_days if d <= response.day] or [response.day] \
            if response.kind == "best_reduction_response" else [response.day]
        return np.stack([reduction_response(stage, t_days, d, response) for d in days]).min(axis=0)
    if response.kind == "best_stage_response":
        days = [d for d in visits_days if d <= response.day] or [response.day]
        return best_stage_response(stage, t_days, days)
    return stage_response(stage, t_days, response.day)


def add_endpoints(ds: xr.Dataset, disease: str, state_names: tuple[str, ...],
                  coefficients: dict[str, float | np.ndarray] | None = None) -> xr.Dataset:
    """Add a disease's endpoints (and their untreated comparators and responses) to simulation results
    (``coefficients``: per-patient coefficient values, as in ``endpoint_values``)."""
    eps: EndpointSet = load_endpoints(disease)
    t_days = ds["time_days"].values
    variants = {"": {s: ds[s].values for s in state_names}}
    if all(f"{s}_untreated" in ds for s in state_names if ds[s].attrs.get("kind") == "signal"):
        variants["_untreated"] = {s: ds[f"{s}_untreated"].values if f"{s}_untreated" in ds else ds[s].values
                                  for s in state_names}
    flags = " ".join(f"{k}={v}" for k, v in RESPONSE_CODES.items())
    for suffix, states in variants.items():
        values = endpoint_values(disease, states, state_names, coefficients)
        for name, ep in eps.spec.endpoints.items():
            ds[f"{name}{suffix}"] = (("patient", "time"), values[name],
                                     {"units": ep.units, "long_name": ep.long_name + (" (untreated)" if suffix else ""),
                                      "kind": "endpoint", "expression": ep.expression, "source": ",".join(ep.source)})
        for name, resp in eps.spec.responses.items():
            codes = response_codes(resp, values[resp.of], t_days, eps.spec.visits_days)
            ds[f"{name}{suffix}"] = (("patient",), codes.astype(np.int8),
                                     {"long_name": resp.long_name + (" (untreated)" if suffix else ""),
                                      "kind": "response", "flag_values": list(RESPONSE_CODES.values()),
                                      "flag_meanings": flags, "day": resp.day, "source": ",".join(resp.source)})
    ds.attrs["endpoint_definitions"] = eps.path.name
    ds.attrs["endpoint_plot"] = ",".join(eps.spec.plot or eps.spec.endpoints)
    ds.attrs["endpoint_visits_days"] = ",".join(f"{d:g}" for d in eps.spec.visits_days)
    return ds
